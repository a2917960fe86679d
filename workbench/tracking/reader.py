"""Read a W&B run back from its local ``.wandb`` file, without a W&B server."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import pandas as pd

from .wandb_log import NotAWandbFileError, scan_log

# Written by Tracker into a run directory that a fallback run replaced.
SUPERSEDED_MARKER = "workbench-superseded.json"
# A run without an exit record whose file changed this recently is still running.
RUNNING_GRACE_S = 120.0


@dataclass
class RunData:
    path: Path  # the .wandb file
    run_dir: Path
    run_id: Optional[str] = None
    project: Optional[str] = None
    entity: Optional[str] = None
    name: Optional[str] = None
    group: Optional[str] = None
    job_type: Optional[str] = None
    notes: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    config: Dict[str, Any] = field(default_factory=dict)
    summary: Dict[str, Any] = field(default_factory=dict)
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    console: str = ""
    state: str = "running"  # finished | failed | crashed | running
    exit_code: Optional[int] = None
    truncated: bool = False  # stopped early at a cut or corrupt record
    problem: Optional[str] = None
    superseded_by: Optional[str] = None  # run id of the fallback run that holds everything

    def __repr__(self) -> str:
        return (
            f"RunData(run_id={self.run_id!r}, group={self.group!r}, state={self.state!r}, "
            f"rows={len(self.history)}, path={str(self.path)!r})"
        )


def find_wandb_files(root: Path | str) -> List[Path]:
    """All ``run-*.wandb`` files under root (a run dir, a wandb dir, an output dir...)."""
    root = Path(root)
    if root.is_file():
        return [root]
    files = {}
    for p in sorted(root.rglob("*.wandb")):
        if p.is_file() and not p.parent.is_symlink():  # skip wandb/latest-run/
            files.setdefault(p.resolve(), p)
    return sorted(files.values())


def _is_superseded(wandb_file: Path) -> bool:
    return (wandb_file.parent / SUPERSEDED_MARKER).exists()


def resolve_wandb_file(path: Path | str) -> Path:
    """Map a run dir / dir holding one run / Hydra output dir / .wandb file to the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if path.is_file():
        return path
    files = find_wandb_files(path)
    if len(files) > 1:  # a fallback leaves the replaced run behind; prefer the live one
        live = [f for f in files if not _is_superseded(f)]
        files = live or files
    if not files:
        raise FileNotFoundError(f"{path}: no .wandb run file under this directory")
    if len(files) > 1:
        listing = "\n  ".join(str(f.parent) for f in files)
        raise ValueError(f"{path}: holds {len(files)} runs, pass one of:\n  {listing}")
    return files[0]


def has_exit_record(wandb_file: Path | str) -> bool:
    """Whether the log already ends with the run's exit record (the file is complete)."""
    from wandb.proto import wandb_internal_pb2 as pb

    try:
        records = scan_log(Path(wandb_file).read_bytes(), wandb_file).records
    except (OSError, ValueError):
        return False
    for payload in reversed(records[-8:]):  # exit is followed by a few bookkeeping records at most
        record = pb.Record()
        try:
            record.ParseFromString(payload)
        except Exception:  # noqa: BLE001
            return False
        if record.WhichOneof("record_type") == "exit":
            return True
    return False


def _item_key(item: Any) -> str:
    return item.key or ".".join(item.nested_key)


def _item_value(item: Any) -> Any:
    kind = item.WhichOneof("value") if item.DESCRIPTOR.oneofs_by_name.get("value") else None
    if kind is not None and kind != "none":
        return getattr(item, kind) if kind != "json" else json.loads(item.json)
    if kind == "none":
        return None
    return json.loads(item.value_json)


def _set_nested(target: Dict[str, Any], item: Any, value: Any) -> None:
    keys = [item.key] if item.key else list(item.nested_key)
    for key in keys[:-1]:
        node = target.get(key)
        if not isinstance(node, dict):
            node = target[key] = {}
        target = node
    target[keys[-1]] = value


def _remove_nested(target: Dict[str, Any], item: Any) -> None:
    keys = [item.key] if item.key else list(item.nested_key)
    for key in keys[:-1]:
        target = target.get(key)
        if not isinstance(target, dict):
            return
    target.pop(keys[-1], None)


def read_run(path: Path | str) -> RunData:
    """Read a run from a run dir, a directory holding one run, or a ``.wandb`` file.

    Verifies chunk checksums; a run cut off mid-write (or with a corrupt chunk)
    is read up to its last whole record and flagged ``truncated``.
    Raises ``NotAWandbFileError`` for a file that is not a W&B log.
    """
    from wandb.proto import wandb_internal_pb2 as pb  # heavy import; only when reading

    wandb_file = resolve_wandb_file(path)
    scan = scan_log(wandb_file.read_bytes(), wandb_file)
    run = RunData(path=wandb_file, run_dir=wandb_file.parent, truncated=scan.truncated, problem=scan.problem)

    rows: List[Dict[str, Any]] = []
    config: Dict[str, Any] = {}
    summary_raw: Dict[str, Any] = {}  # key -> protobuf item; decoded once at the end
    console: List[str] = []
    for payload in scan.records:
        record = pb.Record()
        try:
            record.ParseFromString(payload)
        except Exception:  # checksum was fine, so this is a writer/reader mismatch
            run.truncated, run.problem = True, "undecodable record"
            break
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {_item_key(item): _item_value(item) for item in record.history.item}
            row.setdefault("_step", record.history.step.num)
            rows.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                summary_raw[_item_key(item)] = item
            for item in record.summary.remove:
                summary_raw.pop(_item_key(item), None)
        elif kind == "config":
            for item in record.config.update:
                _set_nested(config, item, json.loads(item.value_json))
            for item in record.config.remove:
                _remove_nested(config, item)
        elif kind == "run":
            r = record.run
            run.run_id, run.project, run.entity = r.run_id, r.project or None, r.entity or None
            run.name, run.group = r.display_name or None, r.run_group or None
            run.job_type, run.notes, run.tags = r.job_type or None, r.notes or None, list(r.tags)
            for item in r.config.update:
                _set_nested(config, item, json.loads(item.value_json))
            for item in r.summary.update:
                summary_raw[_item_key(item)] = item
        elif kind == "output_raw":
            console.append(record.output_raw.line)
        elif kind == "output":
            console.append(record.output.line)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code

    config.pop("_wandb", None)  # wandb's own bookkeeping, not the user's config
    run.config = config
    run.summary = {k: _item_value(v) for k, v in summary_raw.items() if not k.startswith("_wandb")}
    run.history = pd.DataFrame.from_records(rows) if rows else pd.DataFrame(columns=["_step"])
    run.console = "".join(console)
    if not run.run_id and wandb_file.stem.startswith("run-"):  # killed before its run record
        run.run_id = wandb_file.stem[len("run-") :]
    run.state = _state(run, wandb_file)
    marker = wandb_file.parent / SUPERSEDED_MARKER
    if marker.exists():
        try:
            run.superseded_by = json.loads(marker.read_text()).get("fallback_run_id") or "?"
        except (OSError, ValueError):
            run.superseded_by = "?"
    return run


def _state(run: RunData, wandb_file: Path) -> str:
    if run.exit_code is not None:
        return "finished" if run.exit_code == 0 else "failed"
    if run.truncated:
        return "crashed"
    try:
        age = time.time() - wandb_file.stat().st_mtime
    except OSError:
        return "crashed"
    return "running" if age < RUNNING_GRACE_S else "crashed"


__all__ = ["RunData", "read_run", "find_wandb_files", "resolve_wandb_file", "NotAWandbFileError"]
