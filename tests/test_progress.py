"""Training progress lines: one decimal, periodic without a terminal, a line when throughput collapses."""
from __future__ import annotations

import logging

from workbench.progress import Progress


def metrics(sps: float, train: float = -1193.236328125, evaluation: float | None = None) -> dict:
    out = {"info/sps": sps, "info/episode_reward": train}
    if evaluation is not None:
        out["eval/episode_reward"] = evaluation
    return out


def test_plain_lines_every_10th_and_last_iteration_with_one_decimal(caplog):
    log = logging.getLogger("test.progress")
    progress = Progress(12, log, label="trial 3", interactive=False)
    with caplog.at_level(logging.INFO, logger="test.progress"):
        for i in range(1, 13):
            progress.update(i, i * 100, metrics(1000.0, evaluation=-250.04 if i == 12 else None))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("trial 3 epoch 10/12 frames 1000 return -1193.2 eval - sps 1000")
    assert "epoch 12/12" in lines[1] and "eval -250.0" in lines[1]


def test_a_throughput_collapse_is_reported_once(caplog):
    log = logging.getLogger("test.progress.collapse")
    progress = Progress(100, log, interactive=False, every=1000)
    with caplog.at_level(logging.WARNING, logger="test.progress.collapse"):
        for i in range(1, 8):
            progress.update(i, i, metrics(80_000.0))
        progress.update(8, 8, metrics(2_000.0))  # 40x below the median
        progress.update(9, 9, metrics(1_500.0))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "2000 steps/s" in warnings[0] and "40x below" in warnings[0] and "torch_threads=1" in warnings[0]


def test_a_slow_start_is_not_a_collapse(caplog):
    log = logging.getLogger("test.progress.start")
    progress = Progress(100, log, interactive=False, every=1000)
    with caplog.at_level(logging.WARNING, logger="test.progress.start"):
        for i, sps in enumerate([500.0, 80_000.0, 80_000.0, 79_000.0, 81_000.0, 30_000.0], start=1):
            progress.update(i, i, metrics(sps))
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
