"""Glue to the training side (``workbench.train``), tolerant of it not being importable.

``run_training(cfg, output_dir, callbacks)`` takes a ``TrainCallbacks``; the fake training
used by tests and benchmarks accepts any object with ``on_start``/``on_iteration`` (``on_end``: the W&B summary and exit code).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class _Callbacks:
    on_start: Callable[[dict], None] | None = None
    on_iteration: Callable[[int, dict], None] | None = None
    on_end: Callable[[BaseException | None], tuple[dict, int]] | None = None


def make_callbacks(on_start: Callable, on_iteration: Callable, on_end: Callable | None = None) -> Any:
    try:
        from workbench.train import TrainCallbacks
    except ImportError:
        return _Callbacks(on_start=on_start, on_iteration=on_iteration, on_end=on_end)
    return TrainCallbacks(on_start=on_start, on_iteration=on_iteration, on_end=on_end)


@dataclass
class _MemberCallbacks:
    on_start: Callable[[int, dict], None] | None = None
    on_iteration: Callable[[int, int, dict], None] | None = None
    on_end: Callable[[int, BaseException | None], tuple[dict, int]] | None = None


def make_member_callbacks(on_start: Callable, on_iteration: Callable, on_end: Callable | None = None) -> Any:
    """``MemberCallbacks`` for ``run_population`` (the member's index first)."""
    try:
        from workbench.train_population import MemberCallbacks
    except ImportError:
        return _MemberCallbacks(on_start=on_start, on_iteration=on_iteration, on_end=on_end)
    return MemberCallbacks(on_start=on_start, on_iteration=on_iteration, on_end=on_end)
