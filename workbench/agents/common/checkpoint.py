"""Checkpoint files: written atomically, read with ``weights_only=True`` (nothing arbitrary is unpickled)."""
from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the configured model."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (disk full, read-only directory); the previous file is intact."""


# How to go on after a refused checkpoint; never "load it with weights_only=False", which would run
# whatever code the file carries.
SAFE_WAY_ON = ("pass a .ckpt written by workbench train (last.ckpt, epoch_N.ckpt, score_based.ckpt), "
               "or leave checkpoint unset to start fresh")


def save_atomic(state: dict, path: Path) -> None:
    """Write to a temp file beside ``path``, fsync it, then rename: a crash or a power loss leaves
    either the old checkpoint or the new one, never a torn file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        raise _write_error(path, err) from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)  # makes the rename itself durable
    except (OSError, RuntimeError) as err:  # torch reports a failed write as RuntimeError
        Path(tmp).unlink(missing_ok=True)
        raise _write_error(path, _os_cause(err) or err) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some file systems do not open directories; the data itself is synced
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _os_cause(err: BaseException) -> OSError | None:
    """The OSError under a RuntimeError raised by torch's writer, if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError):
            return err
        err = err.__cause__ or err.__context__
    return None


def _write_error(path: Path, err: BaseException) -> CheckpointWriteError:
    cause = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
    kept = f"the last good {path.name} is kept" if path.exists() else f"no {path.name} was written"
    return CheckpointWriteError(f"cannot write checkpoint {path}: {cause}; {kept} (free space or make "
                                f"{path.parent} writable, then rerun the same command to resume)")


def load_checked(path: Path | str) -> dict:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a checkpoint file; {SAFE_WAY_ON}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's reader fails in many ways on a file that is not a checkpoint
        raise CheckpointError(f"checkpoint {path} is not a workbench checkpoint: {_unreadable_because(err)}; "
                              f"{SAFE_WAY_ON}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint {path} is not a workbench checkpoint: no 'model' entry; {SAFE_WAY_ON}")
    return state


def _unreadable_because(err: Exception) -> str:
    # torch's weights-only unpickler names a refused class as "... unsupported GLOBAL module.name ..."
    if isinstance(err, pickle.UnpicklingError) and "GLOBAL" in str(err):
        return "it holds objects other than tensors and plain data (refused unread, nothing was run)"
    return "not a readable torch checkpoint (corrupt, truncated or another kind of file)"


def check_model_state(saved: dict, expected: dict, path: Path | str) -> None:
    """Refuse a checkpoint whose parameters do not match the configured model, naming the first differences."""
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    reshaped = sorted(k for k in set(saved) & set(expected) if tuple(saved[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or reshaped:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}")
        if reshaped:
            parts.append("shape mismatch " + ", ".join(
                f"{k}: checkpoint {tuple(saved[k].shape)} vs config {tuple(expected[k].shape)}" for k in reshaped[:5]))
        raise CheckpointError(f"checkpoint {path} does not match the configured model: {'; '.join(parts)}")
