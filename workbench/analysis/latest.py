"""Find the newest local sweep or run: the default target of the notebooks."""
from __future__ import annotations

import os
from pathlib import Path

import optuna

from workbench.tracking.reader import SUPERSEDED_MARKER, find_wandb_files

from .errors import AnalysisError, RunNotFoundError, StorageNotFoundError
from .study import open_existing_storage, storage_spec

STORAGE_PATTERNS = ("sweeps_db/*.journal", "sweeps_db/*.db", "sweeps_db/*.sqlite")
RUN_FOLDERS = ("outputs", "multirun")


def _roots(root: str | Path | None) -> list[Path]:
    # A notebook runs in notebooks/, sweeps are started one level up: look in both.
    if root is not None:
        return [Path(root)]
    here = Path.cwd()
    return [here, here.parent]


def _url_for(path: Path) -> str:
    return str(path) if path.suffix == ".journal" else f"sqlite:///{path}"


def latest_study(root: str | Path | None = None) -> tuple[str, str]:
    """``(storage, study_name)`` of the most recently started study in the newest local storage
    file (``<root>/sweeps_db/*.journal`` or ``*.db``; root defaults to ``.`` then ``..``)."""
    roots = _roots(root)
    for folder in roots:
        files = [p for pattern in STORAGE_PATTERNS for p in folder.glob(pattern) if p.is_file()]
        for path in sorted(files, key=lambda p: p.stat().st_mtime, reverse=True):
            storage = _url_for(path.resolve())
            summaries = optuna.get_all_study_summaries(open_existing_storage(storage_spec(storage, "_")))
            if not summaries:
                continue
            started = [s for s in summaries if s.datetime_start is not None]
            newest = max(started, key=lambda s: s.datetime_start) if started else summaries[-1]
            return storage, newest.study_name
    where = ", ".join(str(r.resolve()) for r in roots)
    raise StorageNotFoundError(f"no local sweep found under {where} (sweeps_db/*.journal); "
                               "run `workbench sweep smoke` or set WORKBENCH_STORAGE and WORKBENCH_STUDY")


def resolve_study(storage: str | None = None, study: str | None = None,
                  root: str | Path | None = None) -> tuple[str, str]:
    """Fill what is not given: a study name alone means ``<root>/sweeps_db/<study>.journal``
    (root: ``.`` then ``..``); nothing means the latest local study."""
    if storage and study:
        return storage, study
    if study:
        for folder in _roots(root):
            candidate = folder / "sweeps_db" / f"{study}.journal"
            if candidate.is_file():
                return str(candidate.resolve()), study
        raise StorageNotFoundError(f"no journal for study {study!r} under sweeps_db/; set WORKBENCH_STORAGE")
    if storage:  # a storage alone: its most recently started study
        summaries = optuna.get_all_study_summaries(open_existing_storage(storage_spec(storage, "_")))
        if not summaries:
            raise AnalysisError(f"{storage_spec(storage, '_').redacted} holds no study")
        started = [s for s in summaries if s.datetime_start is not None]
        return storage, (max(started, key=lambda s: s.datetime_start) if started else summaries[-1]).study_name
    return latest_study(root)


def latest_run(root: str | Path | None = None) -> Path:
    """The run directory of the most recently written local W&B run under ``outputs/`` and
    ``multirun/`` (root defaults to ``.`` then ``..``); fallback-replaced runs are skipped."""
    roots = _roots(root)
    for folder in roots:
        files = [f for name in RUN_FOLDERS if (folder / name).is_dir() for f in find_wandb_files(folder / name)]
        files = [f for f in files if not (f.parent / SUPERSEDED_MARKER).exists()]
        if files:
            return max(files, key=lambda f: f.stat().st_mtime).parent
    where = ", ".join(str(r.resolve()) for r in roots)
    raise RunNotFoundError(f"no local W&B run found under {where} (outputs/, multirun/); "
                           "run `workbench train` or set WORKBENCH_RUN")


def env_default(name: str) -> str | None:
    """An environment variable, with empty meaning unset (papermill-style parameters)."""
    value = os.environ.get(name, "").strip()
    return value or None
