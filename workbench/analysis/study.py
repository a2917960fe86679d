"""A study's trials as a pandas DataFrame (one row per trial), read without changing the storage."""
from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pandas as pd
from optuna.distributions import distribution_to_json
from optuna.trial import FrozenTrial

from workbench.sweep.storage import StorageSpec, open_storage, resolve_storage

from .errors import StorageNotFoundError, StudyNotFoundError

PARAM_PREFIX = "params_"
VALUES_PREFIX = "values_"  # values_0, values_1, ...: one column per objective of a multi-objective study
ATTR_COLUMNS = ("wandb_run_id", "wandb_run_dir", "output_dir", "objective_metric", "fail_reason", "baseline")
BASE_COLUMNS = ["number", "state", "value", "datetime_start", "datetime_complete", "duration_s",
                "last_step", "frames", *ATTR_COLUMNS]


def storage_spec(storage: str | Path | None, study_name: str, base_dir: Path | None = None) -> StorageSpec:
    """Resolve like ``workbench sweep`` does (default ``sweeps_db/<study>.journal``)."""
    return resolve_storage(None if storage is None else str(storage), study_name, Path(base_dir or Path.cwd()))


def _local_studies(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.journal")) if folder.is_dir() else []


def open_existing_storage(spec: StorageSpec) -> optuna.storages.BaseStorage:
    """Open the storage, refusing to create a journal or SQLite file that is not there."""
    path = spec.path
    if path is not None and not path.is_file():
        found = _local_studies(path.parent)
        hint = f"; journals in {path.parent}: {', '.join(found)}" if found else ""
        raise StorageNotFoundError(f"no study storage at {path}{hint}")
    return open_storage(spec)


def list_studies(storage: str | Path | None = None, base_dir: Path | None = None) -> list[str]:
    """Names of the studies in a storage (a journal file or an Optuna RDB URL)."""
    spec = storage_spec(storage, "_", base_dir) if storage is not None else None
    if spec is None:  # no storage given: every journal in ./sweeps_db
        return _local_studies(Path(base_dir or Path.cwd()) / "sweeps_db")
    return sorted(optuna.get_all_study_names(open_existing_storage(spec)))


def open_study(storage: str | Path | None, study_name: str, base_dir: Path | None = None) -> optuna.Study:
    """The Optuna study; ``StudyNotFoundError`` names the studies that do exist."""
    spec = storage_spec(storage, study_name, base_dir)
    backend = open_existing_storage(spec)
    names = sorted(optuna.get_all_study_names(backend))
    if study_name not in names:
        listed = ", ".join(names) if names else "none"
        raise StudyNotFoundError(f"no study {study_name!r} in {spec.redacted}; studies there: {listed}", names)
    return optuna.load_study(study_name=study_name, storage=backend)


def _finite(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else math.nan


def _row(t: FrozenTrial, n_objectives: int = 1) -> dict:
    # t.value raises in a multi-objective study: `value` is the first objective there
    value = _finite(t.values[0] if t.values else None)
    row = {
        "number": t.number,
        "state": t.state.name,
        "value": value,
        "datetime_start": t.datetime_start,
        "datetime_complete": t.datetime_complete,
        "duration_s": t.duration.total_seconds() if t.duration else math.nan,
        "last_step": t.last_step,
        "frames": t.user_attrs.get("frames"),
    }
    row.update({a: t.user_attrs.get(a) for a in ATTR_COLUMNS})
    if n_objectives > 1:  # Optuna's own trials_dataframe names them so too
        row.update({f"{VALUES_PREFIX}{i}": _finite(t.values[i] if t.values else None) for i in range(n_objectives)})
    row.update({PARAM_PREFIX + k: v for k, v in t.params.items()})
    return row


def study_frame(study: optuna.Study, storage_label: str = "") -> pd.DataFrame:
    """One row per trial (sorted by number); what the plots need about the study goes in ``attrs``."""
    trials = study.get_trials(deepcopy=False)
    directions = [d.name.lower() for d in study.directions]
    multi = len(directions) > 1
    frame = pd.DataFrame([_row(t, len(directions)) for t in trials])
    params = sorted({k for t in trials for k in t.params})
    values = [f"{VALUES_PREFIX}{i}" for i in range(len(directions))] if multi else []
    columns = BASE_COLUMNS + values + (["pareto"] if multi else []) + [PARAM_PREFIX + p for p in params]
    frame = frame.reindex(columns=columns)
    if len(frame):
        frame = frame.sort_values("number", ignore_index=True)
    frame["value"] = frame["value"].astype(float)
    if multi:  # the front, as Optuna computes it (study.best_trials)
        front = {t.number for t in study.best_trials}
        frame["pareto"] = frame["number"].isin(front)
    frame["last_step"] = frame["last_step"].astype("Int64")
    frame["frames"] = frame["frames"].astype("Int64")
    distributions: dict[str, str] = {}
    for t in trials:
        for name, dist in t.distributions.items():
            distributions.setdefault(name, distribution_to_json(dist))
    metrics = [m for m in frame["objective_metric"].dropna().unique()]
    names = list(study.user_attrs.get("objective_metrics") or [])
    if len(names) != len(directions):
        names = [metrics[0] if metrics else "value"] if not multi else [f"objective {i}" for i in range(len(directions))]
    frame.attrs.update({
        "study_name": study.study_name,
        "direction": directions[0],  # of `value` (the first objective of a multi-objective study)
        "directions": directions,
        "objective_metrics": names,  # one per direction
        "storage": storage_label,
        "distributions": distributions,  # JSON strings: rebuild trials for optuna.importance
        "objective_metric": metrics[0] if metrics else None,
        "search_space": json.loads(json.dumps(study.user_attrs.get("search_space", {}))),
        "reevaluation": study.user_attrs.get("reevaluation"),  # fresh-seed results, if any
    })
    return frame


def load_study(storage: str | Path | None, study_name: str, base_dir: Path | None = None) -> pd.DataFrame:
    """A study as a DataFrame: number, state, value, params_<name>, duration_s, last_step (last
    reported step), frames, wandb_run_id, wandb_run_dir, output_dir, objective_metric,
    fail_reason. ``storage`` is a journal path or an Optuna URL (None: ``sweeps_db/<study>.journal``
    under ``base_dir``, default the current directory, or ``$WORKBENCH_SWEEP_STORAGE``).
    A multi-objective study adds values_0, values_1, ... (one per objective; ``value`` is the
    first) and ``pareto`` (on the front: ``study.best_trials``).
    ``frame.attrs`` holds study_name, direction (of ``value``), directions, objective_metrics,
    storage (password redacted), distributions."""
    spec = storage_spec(storage, study_name, base_dir)
    return study_frame(open_study(storage, study_name, base_dir), spec.redacted)


def param_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(PARAM_PREFIX)]


def param_name(column: str) -> str:
    return column[len(PARAM_PREFIX):]


def best_and_worst(frame: pd.DataFrame) -> tuple[int | None, int | None]:
    """Trial numbers of the best and worst COMPLETE trials (None when there are none)."""
    done = frame[(frame["state"] == "COMPLETE") & frame["value"].notna()]
    if done.empty:
        return None, None
    ordered = done.sort_values("value", ascending=frame.attrs.get("direction", "maximize") == "minimize")
    return int(ordered["number"].iloc[0]), int(ordered["number"].iloc[-1])
