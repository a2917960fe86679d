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

    The stages: find the file, split it into records (``scan_log``), gather what the records
    say (``_gather``), make the RunData of it (``_run_data``), then judge its state.
    """
    wandb_file = resolve_wandb_file(path)
    scan = scan_log(wandb_file.read_bytes(), wandb_file)
    run = _run_data(wandb_file, _gather(scan.records), scan.truncated, scan.problem)
    run.state = _state(run, wandb_file)
    run.superseded_by = _superseded_by(wandb_file)
    return run


@dataclass
class _Records:
    """What the records of one log say, in their order (a later record wins)."""

    rows: List[Dict[str, Any]] = field(default_factory=list)
    config: Dict[str, Any] = field(default_factory=dict)
    summary: Dict[str, Any] = field(default_factory=dict)  # key -> protobuf item; decoded once at the end
    console: List[str] = field(default_factory=list)
    run: Any = None  # the last run record: id, names, tags
    exit_code: Optional[int] = None
    undecodable: bool = False  # stopped at a record that would not parse


def _gather(payloads: List[bytes]) -> _Records:
    from wandb.proto import wandb_internal_pb2 as pb  # heavy import; only when reading

    out = _Records()
    for payload in payloads:
        record = pb.Record()
        try:
            record.ParseFromString(payload)
        except Exception:  # checksum was fine, so this is a writer/reader mismatch
            out.undecodable = True
            break
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {_item_key(item): _item_value(item) for item in record.history.item}
            row.setdefault("_step", record.history.step.num)
            out.rows.append(row)
        elif kind == "summary":
            _update_summary(out.summary, record.summary.update)
            for item in record.summary.remove:
                out.summary.pop(_item_key(item), None)
        elif kind == "config":
            _update_config(out.config, record.config.update)
            for item in record.config.remove:
                _remove_nested(out.config, item)
        elif kind == "run":
            out.run = record.run
            _update_config(out.config, record.run.config.update)
            _update_summary(out.summary, record.run.summary.update)
        elif kind in ("output_raw", "output"):
            out.console.append(getattr(record, kind).line)
        elif kind == "exit":
            out.exit_code = record.exit.exit_code
    return out


def _update_config(config: Dict[str, Any], items: Any) -> None:
    for item in items:
        _set_nested(config, item, json.loads(item.value_json))


def _update_summary(summary: Dict[str, Any], items: Any) -> None:
    for item in items:
        summary[_item_key(item)] = item


def _run_data(wandb_file: Path, records: _Records, truncated: bool, problem: Optional[str]) -> RunData:
    run = RunData(path=wandb_file, run_dir=wandb_file.parent, truncated=truncated, problem=problem)
    if records.undecodable:
        run.truncated, run.problem = True, "undecodable record"
    r = records.run
    if r is not None:
        run.run_id, run.project, run.entity = r.run_id, r.project or None, r.entity or None
        run.name, run.group = r.display_name or None, r.run_group or None
        run.job_type, run.notes, run.tags = r.job_type or None, r.notes or None, list(r.tags)
    if not run.run_id and wandb_file.stem.startswith("run-"):  # killed before its run record
        run.run_id = wandb_file.stem[len("run-") :]
    records.config.pop("_wandb", None)  # wandb's own bookkeeping, not the user's config
    run.config = records.config
    run.summary = {k: _item_value(v) for k, v in records.summary.items() if not k.startswith("_wandb")}
    run.history = pd.DataFrame.from_records(records.rows) if records.rows else pd.DataFrame(columns=["_step"])
    run.console = "".join(records.console)
    run.exit_code = records.exit_code
    return run


def _superseded_by(wandb_file: Path) -> Optional[str]:
    """The fallback run's id when a Tracker marked this run as replaced ("?" if the marker is unreadable)."""
    marker = wandb_file.parent / SUPERSEDED_MARKER
    if not marker.exists():
        return None
    try:
        return json.loads(marker.read_text()).get("fallback_run_id") or "?"
    except (OSError, ValueError):
        return "?"


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
