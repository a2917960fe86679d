"""Trial heartbeats that work on every storage, and the reaper for trials whose worker died.

Why not Optuna's own heartbeat: in Optuna 5 only RDBStorage implements it (JournalStorage does
not), and it is only driven by ``Study.optimize`` (``ask`` warns that it is unsupported). So a
running trial's owner writes the wall-clock time into the trial system attribute
``workbench:heartbeat`` every ``interval`` seconds; any worker that finds a RUNNING trial whose
last beat is older than ``grace_period`` marks it FAIL with a reason and enqueues a retry with
the same parameters (at most ``max_retry`` times per original trial). Clocks of machines that
share a study must agree to well within the grace period (NTP).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from workbench.tracking.secrets import scrub_text

log = logging.getLogger(__name__)

HEARTBEAT_KEY = "workbench:heartbeat"


@dataclass
class HeartbeatSettings:
    """``hydra.sweeper.heartbeat`` (the sweeper's config schema uses this class itself)."""

    interval: float = 10.0  # seconds between beats of a running trial
    grace_period: float = 60.0  # a RUNNING trial silent for this long is failed and retried
    max_retry: int = 1  # retries per original trial (killed or interrupted runs)


def beat(storage: BaseStorage, trial_id: int) -> bool:
    """Record one heartbeat; False once the trial has finished."""
    try:
        storage.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())
        return True
    except UpdateFinishedTrialError:
        return False


class Heartbeats:
    """Beats for a changing set of running trials from one daemon thread (context manager):
    a population worker's members come and go; a single trial is a set of one."""

    def __init__(self, storage: BaseStorage, interval: float, trial_ids: tuple[int, ...] = ()) -> None:
        self._storage, self._interval = storage, interval
        self._ids = set(trial_ids)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def add(self, trial_id: int) -> None:
        beat(self._storage, trial_id)  # at once: between reservation and the next beat it must not look dead
        with self._lock:
            self._ids.add(trial_id)

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self._ids.discard(trial_id)

    def _beat_all(self) -> None:
        with self._lock:
            ids = sorted(self._ids)
        for trial_id in ids:
            try:
                if not beat(self._storage, trial_id):
                    self.discard(trial_id)
            except Exception as exc:  # a storage hiccup must not kill the trial
                log.warning("heartbeat for trial id %s failed: %s", trial_id, exc)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._beat_all()

    def __enter__(self) -> "Heartbeats":
        self._beat_all()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Heartbeat(Heartbeats):
    """Beats for one trial while it runs."""

    def __init__(self, storage: BaseStorage, trial_id: int, interval: float) -> None:
        super().__init__(storage, interval, (trial_id,))


def last_beat(trial: optuna.trial.FrozenTrial) -> float:
    stamp = trial.system_attrs.get(HEARTBEAT_KEY)
    if stamp is not None:
        return float(stamp)
    return trial.datetime_start.timestamp() if trial.datetime_start else time.time()


def reap_stale_trials(study: optuna.Study, grace_period: float, max_retry: int) -> list[int]:
    """Fail RUNNING trials without a heartbeat for ``grace_period`` s; enqueue their retries.

    Several workers may reap at once: the FAIL transition succeeds for exactly one of them
    (the storage refuses to finish a finished trial), and only that one enqueues the retry.
    Returns the numbers of the trials this call failed.
    """
    now = time.time()
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        silent = now - last_beat(trial)
        if silent <= grace_period:
            continue
        reason = f"heartbeat lost: no sign of life for {silent:.0f}s (worker killed or lost)"
        if not fail_unfinished(study, trial, reason):
            continue  # it finished, or another worker reaped it first
        reaped.append(trial.number)
        log.warning("trial %d: %s", trial.number, reason)
        enqueue_retry(study, trial, max_retry)
    return reaped


def fail_unfinished(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> bool:
    """Fail a trial another process left RUNNING, its reason (secrets masked) in ``fail_reason``.
    False if it was finished meanwhile: the storage refuses to finish a finished trial, so of
    several processes failing it at once exactly one succeeds."""
    storage = study._storage  # the public Study API has no way to finish another process's trial
    try:
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", scrub_text(reason)[:2000])
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False
    return True


def enqueue_retry(study: optuna.Study, failed: optuna.trial.FrozenTrial, max_retry: int) -> bool:
    root = failed.user_attrs.get("retry_root", failed.number)
    count = int(failed.user_attrs.get("retry_count", 0)) + 1
    if count > max_retry:
        log.warning("trial %d: not retried (max_retry=%d reached)", failed.number, max_retry)
        return False
    attrs = {"retry_of": failed.number, "retry_root": root, "retry_count": count}
    for kept in ("baseline", "baseline_outside"):  # a retried baseline is still the baseline
        if kept in failed.user_attrs:
            attrs[kept] = failed.user_attrs[kept]
    study.enqueue_trial(dict(failed.params), user_attrs=attrs)
    log.info("trial %d: retry %d/%d enqueued", failed.number, count, max_retry)
    return True
