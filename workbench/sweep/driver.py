"""The study driver: one worker's loop of "reserve a trial, run it, record it".

Independent of Hydra: the sweeper plugin supplies a ``launch(trial_number, overrides)``
function. Many drivers (threads, processes, machines) may share one study; there is no batch
barrier, a driver asks its next trial as soon as its last one finished.

Budget: ``n_trials`` counts every trial of the study that is COMPLETE, PRUNED, RUNNING,
WAITING, or FAIL (except failures that were retried, and surplus trials, see below), across
restarts and workers. "Count, then ask" runs under a lock (storage.budget_lock: flock for
journal/SQLite files, an advisory lock on PostgreSQL), so the total is exact. On other
databases there is no lock; a worker whose freshly asked trial lies beyond the budget marks
it FAIL with ``user_attrs["surplus"] = True`` and stops (an overshoot is corrected, not
prevented; surplus trials have no params and are not counted).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from workbench.sweep.baseline import fixed_params, is_baseline
from workbench.sweep.heartbeat import (HEARTBEAT_KEY, HeartbeatSettings, enqueue_retry, fail_unfinished,
                                      reap_stale_trials)
from workbench.sweep.space import SearchSpace
from workbench.sweep.storage import StorageSpec, budget_lock
from workbench.sweep.summary import ENV_STARTED, progress_line

log = logging.getLogger(__name__)

WORKER = f"{socket.gethostname()}:{os.getpid()}"


def _started() -> float:
    try:
        return float(os.environ[ENV_STARTED])
    except (KeyError, ValueError):
        return time.time()


def budget_used(trials: list[FrozenTrial]) -> int:
    """How many trials count against n_trials (see module doc)."""
    retried = {t.user_attrs.get("retry_of") for t in trials}
    used = 0
    for t in trials:
        if t.state == TrialState.FAIL and (t.number in retried or t.user_attrs.get("surplus")):
            continue
        used += 1
    return used


class StudyDriver:
    def __init__(
        self,
        study: optuna.Study,
        spec: StorageSpec,
        space: SearchSpace,
        n_trials: int,
        heartbeat: HeartbeatSettings = HeartbeatSettings(),
        wait_for_running: bool = True,
        say: Callable[[str], None] = log.info,
    ) -> None:
        self.study, self.spec, self.space = study, spec, space
        self.n_trials, self.heartbeat, self.wait_for_running = n_trials, heartbeat, wait_for_running
        self.say = say  # where the progress line goes
        # the progress line's elapsed time and ETA count from here (`workbench sweep`'s own start)
        self.started = _started()
        self._print_lock = threading.Lock()

    # -- reserving -------------------------------------------------------------------
    def reserve(self) -> tuple[optuna.Trial, dict[str, Any]] | None:
        """Ask the next trial within the budget and sample its parameters; None when the
        budget is spent. Retries (WAITING trials) are always taken first."""
        reap_stale_trials(self.study, self.heartbeat.grace_period, self.heartbeat.max_retry)
        with budget_lock(self.spec, self.study.study_name) as locked:
            if self.budget_spent():
                return None
            trial = self.study.ask()
            # beat at once: between ask and the job's own heartbeat the trial must not look dead
            self.study._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_KEY, time.time())
        trial.set_user_attr("worker", WORKER)  # which process ran it: for post-mortems
        if not locked and self._is_surplus(trial):
            return None
        try:
            only = fixed_params(self.study, trial) if is_baseline(trial) else None
            sampled = self.space.sample(trial, only)
        except Exception as exc:
            self.fail(trial.number, f"sampling failed: {type(exc).__name__}: {exc}")
            raise
        return trial, sampled

    def _is_surplus(self, trial: optuna.Trial) -> bool:
        before = [t for t in self.study.get_trials(deepcopy=False) if t.number < trial.number]
        if budget_used(before) < self.n_trials:
            return False
        trial.set_user_attr("surplus", True)
        trial.set_user_attr("fail_reason", "surplus: n_trials was reached by concurrent workers")
        self.study.tell(trial, state=TrialState.FAIL)
        return True

    # -- recording -------------------------------------------------------------------
    def trial(self, number: int) -> FrozenTrial:
        storage = self.study._storage
        study_id = storage.get_study_id_from_name(self.study.study_name)
        return storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, number))

    def fail(self, number: int, reason: str) -> None:
        """Fail a trial the job did not finish itself (it raised early or its process died)."""
        frozen = self.trial(number)
        if frozen.state == TrialState.RUNNING and fail_unfinished(self.study, frozen, reason):
            log.warning("trial %d failed: %s", number, reason)

    def settle(self, number: int, error: BaseException | None) -> FrozenTrial:
        """After a job returned: make sure its trial is finished, and say how it went."""
        frozen = self.trial(number)
        if frozen.state == TrialState.RUNNING:
            reason = f"{type(error).__name__}: {error}" if error else "the job ended without recording a result"
            self.fail(number, reason)
            if error is not None and not isinstance(error, Exception):  # interrupted: retry later
                enqueue_retry(self.study, self.trial(number), self.heartbeat.max_retry)
            frozen = self.trial(number)
        return frozen

    # -- the loop --------------------------------------------------------------------
    def others_running(self) -> bool:
        states = (TrialState.RUNNING, TrialState.WAITING)
        return bool(self.study.get_trials(deepcopy=False, states=states))

    def budget_spent(self) -> bool:
        """No trial is left to ask: the budget is used and no retry waits."""
        trials = self.study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        return not waiting and budget_used(trials) >= self.n_trials

    def budget_done(self) -> bool:
        """Every trial of the budget finished: nothing running or queued."""
        trials = self.study.get_trials(deepcopy=False)
        pending = any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
        return not pending and budget_used(trials) >= self.n_trials

    def run(self, launch: Callable[[int, dict[str, Any]], Any], stop: threading.Event | None = None) -> int:
        """Reserve and launch trials until the budget is spent. While other workers' trials
        still run, keep polling (a worker that dies leaves a trial that must be reaped and
        retried by someone). Returns how many trials this loop ran."""
        ran = 0
        while stop is None or not stop.is_set():
            got = self.reserve()
            if got is None:
                if self.wait_for_running and self.others_running():
                    # short: this worker's process (and the sweep command) ends soon after the last trial
                    time.sleep(min(self.heartbeat.interval, 1.0))
                    continue
                break
            trial, sampled = got
            error: BaseException | None = None
            try:
                launch(trial.number, sampled)
            except Exception as exc:  # the launcher failed; the study goes on
                error = exc
            except BaseException as exc:
                self.settle(trial.number, exc)
                raise
            self.settle(trial.number, error)
            ran += 1
            with self._print_lock:
                if not self.budget_done():  # the last status line is the end-of-sweep summary's, printed once
                    self.say(progress_line(self.study, self.n_trials, self.started))
        return ran
