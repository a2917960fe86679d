"""Population trials: one job trains up to P sweep trials side by side, as one agent's members.

``hydra.sweeper.population: P`` (``workbench sweep --population P``): instead of one job per
trial the sweeper launches jobs marked ``++trial.population_worker=<token>``. Such a job
reserves up to P trials under the driver's budget rules (the same lock, the same count),
trains them as members of one agent, reports each member's objective to its own trial, prunes
members one at a time and starts the next trial in a freed slot while the others train on,
until the budget is spent. So no member waits for the slowest, and a pruned trial's slot does
not stand idle.

Each trial ends up as a one-trial-per-process trial would: its params, its intermediate values,
its state and value, a W&B run ``<study>-<n>`` whose summary holds ``trial/state`` and
``trial/value``, its output dir ``<sweep dir>/<n>``. With ``objective.seeds`` a trial takes one
slot per seed (its seeds are members too) and reports their aggregate.

Only knobs that may differ between members can be searched (``PER_MEMBER``): the sweeper
refuses the rest before any trial. A job that dies leaves its trials RUNNING: the sweeper that
launched it fails them and enqueues their retries (``settle_population_job``), or, if the
sweeper died too, any worker's reaper does once their heartbeats stop.
"""
from __future__ import annotations

import copy
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import optuna
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import TrialState

from workbench.sweep.driver import StudyDriver
from workbench.sweep.errors import SweepConfigError
from workbench.sweep.factory import is_wilcoxon, make_sampler, seed_sampler_for_worker
from workbench.sweep.heartbeat import (Heartbeats, HeartbeatSettings, enqueue_retry, fail_unfinished,
                                      reap_stale_trials)
from workbench.sweep.objective import ObjectiveSettings, ObjectiveTracker, aggregate, is_bad
from workbench.sweep.resume import (HISTORY, claim_resume, kept_metrics, open_history, past_iterations,
                                    reported_before, tracked_keys, write_stamp)
from workbench.sweep.space import SearchSpace, parse_search_space
from workbench.sweep.storage import load_study
from workbench.sweep.summary import progress_line
from workbench.sweep.trial import (ObjectiveNotFinite, SeenMetrics, TrialOutcome, fail_trial, link_run,
                                   link_seed_run, objective_value, require_logged)

log = logging.getLogger(__name__)

TOKEN_ATTR = "population_worker"  # which population job reserved the trial
SEARCH_SPACE_ATTR, CONDITIONS_ATTR = "search_space", "conditions"  # study attrs the sweeper writes


@dataclass
class _Entry:
    """One trial in its slots (one per seed)."""

    trial: optuna.Trial
    slots: list[int]
    seeds: list[int] | None  # None: the trial's config seed, one slot
    settings: ObjectiveSettings
    resume: Path | None = None  # the checkpoint a retried trial resumes from (one slot only)
    history: Any = None  # its objective_history.jsonl, open once the first iteration came
    trackers: list[ObjectiveTracker] = field(default_factory=list)
    seen: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.trackers = [ObjectiveTracker(self.settings) for _ in self.slots]
        self.seen = [SeenMetrics() for _ in self.slots]


class PopulationTrials:
    """A job's slots and the trials in them. ``make_run(cfgs, dirs, group, labels, on_start)``
    builds the batched training (``workbench.train_population.PopulationRun``, or the fake
    app's stand-in) with ``insert``, ``step``, ``close`` and ``open_slots``."""

    def __init__(self, cfg: DictConfig, output_dir: Path, make_run: Callable[..., Any],
                 sweeper: Mapping[str, Any], study: optuna.Study, driver: StudyDriver,
                 settings: ObjectiveSettings) -> None:
        self.cfg, self.make_run, self.study, self.driver = cfg, make_run, study, driver
        self.settings, self.wilcoxon = settings, is_wilcoxon(study.pruner)
        self.token = str(cfg.trial.population_worker)
        self.size = int(cfg.trial.population_size)
        self.trial_dir = Path(output_dir).parent  # members write <sweep dir>/<trial number>
        self.seeds = list(settings.seeds or []) or None
        self.per_trial = len(self.seeds) if self.seeds else 1
        interval = float((sweeper.get("heartbeat") or {}).get("interval", 10.0))
        self.heartbeats = Heartbeats(study._storage, interval)
        self.entries: dict[int, _Entry] = {}  # by slot: every slot of a trial maps to its entry
        self.outcomes: list[Any] = []
        self.run: Any = None
        self.keys = tracked_keys(settings)  # what a history line keeps

    # -- trials in and out -------------------------------------------------------------
    def _reserve(self) -> tuple[optuna.Trial, dict] | None:
        got = self.driver.reserve()
        if got is not None:
            trial, _ = got
            trial.set_user_attr(TOKEN_ATTR, self.token)
            self.heartbeats.add(trial._trial_id)
        return got

    def _member_cfgs(self, trial: optuna.Trial, sampled: Mapping[str, Any]) -> list[DictConfig]:
        """The trial's config per slot: the job's config with the trial's values (and seed)."""
        params = self.study._storage.get_trial(trial._trial_id).params
        name = f"{self.cfg.trial.study_name}-{trial.number}"
        out = []
        for seed in self.seeds or [None]:
            member = copy.deepcopy(self.cfg)
            with open_dict(member):
                member.trial.number = trial.number
                member.trial.params = dict(params)
                member.logger.name = name if seed is None else f"{name}-seed{seed}"
                if seed is not None:
                    member.seed = seed
            for key, value in sampled.items():
                OmegaConf.update(member, key, value, merge=False)
            out.append(member)
        return out

    def _dirs(self, trial: optuna.Trial) -> list[Path]:
        base = self.trial_dir / str(trial.number)
        return [base] if not self.seeds else [base / f"seed_{s}" for s in self.seeds]

    def _labels(self, trial: optuna.Trial) -> list[str]:
        return [f"trial {trial.number}" + (f" seed {s}" if s is not None else "") for s in self.seeds or [None]]

    def _enter(self, trial: optuna.Trial, slots: list[int]) -> _Entry:
        entry = _Entry(trial, slots, self.seeds, self.settings, self._resume(trial))
        for slot in slots:
            self.entries[slot] = entry
        return entry

    def _resume(self, trial: optuna.Trial) -> Path | None:
        """Stamp the trial's dir (its checkpoints become resumable) and find what it resumes
        from: a retried trial, its predecessor's last.ckpt. Seeds side by side start fresh."""
        if self.seeds:
            return None
        frozen = self.study._storage.get_trial(trial._trial_id)
        directory = self._dirs(trial)[0]
        found = claim_resume(self.study, frozen, directory, trial)
        write_stamp(directory, self.study.study_name, frozen)
        return None if found is None else found.checkpoint

    def start(self) -> bool:
        """Reserve the first trials and build the batched training; False if the budget is spent."""
        reserved = []
        while len(reserved) < self.size:
            got = self._reserve()
            if got is None:
                break
            reserved.append(got)
        if not reserved:
            return False
        cfgs, dirs, labels = [], [], []
        for trial, sampled in reserved:
            cfgs += self._member_cfgs(trial, sampled)
            dirs += self._dirs(trial)
            labels += self._labels(trial)
        checkpoints = []
        for k, (trial, _) in enumerate(reserved):
            entry = self._enter(trial, list(range(k * self.per_trial, (k + 1) * self.per_trial)))
            checkpoints += [entry.resume] * self.per_trial
        group = str(OmegaConf.select(self.cfg, "logger.group", default=None) or self.cfg.trial.study_name)
        self.run = self.make_run(cfgs, dirs, group, labels, self._on_start, checkpoints=checkpoints)
        return True

    def refill(self, slots: list[int]) -> None:
        got = self._reserve()
        if got is None:
            return
        trial, sampled = got
        cfgs = self._member_cfgs(trial, sampled)
        entry = self._enter(trial, slots)
        for slot, member_cfg, directory, label in zip(slots, cfgs, self._dirs(trial), self._labels(trial)):
            self.run.insert(slot, member_cfg, directory, label, checkpoint=entry.resume)

    def _on_start(self, slot: int, info: Mapping[str, Any]) -> None:
        entry = self.entries[slot]
        if self.seeds:
            link_seed_run(entry.trial, self.seeds, entry.slots.index(slot), info)
        else:
            link_run(entry.trial, info)

    # -- the loop ----------------------------------------------------------------------
    def _running(self) -> list[_Entry]:
        """Each running trial once (a trial with seeds holds several slots)."""
        return list({id(e): e for e in self.entries.values()}.values())

    def train(self) -> list[Any]:
        """Train until every slot is empty and the budget is spent; the trials' outcomes."""
        with self.heartbeats:
            try:
                if not self.start():
                    return []
                while self.entries:
                    by_slot = {slot: (it, metrics, done) for slot, it, metrics, done in self.run.step()}
                    for entry in self._running():
                        verdict = self._observe(entry, by_slot)
                        if verdict is not None:
                            self._end(entry, *verdict)
                            self.refill(entry.slots)
            except BaseException as exc:
                self._abort(exc)
                raise
        return self.outcomes

    def _observe(self, entry: _Entry, by_slot: Mapping[int, tuple]) -> tuple[str, str | None] | None:
        """Feed the trial its members' metrics of this iteration; its verdict if it ends here."""
        if entry.history is None and not self.seeds:
            self._open_history(entry, by_slot[entry.slots[0]][0])
        iteration, finished = 0, True
        for k, slot in enumerate(entry.slots):
            iteration, metrics, done = by_slot[slot]
            if entry.history is not None:
                entry.history.write(json.dumps({"it": int(iteration), "m": kept_metrics(metrics, self.keys)}) + "\n")
            finished = finished and done
            entry.seen[k].update(metrics)
            entry.trackers[k].update(metrics)
            value = entry.trackers[k].value
            if is_bad(value):
                where = "" if not entry.seeds else f"seed {entry.seeds[k]}, "
                return "FAIL", f"objective {entry.trackers[k].metric_used} is {value} ({where}iteration {iteration})"
        values = [t.value for t in entry.trackers]
        if not (self.wilcoxon or iteration % self.settings.report_every or None in values):
            value = aggregate(values, self.settings.aggregate)
            entry.trial.report(value, step=iteration)
            # the final iteration is paid for already: pruning it would only throw its result away
            if not finished and entry.trial.should_prune():
                return "PRUNED", f"iteration {iteration}, objective {value:.4g}"
        return ("COMPLETE", None) if finished else None

    def _open_history(self, entry: _Entry, first: int) -> None:
        """Keep the trial's objective history beside its checkpoints; a resumed trial first
        replays the iterations its checkpoint holds (into its objective and its reports)."""
        past = past_iterations(entry.resume, first) if entry.resume is not None else []
        for iteration, metrics in past:
            entry.seen[0].update(metrics)
            entry.trackers[0].update(metrics)
            value = entry.trackers[0].value
            if value is not None and not self.wilcoxon and not iteration % self.settings.report_every \
                    and not reported_before(entry.trial, iteration):
                entry.trial.report(value, step=iteration)
        entry.history = open_history(self._dirs(entry.trial)[0] / HISTORY, past)

    def _end(self, entry: _Entry, state: str, reason: str | None) -> None:
        """Close the trial's members (W&B summary and exit code) and record its outcome."""
        trial, values = entry.trial, []
        if state == "COMPLETE":
            try:
                for tracker, seen in zip(entry.trackers, entry.seen):
                    require_logged(self.settings.metric, seen)
                    values.append(objective_value(tracker, seen.final_eval)[0])
            except ObjectiveNotFinite as exc:
                state, reason = "FAIL", str(exc)
        frames = 0
        for k, slot in enumerate(entry.slots):
            # as run_verdict decides for a one-trial job
            value = None if state == "FAIL" else entry.trackers[k].value if state == "PRUNED" else values[k]
            summary = {"trial/state": state, "trial/value": value, "trial/number": trial.number}
            if entry.seeds:
                summary["trial/seed"] = entry.seeds[k]
            if self.run is not None:  # None: the training could not even be built
                result = self.run.close(slot, summary, 1 if state == "FAIL" else 0)
                frames += int(getattr(result, "frames", 0) or 0)
            del self.entries[slot]
        self.heartbeats.discard(trial._trial_id)
        if entry.history is not None:
            entry.history.close()
        try:
            trial.set_user_attr("frames", frames)
            if state == "FAIL":
                self.outcomes.append(fail_trial(self.study, trial, reason or "failed"))
                return
            trial.set_user_attr("objective_metric", entry.trackers[0].metric_used or "final_eval_return")
            if state == "PRUNED":
                self.study.tell(trial, state=TrialState.PRUNED)
                log.info("trial %d pruned: %s", trial.number, reason)
                self.outcomes.append(TrialOutcome(trial.number, "PRUNED", None))
                return
            if entry.seeds:
                trial.set_user_attr("seed_values", {str(s): v for s, v in zip(entry.seeds, values)})
                if self.wilcoxon:
                    for index, value in enumerate(values):
                        trial.report(value, step=index)
            value = aggregate(values, self.settings.aggregate)
            self.study.tell(trial, value)
            log.info("trial %d finished: %s", trial.number, value)
            self.outcomes.append(TrialOutcome(trial.number, "COMPLETE", value))
        except optuna.exceptions.UpdateFinishedTrialError:  # reaped meanwhile: its first verdict stands
            log.warning("trial %d was finished elsewhere (reaped?); %s not recorded", trial.number, state)

    def _abort(self, exc: BaseException) -> None:
        """The batched training stopped every member: each running trial fails (an
        interruption, not a bug, is retried later, as a one-trial job's would be)."""
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        if self.run is not None:
            try:
                self.run.checkpoint()
            except Exception as err:  # the run is broken already; the verdicts matter more
                log.warning("population job: last.ckpt not written: %s", err)
        for entry in self._running():
            trial = entry.trial
            self._end(entry, "FAIL", reason)
            if not isinstance(exc, Exception):
                frozen = self.study._storage.get_trial(trial._trial_id)
                enqueue_retry(self.study, frozen, self.driver.heartbeat.max_retry)


def run_population_trials(cfg: DictConfig, output_dir: Path, make_run: Callable[..., Any],
                          sweeper: Mapping[str, Any], settings: ObjectiveSettings, spec: Any,
                          pruner: optuna.pruners.BasePruner, worker: int | None) -> list[Any]:
    """A population job's whole life (see the module doc): the trials it ran, as TrialOutcomes."""
    sampler_node, _ = seed_sampler_for_worker(sweeper.get("sampler"), worker)
    study = load_study(spec, str(cfg.trial.study_name), sampler=make_sampler(sampler_node), pruner=pruner)
    attrs = study.user_attrs
    space = parse_search_space(attrs[SEARCH_SPACE_ATTR], attrs.get(CONDITIONS_ATTR))
    heartbeat = HeartbeatSettings(**(sweeper.get("heartbeat") or {}))
    driver = StudyDriver(study, spec, space, int(attrs["n_trials"]), heartbeat)
    return PopulationTrials(cfg, output_dir, make_run, sweeper, study, driver, settings).train()


def settle_population_job(study: optuna.Study, token: str, error: BaseException | None,
                          max_retry: int) -> int:
    """After a population job returned: fail the trials it left RUNNING (its process died)
    and enqueue their retries. Returns how many trials the job reserved in all."""
    reserved = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get(TOKEN_ATTR) != token:
            continue
        reserved += 1
        if trial.state != TrialState.RUNNING:
            continue
        reason = (f"{type(error).__name__}: {error}" if error else "its population job ended without recording it")
        if not fail_unfinished(study, trial, reason):
            continue
        log.warning("trial %d failed: %s", trial.number, reason)
        enqueue_retry(study, study._storage.get_trial(trial._trial_id), max_retry)
    return reserved


# -- the sweeper's side ----------------------------------------------------------------------

def structural_names(names) -> list[str]:
    """Searched params one population cannot vary per member (they shape the computation)."""
    from workbench.agents.ppo.population import PER_MEMBER

    return sorted(n for n in set(names) if not (n.startswith("agent.") and n[len("agent."):] in PER_MEMBER))


def check_population_sweep(population: int, space: SearchSpace, objectives: Any) -> None:
    """Refuse, before any trial, a population sweep that could not run as one."""
    if population < 1:
        raise SweepConfigError(f"hydra.sweeper.population must be >= 1, got {population}")
    if population == 1:
        return
    if objectives.multi:
        raise SweepConfigError(f"hydra.sweeper.population={population} needs a single objective: in a "
                               "population the members share the wall time and the frames rate")
    structural = structural_names(p.name for p in space.searched)
    if structural:
        raise SweepConfigError(
            f"hydra.sweeper.population={population}: {', '.join(structural)} cannot differ between the "
            "members of one population (it shapes the batched computation); search only per-member "
            "knobs (agent.e_clip, agent.tau, agent.gamma, agent.model.actor.actor_logstd, "
            "agent.advantage_normalization.*, the learning rates, ...) or set hydra.sweeper.population=1")


def run_population_jobs(driver: StudyDriver, launch: Callable[[str, int], Any],
                        stop: threading.Event | None = None) -> int:
    """One sweeper slot in population mode: launch population jobs (``launch(token, index)``)
    until the study's budget is spent; after each, settle what it left. Returns the jobs run."""
    jobs = 0
    while stop is None or not stop.is_set():
        reap_stale_trials(driver.study, driver.heartbeat.grace_period, driver.heartbeat.max_retry)
        if driver.budget_spent():
            if driver.wait_for_running and driver.others_running():
                time.sleep(min(driver.heartbeat.interval, 1.0))
                continue
            break
        token = uuid.uuid4().hex[:12]
        error: Exception | None = None
        try:
            launch(token, jobs)
        except Exception as exc:  # the job (or its launcher) failed; the study goes on
            error = exc
        except BaseException as exc:
            settle_population_job(driver.study, token, exc, driver.heartbeat.max_retry)
            raise
        jobs += 1
        if settle_population_job(driver.study, token, error, driver.heartbeat.max_retry) == 0 and error:
            raise error  # it failed before reserving a trial: another job would fail the same way
        with driver._print_lock:
            if not driver.budget_done():  # the last status line is the end-of-sweep summary's
                driver.say(progress_line(driver.study, driver.n_trials, driver.started))
    return jobs
