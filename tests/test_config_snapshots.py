"""Every composed config stays what it was: each case of ``composed_configs.CASES`` (every env with
its tuning, every packaged sweep with its ``hydra.sweeper``) composed from ``conf/`` equals its
snapshot in ``tests/data/composed/`` to the character. The snapshots were written before the
network presets (``conf/network/``) and the shared search space (``conf/search_space/``) took
the repeated blocks out of ``conf/tuning/`` and ``sweeps/``. Last, a user's sweep file takes the
shared search space and adds a parameter of its own."""
from __future__ import annotations

import difflib
from pathlib import Path

import pytest
import yaml

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


USER_SWEEP = """\
# @package _global_
defaults:
  - /search_space@hydra.sweeper: ppo_knobs
  - override /hydra/sweeper: workbench_optuna
hydra:
  sweeper:
    params:
      agent.gamma: interval(0.95, 0.999)
"""


def test_a_user_sweep_builds_on_the_shared_search_space(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hydra_plugins.workbench_searchpath import register_user_sweeps
    from workbench.config import register_configs

    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "user_space_test.yaml").write_text(USER_SWEEP)
    assert register_user_sweeps(tmp_path / "sweeps", Path(CONF_DIR) / "sweep") == ["user_space_test"]
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        sweeper = compose(config_name="config", overrides=["+sweep=user_space_test"], return_hydra_config=True).hydra.sweeper
    shared = yaml.safe_load((Path(CONF_DIR) / "search_space" / "ppo_knobs.yaml").read_text())
    assert len(shared["params"]) == 9
    assert list(sweeper.params) == [*shared["params"], "agent.gamma"]  # the shared ones first, in their order
    assert dict(sweeper.conditions) == shared["conditions"]
