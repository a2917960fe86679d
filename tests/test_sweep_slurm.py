"""submitit's job watcher under SLURM without accounting: its "Bypassing sacct error" warning
is dropped there (and only there)."""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from workbench.sweep import slurm


def fake_scontrol(directory: Path, accounting: str | None, code: int = 0) -> None:
    """An ``scontrol`` on PATH that prints a config with ``AccountingStorageType = <accounting>``."""
    lines = ["Configuration data as of 2026-01-01T00:00:00", "AccountingStorageHost   = (null)"]
    if accounting:
        lines.append(f"AccountingStorageType   = {accounting}")
    script = directory / "scontrol"
    script.write_text("#!/bin/sh\ncat <<'END'\n" + "\n".join(lines) + f"\nEND\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def path_with(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    slurm.accounting_off.cache_clear()
    yield tmp_path
    slurm.accounting_off.cache_clear()


@pytest.mark.parametrize("accounting, code, expected", [
    ("accounting_storage/none", 0, True),
    ("accounting_storage/slurmdbd", 0, False),
    (None, 0, None),  # scontrol says nothing about it
    ("accounting_storage/none", 1, None),  # scontrol failed
])
def test_accounting_is_read_from_scontrol(path_with, accounting, code, expected):
    fake_scontrol(path_with, accounting, code)
    assert slurm.accounting_off() is expected


def test_no_scontrol_means_unknown(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    slurm.accounting_off.cache_clear()
    try:
        assert slurm.accounting_off() is None
    finally:
        slurm.accounting_off.cache_clear()


def submitit_lines(caplog) -> list[str]:
    """What submitit's watcher logs on a failed sacct poll (core.InfoWatcher.update), and another line."""
    logger = logging.getLogger("submitit")
    with caplog.at_level(logging.INFO):
        for call in (1, 2):
            logger.warning(f"Call #{call} - Bypassing sacct error Command '['sacct', '-o', 'JobID,State,NodeList', "
                           f"'--parsable2', '-j', '42']' returned non-zero exit status 1., status may be inaccurate.")
        logger.warning("Caught signal SIGUSR2 on node1: this job is timed-out.")
    return [r.getMessage() for r in caplog.records if r.name == "submitit"]


@pytest.mark.parametrize("accounting, dropped", [("accounting_storage/none", True),
                                                ("accounting_storage/slurmdbd", False)])
def test_only_the_sacct_line_is_dropped_and_only_without_accounting(path_with, caplog, accounting, dropped):
    fake_scontrol(path_with, accounting)
    logger = logging.getLogger("submitit")
    before = list(logger.filters)
    # an in-process sweep earlier in the session may have installed it: start without it
    logger.filters[:] = [f for f in before if not isinstance(f, slurm.QuietSacct)]
    outside = list(logger.filters)
    slurm.quiet_sacct()
    slurm.quiet_sacct()  # once only
    try:
        assert len(logger.filters) == len(outside) + 1
        lines = submitit_lines(caplog)
    finally:
        logger.filters[:] = before
    assert "Caught signal SIGUSR2 on node1: this job is timed-out." in lines
    assert sum("Bypassing sacct error" in line for line in lines) == (0 if dropped else 2)
    told = [r.getMessage() for r in caplog.records if r.name == "workbench.sweep.slurm"]
    assert len(told) == (1 if dropped else 0)  # said once, not at every poll
