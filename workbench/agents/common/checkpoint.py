"""Checkpoint files: written atomically, read with ``weights_only=True`` (nothing arbitrary is unpickled)."""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the configured model."""


def save_atomic(state: dict, path: Path) -> None:
    """Write to a temp file beside ``path`` and rename, so a crash never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checked(path: Path | str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a workbench checkpoint: {err}") from err
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint {path} is not a workbench checkpoint (no 'model' entry)")
    return state


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
