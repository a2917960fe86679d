"""Each trial's W&B history: from the local ``.wandb`` file, else from the W&B public API."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from workbench.tracking import read_run
from workbench.tracking.reader import find_wandb_files
from workbench.metric_names import INFO

log = logging.getLogger(__name__)
STEP = INFO.frames


class Histories(dict):
    """``{trial number: history DataFrame}``; ``missing`` maps the trials without one to why."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.missing: dict[int, str] = {}
        self.sources: dict[int, str] = {}  # "local" or "api"


def _text(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def _local_file(row: pd.Series) -> Path | None:
    """The trial's run directory (or its Hydra output dir) when a .wandb file is under it."""
    for key in ("wandb_run_dir", "output_dir"):
        folder = _text(row.get(key))
        if folder and Path(folder).is_dir() and find_wandb_files(folder):
            return Path(folder)
    return None


def _was_online(row: pd.Series) -> bool:
    # wandb names local copies of online runs run-<time>-<id>, offline ones offline-run-...
    run_dir = _text(row.get("wandb_run_dir"))
    return bool(run_dir) and Path(run_dir).name.startswith("run-")


def project_and_entity(row: pd.Series, project: str | None, entity: str | None) -> tuple[str | None, str | None]:
    output_dir = _text(row.get("output_dir"))
    config_file = Path(output_dir) / "resolved_config.yaml" if output_dir else None
    if config_file is not None and config_file.is_file() and (project is None or entity is None):
        try:
            logger = (yaml.safe_load(config_file.read_text()) or {}).get("logger") or {}
        except (OSError, yaml.YAMLError):
            logger = {}
        project = project or logger.get("project")
        entity = entity or logger.get("entity")
    return project or os.environ.get("WANDB_PROJECT"), entity or os.environ.get("WANDB_ENTITY")


def default_api():
    """``wandb.Api()`` (needs a key and a network; raises otherwise)."""
    import wandb

    return wandb.Api(timeout=30)


def api_history(api: Any, run_id: str, project: str | None, entity: str | None) -> pd.DataFrame:
    """All rows of an online run through the public API (``scan_history``: unsampled)."""
    path = "/".join(p for p in (entity, project, run_id) if p)
    run = api.run(path)
    frame = pd.DataFrame.from_records(list(run.scan_history()))
    if STEP in frame.columns:
        frame = frame.sort_values(STEP, kind="stable", ignore_index=True)
    return frame


def join_histories(frame: pd.DataFrame, *, api: Any = None, project: str | None = None,
                   entity: str | None = None) -> Histories:
    """Read each trial's W&B history (one row per iteration, step metric ``info/frames``).

    Local ``.wandb`` files first (``wandb_run_dir``, then ``output_dir``). A trial whose local
    files are gone is fetched through the W&B public API when its run was online or when an
    ``api`` object is given (``wandb.Api()`` is made on demand); project and entity come from
    the arguments, the trial's ``resolved_config.yaml``, or ``WANDB_PROJECT``/``WANDB_ENTITY``.
    Trials that have neither end up in ``result.missing`` with the reason; nothing raises."""
    result = Histories()
    api_error: Exception | None = None
    for _, row in frame.iterrows():
        number = int(row["number"])
        run_id = _text(row.get("wandb_run_id"))
        local = _local_file(row)
        if local is not None:
            try:
                result[number] = read_run(local).history
                result.sources[number] = "local"
                continue
            except Exception as exc:  # noqa: BLE001 - a broken file is reported, not raised
                result.missing[number] = f"unreadable W&B file under {local}: {exc}"
                continue
        if run_id is None:
            result.missing[number] = f"no W&B run recorded (trial {row['state']})"
            continue
        if api is None and not _was_online(row):
            where = _text(row.get("wandb_run_dir")) or _text(row.get("output_dir")) or "?"
            result.missing[number] = f"W&B files of run {run_id} are missing ({where})"
            continue
        try:
            if api is None:
                if api_error is not None:  # no key or no network: do not wait for it once per trial
                    raise api_error
                try:
                    api = default_api()
                except Exception as exc:  # noqa: BLE001
                    api_error = exc
                    raise
            proj, ent = project_and_entity(row, project, entity)
            result[number] = api_history(api, run_id, proj, ent)
            result.sources[number] = "api"
        except Exception as exc:  # noqa: BLE001
            result.missing[number] = f"no local files for run {run_id} and the W&B API failed: {exc}"
    for number, reason in result.missing.items():
        log.warning("trial %d: %s", number, reason)
    return result


def long_history(histories: dict[int, pd.DataFrame], keys: list[str] | None = None) -> pd.DataFrame:
    """All histories stacked, with a ``trial`` column (keys: the columns to keep)."""
    parts = []
    for number, history in histories.items():
        part = history if keys is None else history.reindex(columns=[STEP, *[k for k in keys if k != STEP]])
        parts.append(part.assign(trial=number))
    if parts:
        return pd.concat(parts, ignore_index=True)
    # no history at all (runs gone): the asked-for columns still exist, so callers can select them
    return pd.DataFrame(columns=["trial", *([STEP, *[k for k in keys if k != STEP]] if keys else [])])
