"""Re-evaluation on fresh seeds: the winner's curse, measured.

When a study's budget is spent (or on demand, ``workbench reevaluate <study>``), the top-K
configurations and the defaults (the baseline trial) train again on S seeds the search never
used, at the full training budget, as one population (members = configs x seeds). Each
config's per-seed values, mean, IQM and 95 % bootstrap CI go to the study (user attr
``reevaluation``) and to ``<study>.reeval.csv`` beside the summary.

Population members must have distinct seeds, so config j gets seeds
``FRESH_SEED_BASE + j * S + i``: each config its own fresh seeds (independent samples).
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from workbench.sweep.errors import SweepConfigError
from workbench.sweep.objective import iqm, mean

FRESH_SEED_BASE = 10_000
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # fixed: the same values give the same CI
REEVAL_ATTR = "reevaluation"
DEFAULT_TOP_K = 3  # `workbench reevaluate` on a sweep file that leaves re-evaluation off
# keys the re-evaluation sets itself: a search-time budget override must not shorten it
BUDGET_KEYS = ("agent.training_max_steps", "agent.training_max_iterations", "agent.training_early_termination")


@dataclass
class ReevalSettings:
    """``hydra.sweeper.reevaluate`` (the sweeper's config schema uses this class itself): when the
    budget is spent (and on ``workbench reevaluate <study>``), the ``top_k`` configs and the defaults,
    each on ``seeds`` fresh seeds, at ``budget`` frames, as one population."""

    top_k: int = 0  # 0 = off
    seeds: int = 5
    budget: int | None = None  # frames per member; None: the config's own agent.training_max_steps, not the sweep's
    baseline: bool = True  # re-evaluate the defaults (the baseline trial) too

    @classmethod
    def from_config(cls, node: Mapping[str, Any] | None) -> "ReevalSettings":
        node = dict(node or {})
        settings = cls(top_k=int(node.get("top_k") or 0), seeds=int(node.get("seeds", cls.seeds)),
                       budget=None if node.get("budget") is None else int(node["budget"]),
                       baseline=bool(node.get("baseline", True)))
        for key, value, low in (("top_k", settings.top_k, 0), ("seeds", settings.seeds, 1),
                                ("budget", settings.budget, 1)):
            if value is not None and value < low:
                raise SweepConfigError(f"hydra.sweeper.reevaluate.{key}={value} is not allowed: must be >= {low}")
        return settings


# ---- statistics -----------------------------------------------------------------------

def bootstrap_ci(values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean: resample the values with replacement, take the
    (1-level)/2 and (1+level)/2 quantiles of the resampled means."""
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def config_stats(values: Sequence[float]) -> dict[str, float]:
    low, high = bootstrap_ci(values)
    return {"mean": mean(values), "iqm": iqm(values), "ci_low": low, "ci_high": high}


# ---- what to re-evaluate --------------------------------------------------------------

def pick_configs(study: optuna.Study, top_k: int, with_baseline: bool) -> list[FrozenTrial]:
    """The top-K complete trials by value (the baseline excluded), then the baseline trial. In a
    multi-objective study: the whole Pareto front of the tuned trials instead (by its first
    objective), then the baseline."""
    trials = study.get_trials(deepcopy=False)
    baselines = [t for t in trials if t.user_attrs.get("baseline")]
    finished = [t for t in baselines if t.state == TrialState.COMPLETE] or baselines
    if len(study.directions) > 1:  # the front of the tuned trials: what the search found
        directions = ["maximize" if d == optuna.study.StudyDirection.MAXIMIZE else "minimize" for d in study.directions]
        tuned = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None
                 and all(math.isfinite(v) for v in t.values) and not t.user_attrs.get("baseline")]
        front = [t for t in tuned if not any(_dominates(o.values, t.values, directions) for o in tuned)]
        top = sorted(front, key=lambda t: (-t.values[0] if directions[0] == "maximize" else t.values[0], t.number))
        return top + finished[:1] if with_baseline else top
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None
            and math.isfinite(t.value) and not t.user_attrs.get("baseline")]
    top = sorted(done, key=lambda t: (-t.value if maximize else t.value, t.number))[:top_k]
    return top + finished[:1] if with_baseline else top


def fresh_seeds(index: int, count: int) -> list[int]:
    return [FRESH_SEED_BASE + index * count + i for i in range(count)]


# ---- the record -----------------------------------------------------------------------

def build_record(study: optuna.Study, configs: Sequence[FrozenTrial], values: Sequence[Sequence[Any]],
                 seeds: Sequence[Sequence[int]], budget: int, structural: Sequence[str]) -> dict[str, Any]:
    """``values[j]``: config j's value per seed; in a multi-objective study a list per seed, one
    value per objective (None where the objective cannot be measured per member)."""
    if len(study.directions) > 1:
        return _multi_objective_record(study, configs, values, seeds, budget, structural)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    rows = [_row(trial, vals, used, trial.value) for trial, vals, used in zip(configs, values, seeds)]
    tuned = [r for r in rows if not r["baseline"]]
    winner = (max if maximize else min)(tuned, key=lambda r: r["mean"]) if tuned else None
    base = next((r for r in rows if r["baseline"]), None)
    clears = None
    if winner is not None and base is not None:
        clears = winner["ci_low"] > base["ci_high"] if maximize else winner["ci_high"] < base["ci_low"]
    return {**_common(budget, structural), "direction": "maximize" if maximize else "minimize", "rows": rows,
            "winner": None if winner is None else winner["trial"], "winner_clears_baseline": clears}


def _row(trial: FrozenTrial, values: Sequence[float], seeds: Sequence[int], search_value: Any) -> dict[str, Any]:
    return {"trial": trial.number, "baseline": bool(trial.user_attrs.get("baseline")),
            "params": {k: _plain(v) for k, v in trial.params.items()}, "search_value": search_value,
            "seeds": list(seeds), "values": [float(v) for v in values], **config_stats(values)}


def _common(budget: int, structural: Sequence[str]) -> dict[str, Any]:
    return {"budget": int(budget), "one_population": not structural, "structural_params": list(structural),
            "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "level": 0.95}}


# A member of a population cannot have a wall time of its own: it shares the population's.
NOT_REMEASURED = ("time/wall_seconds",)


def _multi_objective_record(study, configs, values, seeds, budget, structural) -> dict[str, Any]:
    """The Pareto front on fresh seeds: each objective's per-seed values, mean and CI beside its
    search value; which configs stay non-dominated on the fresh means (the wall time, which a
    population member cannot measure alone, keeps its search value there)."""
    metrics = list(study.user_attrs.get("objective_metrics") or [f"objective_{i}" for i in range(len(study.directions))])
    directions = ["maximize" if d == optuna.study.StudyDirection.MAXIMIZE else "minimize" for d in study.directions]
    rows = []
    for trial, per_seed, used in zip(configs, values, seeds):
        row = _row(trial, [v[0] for v in per_seed], used, trial.values[0] if trial.values else None)
        row["objectives"] = {}
        for i, metric in enumerate(metrics):
            search = trial.values[i] if trial.values else None
            fresh = [v[i] for v in per_seed]
            if metric in NOT_REMEASURED or any(v is None for v in fresh):
                row["objectives"][metric] = {"search_value": search, "values": None, "mean": search,
                                             "ci_low": None, "ci_high": None, "remeasured": False}
            else:
                row["objectives"][metric] = {"search_value": search, "values": [float(v) for v in fresh],
                                             **config_stats(fresh), "remeasured": True}
        rows.append(row)
    points = [[r["objectives"][m]["mean"] for m in metrics] for r in rows]
    front = [r["trial"] for r, p in zip(rows, points)
             if None not in p and not any(_dominates(q, p, directions) for q in points if None not in q)]
    return {**_common(budget, structural), "direction": directions[0], "directions": directions,
            "metrics": metrics, "rows": rows, "fresh_front": front, "winner": None, "winner_clears_baseline": None}


def _dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """a is at least as good as b in every objective and better in one."""
    signs = [1.0 if d == "maximize" else -1.0 for d in directions]
    better_or_equal = all(s * x >= s * y for s, x, y in zip(signs, a, b))
    return better_or_equal and any(s * x > s * y for s, x, y in zip(signs, a, b))


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


CSV_FIELDS = ("trial", "baseline", "params", "search_value", "seeds", "values", "mean", "iqm",
              "ci_low", "ci_high", "winner")
MULTI_CSV_FIELDS = ("on_fresh_front", "objectives")  # a multi-objective study's record adds these


def write_reeval_csv(record: Mapping[str, Any], path: Path) -> Path:
    """One row per config; params, seeds and per-seed values as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as handle:
        multi = "fresh_front" in record
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS + (MULTI_CSV_FIELDS if multi else ()))
        writer.writeheader()
        for row in record["rows"]:
            extra = {"on_fresh_front": row["trial"] in record["fresh_front"],
                     "objectives": json.dumps(row["objectives"], sort_keys=True)} if multi else {}
            writer.writerow({**{k: row[k] for k in CSV_FIELDS if k in row},
                             "params": json.dumps(row["params"], sort_keys=True), "seeds": json.dumps(row["seeds"]),
                             "values": json.dumps(row["values"]), "winner": row["trial"] == record["winner"], **extra})
    os.replace(tmp, path)
    return path


def verdict(record: Mapping[str, Any]) -> str:
    """One sentence: the winner, and whether its CI clears the defaults'."""
    if "fresh_front" in record:
        return _front_verdict(record)
    winner = record.get("winner")
    if winner is None:
        return "re-evaluation: no tuned configuration to compare"
    row = next(r for r in record["rows"] if r["trial"] == winner)
    text = (f"winner on fresh seeds: trial {winner}, mean {row['mean']:.4g} "
            f"(95% CI {row['ci_low']:.4g} .. {row['ci_high']:.4g})")
    clears = record.get("winner_clears_baseline")
    if clears is None:
        return text + "; no baseline to compare with"
    base = next(r for r in record["rows"] if r["baseline"])
    side = "above" if record.get("direction") == "maximize" else "below"
    if clears:
        return text + f"; its CI clears the defaults' ({base['ci_low']:.4g} .. {base['ci_high']:.4g}): " \
                      f"it is {side} the defaults beyond seed noise"
    return text + f"; its CI does NOT clear the defaults' ({base['ci_low']:.4g} .. {base['ci_high']:.4g}): " \
                  "the gain may be seed luck"


def _front_verdict(record: Mapping[str, Any]) -> str:
    searched = [r["trial"] for r in record["rows"] if not r["baseline"]]
    kept = [t for t in searched if t in record["fresh_front"]]
    left = [t for t in searched if t not in record["fresh_front"]]
    base = next((r["trial"] for r in record["rows"] if r["baseline"]), None)
    text = f"Pareto front on fresh seeds: trials {record['fresh_front']}"
    text += f"; of the search's front {len(kept)} of {len(searched)} stay on it"
    if left:
        text += f" (trials {left} are dominated now)"
    if base is not None:
        text += "; the defaults are on it" if base in record["fresh_front"] else "; the defaults are not on it"
    shared = [m for m in record["metrics"] if m in NOT_REMEASURED]
    if shared:
        text += f" ({', '.join(shared)}: search values, a population member has no wall time of its own)"
    return text


def reeval_table(record: Mapping[str, Any]) -> str:
    """The end-of-sweep table: each config's search value beside its fresh-seed values."""
    seeds = len(record["rows"][0]["values"]) if record["rows"] else 0
    lines = [f"re-evaluation: {len(record['rows'])} configs x {seeds} fresh seeds, "
             f"{record['budget']} frames each" + ("" if record.get("one_population") else
             f" (one population per config: {', '.join(record['structural_params'])} cannot vary per member)"),
             f"{'trial':>5} {'search':>10} {'fresh mean':>10} {'iqm':>10} {'95% CI':>21}"]
    for row in record["rows"]:
        search = "-" if row["search_value"] is None else f"{row['search_value']:.4g}"
        mark = "  baseline (defaults)" if row["baseline"] else ("  winner" if row["trial"] == record["winner"] else "")
        ci = f"{row['ci_low']:.4g} .. {row['ci_high']:.4g}"
        lines.append(f"{row['trial']:>5} {search:>10} {row['mean']:>10.4g} {row['iqm']:>10.4g} {ci:>21}{mark}")
    for row in record["rows"] if "fresh_front" in record else ():
        for metric, stats in row["objectives"].items():
            fresh = "not re-measured" if not stats["remeasured"] else \
                f"fresh {stats['mean']:.4g} (95% CI {stats['ci_low']:.4g} .. {stats['ci_high']:.4g})"
            lines.append(f"{row['trial']:>5}   {metric}: search {_num(stats['search_value'])}, {fresh}")
    lines.append(verdict(record))
    return "\n".join(lines)


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def settings_dict(settings: ReevalSettings) -> dict[str, Any]:
    return asdict(settings)
