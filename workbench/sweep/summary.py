"""Progress line and end-of-sweep summary (printed, and written as CSV beside the study)."""
from __future__ import annotations

import csv
import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

ATTR_COLUMNS = ("baseline", "wandb_run_id", "output_dir", "fail_reason")
# `workbench sweep` hands its start time to its workers: every status line counts from it
ENV_STARTED = "WORKBENCH_SWEEP_STARTED"


def is_multi(study: optuna.Study) -> bool:
    return len(study.directions) > 1


def _maximize(study: optuna.Study) -> bool:
    """Of the (first) objective: a multi-objective study's trials are ordered by it."""
    return study.directions[0] == optuna.study.StudyDirection.MAXIMIZE


def _first_value(t: FrozenTrial) -> float | None:
    return t.values[0] if t.values else None  # t.value raises in a multi-objective study


def objective_names(study: optuna.Study) -> list[str]:
    names = study.user_attrs.get("objective_metrics") or []
    return list(names) if len(names) == len(study.directions) else [f"objective_{i}" for i in range(len(study.directions))]


def best_trial(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> FrozenTrial | None:
    """The best COMPLETE trial (None if there is none yet, or the study has several objectives); never raises."""
    if is_multi(study):
        return None
    trials = trials if trials is not None else study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not done:
        return None
    return (max if _maximize(study) else min)(done, key=lambda t: t.value)


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The COMPLETE trials no other trial dominates (Optuna's ``best_trials``), best first by the
    first objective; for one objective, the best trial(s)."""
    front = study.best_trials
    return sorted(front, key=lambda t: ((-1.0 if _maximize(study) else 1.0) * t.values[0], t.number))


def progress_line(study: optuna.Study, n_trials: int | None = None, started: float | None = None,
                  now: float | None = None) -> str:
    """``[study] 7/24 finished: ... | best -160.3 (trial 5) | elapsed 3m10s, ETA 7m15s``.

    ``started``: when this sweep started, a ``time.time()``; without it, no timing."""
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state for t in trials)
    finished = states[TrialState.COMPLETE] + states[TrialState.PRUNED] + states[TrialState.FAIL]
    total = f"/{n_trials}" if n_trials else ""
    best = best_trial(study, trials)
    best_text = f"best {best.value:.4g} (trial {best.number})" if best else "best -"
    if is_multi(study):
        best_text = f"Pareto front {len(study.best_trials)} trials"
    return (
        f"[{study.study_name}] {finished}{total} finished: {states[TrialState.COMPLETE]} complete, "
        f"{states[TrialState.PRUNED]} pruned, {states[TrialState.FAIL]} failed, "
        f"{states[TrialState.RUNNING]} running, {states[TrialState.WAITING]} queued | {best_text}"
        + timing_text(trials, n_trials, started, now)
    )


def timing_text(trials: Sequence[FrozenTrial], n_trials: int | None, started: float | None,
                now: float | None = None) -> str:
    """`` | elapsed 3m10s, ETA 7m15s``: the time since ``started`` and, at the rate trials finished
    since the first one this sweep started (all workers' alike), the time until the budget's
    last trial finishes. ETA ``-`` until a trial finished; none once the budget is done. Trials
    that do not count against the budget (retried failures, surplus) count for neither."""
    if started is None:
        return ""
    now = time.time() if now is None else now
    elapsed = max(0.0, now - started)
    text = f" | elapsed {format_duration(elapsed)}"
    if not n_trials:
        return text
    retried = {t.user_attrs.get("retry_of") for t in trials}
    counted = [t for t in trials if t.state.is_finished() and not (
        t.state == TrialState.FAIL and (t.number in retried or t.user_attrs.get("surplus")))]
    remaining = int(n_trials) - len(counted)
    if remaining <= 0:
        return text
    recent = [t for t in counted if t.datetime_complete is not None and t.datetime_complete.timestamp() >= started]
    # the rate counts from the first trial this sweep started, not from its start-up (validation, workers)
    began = [t.datetime_start.timestamp() for t in trials
             if t.datetime_start is not None and t.datetime_start.timestamp() >= started]
    span = now - min(began, default=started)
    if not recent or span <= 0:
        return text + ", ETA -"
    return text + f", ETA {format_duration(remaining * span / len(recent))}"


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def summary_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial, best first (complete by value, then pruned by last value, then the rest)."""
    trials = study.get_trials(deepcopy=False)
    sign = -1.0 if _maximize(study) else 1.0
    order = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1}

    def key(t: FrozenTrial):
        value = _first_value(t)
        usable = value is not None and math.isfinite(value)
        return (order.get(t.state, 2), sign * value if usable else math.inf, t.number)

    multi = is_multi(study)
    names = objective_names(study)
    front = {t.number for t in study.best_trials} if multi else set()

    params = sorted({name for t in trials for name in t.params})
    rows = []
    for rank, t in enumerate(sorted(trials, key=key), start=1):
        row: dict[str, Any] = {
            "rank": rank,
            "number": t.number,
            "state": t.state.name,
            "value": None if multi else t.value,
            "last_step": t.last_step,
            "duration_s": round(t.duration.total_seconds(), 2) if t.duration else None,
        }
        if multi:  # one column per objective, and whether the trial is on the front
            row.update({f"value.{n}": (t.values[i] if t.values else None) for i, n in enumerate(names)})
            row["pareto"] = t.number in front
        row.update({f"params.{p}": t.params.get(p) for p in params})
        row.update({a: t.user_attrs.get(a) for a in ATTR_COLUMNS})
        rows.append(row)
    return rows


def summary_csv_path(storage_file: Path | None, study_name: str, sweep_dir: Path | str, cwd: Path) -> Path:
    """Where a study's summary CSV goes: beside its journal or SQLite file (``storage_file``),
    else (a database server) in the sweep's output directory, ``sweep_dir``, taken from ``cwd``
    when relative (Hydra's ``hydra.sweep.dir`` and ``hydra.runtime.cwd``)."""
    directory = storage_file.parent if storage_file is not None else Path(sweep_dir)
    if not directory.is_absolute():
        directory = cwd / directory
    return directory / f"{study_name}.summary.csv"


def write_csv(study: optuna.Study, path: Path) -> Path:
    rows = summary_rows(study)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as handle:
        fields = list(rows[0].keys()) if rows else ["rank", "number", "state", "value"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)  # atomic: several workers may write it at the end
    return path


def summary_table(study: optuna.Study, n_trials: int | None = None, top: int = 5,
                  started: float | None = None) -> str:
    """Human-readable end-of-sweep summary: counts, the best trial's params, the top trials."""
    lines = [progress_line(study, n_trials, started)]
    if is_multi(study):
        return "\n".join(lines + pareto_lines(study) + _reevaluation_lines(study))
    best = best_trial(study)
    if best is None:
        lines.append("no complete trial yet")
        return "\n".join(lines)
    lines.append(f"best trial {best.number}: value {best.value:.6g}")
    width = max((len(p) for p in best.params), default=0)
    for name, value in best.params.items():
        lines.append(f"  {name:<{width}} = {value}")
    if best.user_attrs.get("wandb_run_id"):
        lines.append(f"  W&B run {best.user_attrs['wandb_run_id']}  dir {best.user_attrs.get('output_dir')}")
    rows = summary_rows(study)[:top]
    lines.append(f"{'rank':>4} {'trial':>5} {'state':<8} {'value':>12}")
    for row in rows:
        value = "-" if row["value"] is None else f"{row['value']:.6g}"
        mark = "  (baseline: the defaults)" if row["baseline"] else ""
        lines.append(f"{row['rank']:>4} {row['number']:>5} {row['state']:<8} {value:>12}{mark}")
    return "\n".join(lines + _reevaluation_lines(study))


def _reevaluation_lines(study: optuna.Study) -> list[str]:
    record = study.user_attrs.get("reevaluation")
    if not record:
        return []
    from workbench.sweep.reevaluate import reeval_table

    return [reeval_table(record)]


def pareto_lines(study: optuna.Study) -> list[str]:
    """The end-of-sweep summary of a multi-objective study: the front, each trial's values and params."""
    front = pareto_front(study)
    names = objective_names(study)
    directions = [d.name.lower() for d in study.directions]
    if not front:
        return ["no complete trial yet"]
    lines = [f"Pareto front: {len(front)} trials that no other trial beats in "
             + ", ".join(f"{n} ({d})" for n, d in zip(names, directions))]
    widths = [max(12, len(n)) for n in names]
    lines.append(f"{'trial':>5} " + " ".join(f"{n:>{w}}" for n, w in zip(names, widths)))
    for t in front:
        lines.append(f"{t.number:>5} " + " ".join(f"{v:>{w}.6g}" for v, w in zip(t.values, widths)))
    for t in front:
        lines.append(f"  trial {t.number}: " + ", ".join(f"{k}={v}" for k, v in t.params.items()))
    return lines
