"""``workbench sweep --devices cpu,cuda:0,cuda:1``: one device per local worker.

Worker i gets ``devices[i % len(devices)]``. A CUDA worker sees only its own GPU: its
``CUDA_VISIBLE_DEVICES`` names that one GPU and its trials get the override ``device=cuda``
(inside the worker, its only GPU). Hiding the other GPUs, rather than passing
``device=cuda:N``, keeps everything in the process on that GPU, including code that asks for
"cuda" or "auto" and CUDA's own context, which otherwise opens on GPU 0 too. A CPU worker
gets ``device=cpu`` and sees no GPU at all.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping

ENV_VISIBLE = "CUDA_VISIBLE_DEVICES"
ALLOWED = "cpu or cuda:N (N a GPU index, e.g. --devices cuda:0,cuda:1)"
_DEVICE = re.compile(r"^(cpu|cuda:(\d+))$")


class DeviceError(ValueError):
    """A bad ``--devices`` value; the message is the one line the user sees."""


@dataclass(frozen=True)
class WorkerDevice:
    name: str  # as the user wrote it: cpu, cuda:1
    override: str  # the Hydra override every trial of the worker gets
    env: Mapping[str, str]  # what the worker's environment gets


def parse_devices(text: str) -> list[str]:
    """The comma-separated list, each entry checked; raises DeviceError naming a bad one."""
    entries = [entry.strip() for entry in text.split(",")]
    if not any(entries):
        raise DeviceError(f"--devices {text!r} is empty; allowed: a comma-separated list of {ALLOWED}")
    for entry in entries:
        if not _DEVICE.match(entry):
            raise DeviceError(f"--devices: {entry!r} is not a device; allowed: {ALLOWED}")
    return entries


def gpu_count() -> int:
    import torch  # only when a cuda entry asks for it: the parent stays light otherwise

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_available(devices: list[str], count: Callable[[], int] = gpu_count) -> None:
    """Every cuda:N must be a GPU this process sees (N counts the visible GPUs from 0)."""
    indices = [int(m.group(2)) for m in map(_DEVICE.match, devices) if m and m.group(2) is not None]
    if not indices:
        return
    visible = count()
    for index in indices:
        if index >= visible:
            seen = f"GPUs cuda:0..cuda:{visible - 1}" if visible else "no GPU"
            raise DeviceError(f"--devices: cuda:{index} is not available (this machine has {seen}); "
                              f"allowed: {ALLOWED}")


def _physical(index: int, parent_visible: str | None) -> str:
    """cuda:N counts the GPUs the parent sees; a parent already limited by CUDA_VISIBLE_DEVICES
    (SLURM sets it) maps N through its own list."""
    if parent_visible:
        listed = [part.strip() for part in parent_visible.split(",") if part.strip()]
        if index < len(listed):
            return listed[index]
    return str(index)


def worker_device(devices: list[str], worker: int, parent_visible: str | None = None) -> WorkerDevice:
    name = devices[worker % len(devices)]
    if name == "cpu":
        return WorkerDevice(name, "device=cpu", {ENV_VISIBLE: ""})
    index = int(name.split(":")[1])
    return WorkerDevice(name, "device=cuda", {ENV_VISIBLE: _physical(index, parent_visible)})
