"""Every composed config stays what it was: each case of ``composed_configs.CASES`` (every env with
its tuning, every packaged sweep with its ``hydra.sweeper``) composed from ``conf/`` equals its
snapshot in ``tests/data/composed/`` to the character. The snapshots were written before the
network presets (``conf/network/``) and the shared search space (``conf/search_space/``) took
the repeated blocks out of ``conf/tuning/`` and ``sweeps/``."""
from __future__ import annotations

import difflib

import pytest

from composed_configs import CASES, SNAPSHOTS, composed_text
from conftest import CONF_DIR


@pytest.mark.parametrize("name", sorted(CASES))
def test_composed_config_equals_its_snapshot(name):
    expected = (SNAPSHOTS / f"{name}.yaml").read_text()
    got = composed_text(CONF_DIR, CASES[name])
    diff = "".join(difflib.unified_diff(expected.splitlines(True), got.splitlines(True), "snapshot", "composed now"))
    assert got == expected, f"{name} ({' '.join(CASES[name])}) composes differently:\n{diff}"


def test_every_snapshot_is_a_case():
    assert sorted(p.stem for p in SNAPSHOTS.glob("*.yaml")) == sorted(CASES)
