"""One sweep trial inside a training job: reattach to the trial, report, prune, finish it.

The sweeper asks a trial and launches a job with ``++trial.study_name``, ``++trial.number``
and ``++trial.storage`` (redacted) overrides; ``workbench train`` sees ``cfg.trial`` and calls
``run_trial``. The job itself records the outcome in the storage, so a job that outlives its
sweeper (a SLURM job whose submitting process died) still finishes its trial.
"""
from __future__ import annotations

import copy
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import optuna
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.trial import TrialState

from workbench.metric_names import EVAL, INFO
from workbench.sweep.heartbeat import Heartbeat, enqueue_retry
from workbench.sweep.factory import is_wilcoxon
from workbench.sweep.multiobjective import (FINAL_EVAL_KEY, CostTracker, Objectives, missing_metric,
                                            parse_objectives, settings_for)
from workbench.sweep.objective import ObjectiveSettings, ObjectiveTracker, aggregate, is_bad
from workbench.sweep.resume import ResumedTraining, prepare_resume, reported_before, tracked_keys
from workbench.sweep.slurm import JobRequeued, RequeueGuard
from workbench.sweep.storage import ENV_STORAGE, StorageSpec, load_study, redact
from workbench.tracking.secrets import scrub_text

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL = 10.0


@dataclass(frozen=True)
class TrialOutcome:
    """What the job returns to the sweeper (picklable, for out-of-process launchers)."""

    number: int
    state: str  # "COMPLETE", "PRUNED" or "FAIL"
    value: float | list[float] | None  # a list in a multi-objective study
    fail_reason: str | None = None


class ObjectiveNotFinite(RuntimeError):
    pass


def run_trial(
    cfg: DictConfig,
    output_dir: Path,
    run_training: Callable[..., Any],
    sweeper: Mapping[str, Any] | None = None,
    run_population: Callable[..., Any] | None = None,
    population_run: Callable[..., Any] | None = None,
) -> TrialOutcome | list[TrialOutcome]:
    """Run the training for trial ``cfg.trial.number`` and record its outcome.

    ``sweeper`` holds the ``hydra.sweeper`` settings (pruner, objective, heartbeat); by default
    they are read from the running Hydra job's config. ``run_population(cfg, output_dir,
    MemberCallbacks)`` trains ``objective.seeds`` side by side (default: the workbench's);
    ``population_run`` builds a population job's batched training (``hydra.sweeper.population``;
    default: ``workbench.train_population.PopulationRun``).
    """
    sweeper = _plain(sweeper if sweeper is not None else _hydra_sweeper_node())
    objectives = parse_objectives(sweeper.get("direction", "maximize"), sweeper.get("objective"))
    settings = settings_for(ObjectiveSettings.from_config(sweeper.get("objective")), objectives)
    if cfg.trial.get("reevaluate"):  # not a trial: a re-evaluation population of the study's configs
        return reevaluation_values(cfg, Path(output_dir), run_population or _default_population_runner(), settings,
                                   objectives)
    if cfg.trial.get("population_worker"):  # not one trial: a job that trains several side by side
        from workbench.sweep.population_trials import run_population_trials

        return run_population_trials(cfg, Path(output_dir), population_run or _default_population_run(), sweeper,
                                     settings, _storage_for_job(cfg), _pruner(sweeper), _worker_index())
    study_name = str(cfg.trial.study_name)
    number = int(cfg.trial.number)
    spec = _storage_for_job(cfg)
    study = load_study(
        spec, study_name, sampler=optuna.samplers.RandomSampler(), pruner=_pruner(sweeper)
    )
    storage = study._storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study_name), number
    )
    frozen = storage.get_trial(trial_id)
    if frozen.state != TrialState.RUNNING:
        raise RuntimeError(f"trial {number} of study {study_name!r} is {frozen.state.name}, not RUNNING")
    trial = optuna.Trial(study, trial_id)
    with open_dict(cfg):  # the run's config (logged to W&B) carries the sampled params too
        cfg.trial.params = dict(frozen.params)
    interval = float(_plain(sweeper.get("heartbeat")).get("interval", DEFAULT_HEARTBEAT_INTERVAL))
    max_retry = int(_plain(sweeper.get("heartbeat")).get("max_retry", 1))

    with Heartbeat(storage, trial_id, interval), RequeueGuard(enabled=not settings.seeds) as guard:
        try:
            if settings.seeds:
                runner = run_population or _default_population_runner()
                value = _train_seeds(cfg, Path(output_dir), runner, trial, settings, is_wilcoxon(study.pruner))
            else:  # resumes from its own last.ckpt (requeued) or its retry_of's (workbench.sweep.resume)
                resume = prepare_resume(cfg, study, frozen, Path(output_dir), trial)
                training = ResumedTraining(run_training, tracked_keys(settings, objectives), resume, guard)
                value = _train(cfg, Path(output_dir), training, trial, settings, objectives)
        except JobRequeued:  # last.ckpt is written: submitit requeues the job and exits, the trial stays RUNNING
            refused = guard.requeue(trial)
            fail_trial(study, trial, f"interrupted and not requeued: {type(refused).__name__}: {refused}")
            enqueue_retry(study, storage.get_trial(trial_id), max_retry)
            raise refused from None
        except optuna.TrialPruned as exc:
            study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d pruned: %s", number, exc)
            return TrialOutcome(number, "PRUNED", storage.get_trial(trial_id).value)
        except ObjectiveNotFinite as exc:
            return fail_trial(study, trial, str(exc))
        except BaseException as exc:  # an error, Ctrl-C or a SLURM preemption signal
            reason = f"{type(exc).__name__}: {exc}"[:2000]
            fail_trial(study, trial, reason)
            if not isinstance(exc, Exception):  # interrupted, not broken: run it again later
                enqueue_retry(study, storage.get_trial(trial_id), max_retry)
            raise
    study.tell(trial, value)
    log.info("trial %d finished: %s", number, value)
    return TrialOutcome(number, "COMPLETE", value)


def _train(cfg, output_dir, run_training, trial: optuna.Trial, settings: ObjectiveSettings,
           objectives: Objectives | None = None) -> float | list[float]:
    if objectives is not None and objectives.multi:
        return _train_multi(cfg, output_dir, run_training, trial, settings, objectives)
    tracker = ObjectiveTracker(settings)
    seen = SeenMetrics()
    last = final_iteration(cfg)

    def on_iteration(iteration: int, metrics: Mapping[str, float]) -> None:
        seen.update(metrics)
        tracker.update(metrics)
        value = tracker.value
        if is_bad(value):
            raise ObjectiveNotFinite(f"objective {tracker.metric_used} is {value} at iteration {iteration}")
        if value is not None and iteration % settings.report_every == 0:
            _report_or_prune(trial, value, iteration, last)

    result = run_training(cfg, output_dir, _callbacks(trial, on_iteration, _on_end(trial, tracker, seen)))
    require_logged(settings.metric, seen)
    return _final_value(trial, tracker, result)


def _train_multi(cfg, output_dir, run_training, trial, settings, objectives: Objectives) -> list[float]:
    """Several objectives: no reports and no pruning (Optuna reports one value per step)."""
    costs = CostTracker(settings, objectives)
    seen = SeenMetrics()

    def on_iteration(iteration: int, metrics: Mapping[str, float]) -> None:
        seen.update(metrics)
        costs.update(metrics)
        for metric, tracker in costs.windows.items():
            if is_bad(tracker.value):
                raise ObjectiveNotFinite(f"objective {metric} is {tracker.value} at iteration {iteration}")

    callbacks = _callbacks(trial, on_iteration, _on_end(trial, costs.primary, seen, tuple(costs.windows)))
    start = callbacks.on_start

    def on_start(info: Mapping[str, Any]) -> None:  # the wall-time clock starts with the run
        costs.start()
        start(info)

    callbacks.on_start = on_start
    result = run_training(cfg, output_dir, callbacks)
    try:
        values = costs.values(getattr(result, "frames", None), getattr(result, "final_eval_return", None))
    except ValueError as exc:
        raise ObjectiveNotFinite(str(exc)) from None
    for metric, value in zip(objectives.metrics, values):
        if is_bad(value):
            raise ObjectiveNotFinite(f"objective {metric} is {value}")
    trial.set_user_attr("objective_metric", objectives.metrics[0])
    trial.set_user_attr("objective_metrics", list(objectives.metrics))
    if getattr(result, "frames", None) is not None:
        trial.set_user_attr("frames", int(result.frames))
    return values


def require_logged(metric: str, seen: "SeenMetrics") -> None:
    """A metric the training never logged (a typo) fails the trial instead of being replaced
    by something else; the final evaluation return stands in only for its own key."""
    reason = None if metric == FINAL_EVAL_KEY else missing_metric(metric, seen.keys)
    if reason:
        raise ObjectiveNotFinite(reason)


def _report_or_prune(trial: optuna.Trial, value: float, iteration: int, last: int | None) -> None:
    if reported_before(trial, iteration):  # a resumed trial replays its checkpoint's iterations
        return
    trial.report(value, step=iteration)
    # the final iteration is paid for already: pruning it would only throw its result away
    if (last is None or iteration < last) and trial.should_prune():
        raise optuna.TrialPruned(f"iteration {iteration}, objective {value:.4g}")


def seeds_population(cfg: DictConfig, seeds: tuple[int, ...]) -> DictConfig:
    """The trial's config as a population of its seeds; member i's W&B run is ``<name>-seed<s>``."""
    pop_cfg = copy.deepcopy(cfg)
    name = OmegaConf.select(cfg, "logger.name", default=None)
    with open_dict(pop_cfg):
        pop_cfg.population.seeds = list(seeds)
        pop_cfg.population.size = None
        pop_cfg.population.name = OmegaConf.select(cfg, "logger.group", default=None)
        pop_cfg.population.members = [{"logger.name": f"{name}-seed{s}"} for s in seeds] if name else []
    return pop_cfg


def _train_seeds(cfg, output_dir, run_population, trial, settings: ObjectiveSettings, wilcoxon: bool) -> float:
    """``objective.seeds``: the seeds train side by side, as members of one population, in
    lockstep. At each ``report_every`` iteration the aggregate over the seeds is reported (steps =
    iterations, as for one seed). With the Wilcoxon pruner the step must be a seed index instead:
    the per-seed values exist only when the population ends, so they are reported then (no
    pruning mid-training; the pruner still sees which seeds a trial did well on)."""
    seeds = settings.seeds
    trackers = [ObjectiveTracker(settings) for _ in seeds]
    seen = [SeenMetrics() for _ in seeds]
    last = final_iteration(cfg)

    def on_iteration(member: int, iteration: int, metrics: Mapping[str, float]) -> None:
        seen[member].update(metrics)
        trackers[member].update(metrics)
        if is_bad(trackers[member].value):
            raise ObjectiveNotFinite(f"objective is {trackers[member].value} "
                                     f"(seed {seeds[member]}, iteration {iteration})")
        closes_iteration = member == len(seeds) - 1  # lockstep: the last member ends the iteration
        values = [t.value for t in trackers]
        if wilcoxon or not closes_iteration or iteration % settings.report_every or None in values:
            return
        _report_or_prune(trial, aggregate(values, settings.aggregate), iteration, last)

    callbacks = _member_callbacks(trial, seeds, on_iteration, trackers, seen)
    results = run_population(seeds_population(cfg, seeds), output_dir, callbacks)
    values = [objective_value(t, getattr(r, "final_eval_return", None))[0] for t, r in zip(trackers, results)]
    trial.set_user_attr("objective_metric", trackers[0].metric_used or "final_eval_return")
    trial.set_user_attr("seed_values", {str(s): v for s, v in zip(seeds, values)})
    trial.set_user_attr("frames", int(sum(getattr(r, "frames", 0) or 0 for r in results)))
    if wilcoxon:
        for index, value in enumerate(values):
            trial.report(value, step=index)
    return aggregate(values, settings.aggregate)


def reevaluation_values(cfg: DictConfig, output_dir: Path, run_population, settings: ObjectiveSettings,
                        objectives: Objectives | None = None) -> list:
    """Train ``cfg.population`` (the re-evaluated configs x fresh seeds) and return each
    member's objective, computed as in the search (several objectives: a list per member, None
    for the wall time, which a member does not have alone). Records nothing: the sweeper does."""
    from workbench.sweep.reevaluate import NOT_REMEASURED

    members = len(cfg.population.seeds)
    multi = objectives is not None and objectives.multi
    trackers = [CostTracker(settings, objectives) if multi else ObjectiveTracker(settings) for _ in range(members)]
    seen = [SeenMetrics() for _ in range(members)]

    def on_iteration(member: int, iteration: int, metrics: Mapping[str, float]) -> None:
        seen[member].update(metrics)
        trackers[member].update(metrics)

    def on_end(member: int, error: BaseException | None) -> tuple[dict, int]:
        primary = trackers[member].primary if multi else trackers[member]
        state, value = run_verdict(error, primary, seen[member].final_eval)
        return {"reevaluation/value": value}, 1 if state == "FAIL" else 0

    from workbench.sweep.compat import make_member_callbacks

    on_start = (lambda member, info: trackers[member].start()) if multi else None
    results = run_population(cfg, output_dir, make_member_callbacks(on_start, on_iteration, on_end))
    values: list = []
    for tracker, result in zip(trackers, results):
        final_eval = getattr(result, "final_eval_return", None)
        if multi:
            try:
                got = tracker.values(getattr(result, "frames", None), final_eval)
            except ValueError:  # a diverged member counts as the worst: kept visible as NaN
                got = [float("nan")] * len(objectives.metrics)
            values.append([None if m in NOT_REMEASURED else v for m, v in zip(objectives.metrics, got)])
            continue
        try:
            values.append(objective_value(tracker, final_eval)[0])
        except ObjectiveNotFinite:  # a diverged member counts as the worst: kept visible as NaN
            values.append(float("nan"))
    return values


def _member_callbacks(trial, seeds, on_iteration, trackers, seen):
    """Each seed's W&B run is linked from the trial (lists in seed order); the first one also
    under the single-run keys, so tools that read one run per trial find one."""
    from workbench.sweep.compat import make_member_callbacks

    def on_start(member: int, info: Mapping[str, Any]) -> None:
        link_seed_run(trial, seeds, member, info)

    def on_end(member: int, error: BaseException | None) -> tuple[dict, int]:
        state, value = run_verdict(error, trackers[member], seen[member].final_eval)
        summary = {"trial/state": state, "trial/value": value, "trial/number": trial.number,
                   "trial/seed": seeds[member]}
        return summary, 1 if state == "FAIL" else 0

    return make_member_callbacks(on_start=on_start, on_iteration=on_iteration, on_end=on_end)


def _default_population_run() -> Callable[..., Any]:
    from workbench.train_population import PopulationRun

    return PopulationRun


def _worker_index() -> int | None:
    from workbench.sweep.factory import ENV_WORKER

    raw = os.environ.get(ENV_WORKER)
    return int(raw) if raw and raw.isdigit() else None


def _default_population_runner() -> Callable[..., Any]:
    from workbench.train_population import run_population

    return run_population


def final_iteration(cfg: DictConfig) -> int | None:
    """The iteration the training stops after (as BaseAgent.should_stop decides); None if unknown."""
    try:
        agent = cfg.agent
        rollout = int(cfg.env.num_envs) * int(agent.num_steps)
        last = agent.get("training_max_iterations") or int(agent.training_max_steps) // rollout
        stop_at = agent.get("training_early_termination")
        return min(int(last), math.ceil(int(stop_at) / rollout)) if stop_at else int(last)
    except Exception:  # a config without these keys: prune as asked
        return None


class SeenMetrics:
    """What the training logged last that the trial's verdict needs: evaluation return, frames."""

    def __init__(self) -> None:
        self.final_eval: float | None = None
        self.frames: float | None = None
        self.keys: set[str] = set()  # every key logged so far: a misspelled objective is named

    def update(self, metrics: Mapping[str, float]) -> None:
        self.keys.update(metrics)
        self.final_eval = metrics.get(EVAL.episode_reward, self.final_eval)
        self.frames = metrics.get(INFO.frames, self.frames)


def objective_value(tracker: ObjectiveTracker, final_eval: float | None) -> tuple[float, str]:
    """The trial's value and the metric it came from; raises ObjectiveNotFinite if there is none."""
    value, used = tracker.value, tracker.metric_used
    if value is None and final_eval is not None:
        value, used = float(final_eval), "final_eval_return"
    if value is None:
        raise ObjectiveNotFinite(f"objective metric {tracker.settings.metric!r} was never logged")
    if is_bad(value):
        raise ObjectiveNotFinite(f"objective {used} is {value}")
    return value, used


def _final_value(trial, tracker: ObjectiveTracker, result: Any) -> float:
    value, used = objective_value(tracker, getattr(result, "final_eval_return", None))
    trial.set_user_attr("objective_metric", used)
    frames = getattr(result, "frames", None)
    if frames is not None:
        trial.set_user_attr("frames", int(frames))
    return value


def run_verdict(error: BaseException | None, tracker: ObjectiveTracker, final_eval: float | None) -> tuple[str, float | None]:
    """How the trial will be recorded, decided as its run ends: (state, value)."""
    if isinstance(error, optuna.TrialPruned):
        return "PRUNED", tracker.value
    if isinstance(error, JobRequeued):  # stopped to go on in the requeued job
        return "REQUEUED", tracker.value
    if error is not None:
        return "FAIL", None
    try:
        return "COMPLETE", objective_value(tracker, final_eval)[0]
    except ObjectiveNotFinite:
        return "FAIL", None


def _on_end(trial: optuna.Trial, tracker: ObjectiveTracker, seen: SeenMetrics, required: tuple[str, ...] | None = None):
    """The run's last word: the W&B summary gets the trial's state and value, a pruned run
    exits 0 (it did what was asked), and the trial keeps the frames it trained, pruned or not.
    ``required``: the metrics the trial needs logged (default: its objective metric)."""

    def on_end(error: BaseException | None) -> tuple[dict, int]:
        state, value = run_verdict(error, tracker, seen.final_eval)
        needed = required if required is not None else (tracker.settings.metric,)
        if state == "COMPLETE" and any(m != FINAL_EVAL_KEY and missing_metric(m, seen.keys) for m in needed):
            state, value = "FAIL", None  # as the trial will be recorded
        try:
            if seen.frames is not None:
                trial.set_user_attr("frames", int(seen.frames))
        except Exception as exc:  # the storage hiccuped: the run must still finish
            log.warning("trial %d: frames not recorded: %s", trial.number, exc)
        summary = {"trial/state": state, "trial/value": value, "trial/number": trial.number}
        return summary, 1 if state == "FAIL" else 0

    return on_end


def _callbacks(trial: optuna.Trial, on_iteration, on_end=None):
    from workbench.sweep.compat import make_callbacks

    return make_callbacks(on_start=lambda info: link_run(trial, info), on_iteration=on_iteration, on_end=on_end)


RUN_LINKS = ("wandb_run_id", "wandb_run_dir", "output_dir")


def link_run(trial: optuna.Trial, info: Mapping[str, Any]) -> None:
    """The trial's W&B run and output dir, as user attributes (the report and notebooks follow them)."""
    for key in RUN_LINKS:
        if info.get(key) is not None:
            trial.set_user_attr(key, str(info[key]))
    ids = list(trial.user_attrs.get("wandb_run_ids", []))
    if info.get("wandb_run_id") is not None:
        trial.set_user_attr("wandb_run_ids", ids + [str(info["wandb_run_id"])])


def link_seed_run(trial: optuna.Trial, seeds, member: int, info: Mapping[str, Any]) -> None:
    """Seed ``member``'s run among the trial's: lists in seed order; the first seed's also under
    the single-run keys, so tools that read one run per trial find one."""
    for key in RUN_LINKS:
        links = list(trial.user_attrs.get(key + "s") or [None] * len(seeds))
        links[member] = None if info.get(key) is None else str(info[key])
        trial.set_user_attr(key + "s", links)
        if member == 0 and info.get(key) is not None:
            trial.set_user_attr(key, str(info[key]))
    trial.set_user_attr("seeds", list(seeds))


def fail_trial(study: optuna.Study, trial: optuna.Trial, reason: str) -> TrialOutcome:
    log.warning("trial %d failed: %s", trial.number, reason)
    try:
        trial.set_user_attr("fail_reason", scrub_text(reason))  # the study storage is on disk too
        study.tell(trial, state=TrialState.FAIL)
    except Exception as exc:  # already finished (e.g. reaped): keep the first verdict
        log.warning("trial %d: could not record the failure: %s", trial.number, exc)
    return TrialOutcome(trial.number, "FAIL", None, reason)


def _storage_for_job(cfg: DictConfig) -> StorageSpec:
    """The sweeper hands the real URL over in the environment; the config holds it redacted."""
    configured = cfg.trial.get("storage")
    from_env = os.environ.get(ENV_STORAGE)
    if from_env and (configured is None or redact(from_env) == str(configured)):
        url = from_env
    elif configured is not None:
        url = str(configured)
        if "***" in url:
            raise RuntimeError(
                f"trial.storage is redacted ({url}); set {ENV_STORAGE} to the full storage URL"
            )
    else:
        raise RuntimeError(f"no storage: set trial.storage or {ENV_STORAGE}")
    return StorageSpec(url, "rdb" if "://" in url else "journal")


def _pruner(sweeper: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    node = sweeper.get("pruner")
    if not node:
        return optuna.pruners.NopPruner()
    from workbench.sweep.factory import make_pruner

    return make_pruner(node)


def _hydra_sweeper_node() -> Any:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return HydraConfig.get().get("sweeper", {})


def _plain(node: Any) -> dict:
    if node is None:
        return {}
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    return dict(node)
