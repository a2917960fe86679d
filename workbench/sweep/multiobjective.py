"""Several objectives at once: ``direction: [maximize, minimize]`` with
``objective.metrics: [eval/episode_reward, <a cost>]`` makes a multi-objective study.

Each entry of ``metrics`` is one of
- a metric the training logs (``eval/episode_reward``): the mean of its last ``window`` values,
  as the single objective is;
- ``time/wall_seconds``: the training's wall time, measured by the trial from the run's start
  (environment, agent and W&B run built) to its last iteration, so it works for any app and
  counts evaluation time, which a budget pays for too;
- ``frames_to:<value>`` (``frames_to:-300``): the first ``info/frames`` at which the first
  metric's window mean reaches the value (>= when that metric is maximised, <= when
  minimised). A trial that never reaches it gets its total frames + 1: worse than any trial
  that reached it within the same budget, yet a finite number Optuna can rank.

The first entry must be a logged metric (``frames_to`` refers to it); costs are minimised.
"""
from __future__ import annotations

import dataclasses
import difflib
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from workbench.sweep.errors import SweepConfigError
from workbench.sweep.objective import ObjectiveSettings, ObjectiveTracker

WALL_SECONDS = "time/wall_seconds"
FRAMES_TO = "frames_to:"
FRAMES_KEY = "info/frames"
DIRECTIONS = ("maximize", "minimize")
FINAL_EVAL_KEY = "eval/episode_reward"  # the key whose last value a run's final_eval_return is


def is_cost(metric: str) -> bool:
    return metric == WALL_SECONDS or metric.startswith(FRAMES_TO)


@dataclass(frozen=True)
class Objectives:
    directions: tuple[str, ...]
    metrics: tuple[str, ...]

    @property
    def multi(self) -> bool:
        return len(self.directions) > 1


def parse_objectives(direction: Any, objective: Mapping[str, Any] | None) -> Objectives:
    """``hydra.sweeper.direction`` (a word or a list) and ``objective.metrics`` (or ``metric``)."""
    directions = [direction] if isinstance(direction, str) else list(direction or [])
    directions = [str(d).lower() for d in directions]
    bad = [d for d in directions if d not in DIRECTIONS]
    if not directions or bad:
        shown = bad[0] if bad else direction
        raise SweepConfigError(f"hydra.sweeper.direction must be maximize or minimize (or a list of them, one per "
                               f"objective), got {shown!r}")
    objective = dict(objective or {})
    metrics = objective.get("metrics")
    if metrics is None:
        if len(directions) > 1:
            raise SweepConfigError(f"hydra.sweeper.direction lists {len(directions)} directions: give as many "
                                   "metrics in hydra.sweeper.objective.metrics, e.g. [eval/episode_reward, "
                                   f"{WALL_SECONDS}]")
        metrics = [objective.get("metric", ObjectiveSettings.metric)]
    metrics = [str(m) for m in metrics]
    if len(metrics) != len(directions):
        raise SweepConfigError(f"hydra.sweeper.objective.metrics {metrics} has {len(metrics)} entries for "
                               f"{len(directions)} directions {directions}: give one metric per direction")
    _check_metrics(metrics, directions)
    return Objectives(tuple(directions), tuple(metrics))


def _check_metrics(metrics: list[str], directions: list[str]) -> None:
    if is_cost(metrics[0]):
        raise SweepConfigError(f"hydra.sweeper.objective.metrics: the first entry {metrics[0]!r} must be a "
                               "metric the training logs (frames_to refers to it), e.g. eval/episode_reward")
    if len(set(metrics)) != len(metrics):
        raise SweepConfigError(f"hydra.sweeper.objective.metrics {metrics} has duplicates")
    for metric, direction in zip(metrics, directions):
        if metric.startswith(FRAMES_TO):
            threshold(metric)  # raises on a bad number
        if is_cost(metric) and direction != "minimize":
            raise SweepConfigError(f"hydra.sweeper.objective.metrics: {metric!r} is a cost; its direction "
                                   f"must be minimize, got {direction}")


def threshold(metric: str) -> float:
    text = metric[len(FRAMES_TO):]
    try:
        return float(text)
    except ValueError:
        raise SweepConfigError(f"hydra.sweeper.objective.metrics: {metric!r}: {text!r} is not a number; "
                               "write frames_to:<return>, e.g. frames_to:-300") from None


def settings_for(settings: ObjectiveSettings, objectives: Objectives) -> ObjectiveSettings:
    """The single-objective settings of the first metric (``metrics`` replaces ``metric``)."""
    return dataclasses.replace(settings, metric=objectives.metrics[0])


# samplers that raise on a multi-objective study once their start-up trials are done
SINGLE_OBJECTIVE_SAMPLERS = ("CmaEsSampler",)


def check_multi_objective(objectives: Objectives, sampler: Any, pruner: Any, seeds: Any) -> None:
    """What a multi-objective study cannot have, refused before any trial. Optuna's
    ``trial.report`` takes one value, so a multi-objective trial cannot be pruned."""
    if not objectives.multi:
        return
    import optuna

    if type(sampler).__name__ in SINGLE_OBJECTIVE_SAMPLERS:
        raise SweepConfigError(f"hydra.sweeper.sampler: {type(sampler).__name__} handles one objective only; "
                               "with several directions use TPESampler (the default), NSGAIISampler or RandomSampler")

    if not isinstance(pruner, optuna.pruners.NopPruner):
        raise SweepConfigError(f"hydra.sweeper.pruner: {type(pruner).__name__} cannot prune a multi-objective "
                               "study (Optuna reports one value per step); set pruner: null")
    if seeds:
        raise SweepConfigError("hydra.sweeper.objective.seeds: per-seed (Wilcoxon) mode needs one objective; "
                               "it is not available with several directions")


def missing_metric(metric: str, logged: Iterable[str]) -> str | None:
    """Why ``metric`` cannot be the objective (None: it was logged): a misspelled key must fail
    the trial, not let it be judged by something else."""
    logged = set(logged)
    if metric in logged:
        return None
    close = difflib.get_close_matches(metric, sorted(logged), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (f"objective metric {metric!r} was never logged by the training ({len(logged)} keys were, "
            f"e.g. {', '.join(sorted(logged)[:4]) or 'none'}){hint}")


class CostTracker:
    """Follows every metric of a multi-objective trial during its training."""

    def __init__(self, settings: ObjectiveSettings, objectives: Objectives) -> None:
        self.objectives = objectives
        self.windows = {m: ObjectiveTracker(dataclasses.replace(settings, metric=m, fallback_metric=None))
                        for m in objectives.metrics if not is_cost(m)}
        self.primary = self.windows[objectives.metrics[0]]
        self.maximize = objectives.directions[0] == "maximize"
        self.started: float | None = None
        self.last_iteration_at: float | None = None
        self.frames: float | None = None
        self.reached: dict[str, float] = {}  # frames_to metric -> frames at which it was reached
        self.logged: set[str] = set()

    def start(self) -> None:
        self.started = time.monotonic()

    def update(self, metrics: Mapping[str, float]) -> None:
        self.logged.update(metrics)
        for tracker in self.windows.values():
            tracker.update(metrics)
        self.frames = metrics.get(FRAMES_KEY, self.frames)
        self.last_iteration_at = time.monotonic()
        value = self.primary.value
        for metric in self.objectives.metrics:
            if metric.startswith(FRAMES_TO) and metric not in self.reached and value is not None \
                    and self._reaches(value, threshold(metric)) and self.frames is not None:
                self.reached[metric] = float(self.frames)

    def _reaches(self, value: float, target: float) -> bool:
        return value >= target if self.maximize else value <= target

    def values(self, total_frames: float | None = None, final_eval: float | None = None) -> list[float]:
        """One value per metric; raises ValueError naming a metric that has none. As for a single
        objective, the run's final evaluation return stands in for an ``eval/episode_reward``
        that no iteration logged."""
        return [self._value(metric, total_frames, final_eval) for metric in self.objectives.metrics]

    def _value(self, metric: str, total_frames: float | None, final_eval: float | None) -> float:
        if metric == WALL_SECONDS:
            if self.started is None or self.last_iteration_at is None:
                raise ValueError(f"{WALL_SECONDS}: the training never started or ran no iteration")
            return self.last_iteration_at - self.started
        if metric.startswith(FRAMES_TO):
            if metric in self.reached:
                return self.reached[metric]
            total = total_frames if total_frames is not None else self.frames
            if total is None:
                raise ValueError(f"{metric}: the training logged no {FRAMES_KEY}")
            return float(total) + 1.0  # never reached: worse than any trial that did
        if metric == FINAL_EVAL_KEY and metric not in self.logged and final_eval is not None:
            return float(final_eval)
        reason = missing_metric(metric, self.logged)
        if reason:
            raise ValueError(reason)
        return float(self.windows[metric].value)
