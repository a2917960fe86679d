"""The number a trial is judged by, computed from the metrics a training run logs."""
from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence


@dataclass
class ObjectiveSettings:
    """``hydra.sweeper.objective``. The sweeper's config schema uses this class itself
    (hydra_plugins/workbench_optuna_sweeper/config.py), so each field is declared here only;
    it is mutable because Hydra merges a sweep file's values into it."""

    metric: str = "eval/episode_reward"  # the logged metric the objective is made of
    # multi-objective: one entry per direction, e.g. [eval/episode_reward, time/wall_seconds]
    # or [eval/episode_reward, "frames_to:-300"] (workbench/sweep/multiobjective.py); replaces `metric`
    metrics: list[str] | None = None
    window: int = 3  # objective = mean of the last `window` values of `metric`
    fallback_metric: str | None = None  # used only while `metric` has not appeared yet
    report_every: int = 1  # trial.report every K iterations (only iterations with a value); step = iteration
    # each trial trains these seeds side by side, as members of one population; its value is their
    # `aggregate`. The Wilcoxon pruner gets per-seed values (step = seed index)
    seeds: tuple[int, ...] | None = None
    aggregate: str = "mean"  # how the seeds' objectives combine: mean | median | iqm

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> "ObjectiveSettings":
        node = dict(node or {})
        seeds = node.get("seeds")
        settings = cls(
            metric=str(node.get("metric", cls.metric)),
            metrics=[str(m) for m in node["metrics"]] if node.get("metrics") else None,
            window=int(node.get("window", cls.window)),
            fallback_metric=node.get("fallback_metric", cls.fallback_metric),
            report_every=int(node.get("report_every", cls.report_every)),
            seeds=tuple(int(s) for s in seeds) if seeds else None,
            aggregate=str(node.get("aggregate") or cls.aggregate),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        from workbench.sweep.errors import SweepConfigError

        if self.window < 1:
            raise SweepConfigError(f"hydra.sweeper.objective.window must be >= 1, got {self.window}")
        if self.report_every < 1:
            raise SweepConfigError(
                f"hydra.sweeper.objective.report_every must be >= 1, got {self.report_every}"
            )
        if self.aggregate not in AGGREGATES:
            raise SweepConfigError(f"hydra.sweeper.objective.aggregate={self.aggregate!r} is not allowed: "
                                   f"one of {', '.join(AGGREGATES)}")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise SweepConfigError(f"hydra.sweeper.objective.seeds has duplicates: {self.seeds}")


class ObjectiveTracker:
    """Keeps the last ``window`` values of the objective metric (and of the fallback)."""

    def __init__(self, settings: ObjectiveSettings) -> None:
        self.settings = settings
        self._primary: deque[float] = deque(maxlen=settings.window)
        self._fallback: deque[float] = deque(maxlen=settings.window)

    def update(self, metrics: Mapping[str, float]) -> None:
        if self.settings.metric in metrics:
            # a non-finite evaluation return means the policy diverged: kept, so it fails the trial
            self._primary.append(float(metrics[self.settings.metric]))
        fb = self.settings.fallback_metric
        if fb and fb in metrics and math.isfinite(float(metrics[fb])):
            # training-episode returns may be NaN in iterations where no episode ended: skipped
            self._fallback.append(float(metrics[fb]))

    @property
    def metric_used(self) -> str | None:
        if self._primary:
            return self.settings.metric
        if self._fallback:
            return self.settings.fallback_metric
        return None

    @property
    def value(self) -> float | None:
        values = self._primary or self._fallback
        if not values:
            return None
        return sum(values) / len(values)


def is_bad(value: float | None) -> bool:
    return value is not None and not math.isfinite(value)


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50 %, cutting int(n / 4) values at each end
    (scipy.stats.trim_mean(values, 0.25)); robust to one lucky or unlucky seed."""
    ordered = sorted(float(v) for v in values)
    if not ordered:
        raise ValueError("iqm of no values")
    cut = len(ordered) // 4
    middle = ordered[cut:len(ordered) - cut]
    return sum(middle) / len(middle)


def mean(values: Sequence[float]) -> float:
    return sum(float(v) for v in values) / len(values)


AGGREGATES: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": mean, "median": lambda v: float(statistics.median(v)), "iqm": iqm}


def aggregate(values: Sequence[float], how: str) -> float:
    """Combine the seeds' objectives (``objective.aggregate``)."""
    return AGGREGATES[how](values)
