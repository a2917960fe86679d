"""The real training app under the sweeper: `workbench sweep smoke` with a tiny pendulum."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workbench.sweep.driver import budget_used
from workbench.tracking import read_run
from workbench.testing.fake_sweep.harness import env_for, open_study

pytestmark = pytest.mark.slow

TINY = ["env.num_envs=64", "agent.batch_size=1024", "agent.training_max_steps=16384",
        "agent.evaluator.eval_metrics_every=2", "agent.evaluator.num_envs=8",
        "agent.evaluator.max_eval_steps=50", "hydra.sweeper.objective.report_every=2"]


def test_smoke_sweep_on_the_real_app_links_trials_and_runs(tmp_path: Path):
    cmd = [sys.executable, "-m", "workbench.cli", "sweep", "smoke", "--workers", "2", "--n-trials", "4", *TINY]
    done = subprocess.run(cmd, cwd=tmp_path, env=env_for(), capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    study = open_study(tmp_path, "smoke")
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 4 and budget_used(trials) == 4
    for t in trials:
        assert t.state.is_finished() and t.state.name != "FAIL", t.user_attrs.get("fail_reason")
        assert {"agent.e_clip", "agent.tau", "agent.model.actor.actor_logstd"} <= set(t.params)
        run_dir = Path(t.user_attrs["output_dir"])
        assert t.user_attrs["wandb_run_id"] and Path(t.user_attrs["wandb_run_dir"]).is_dir()
        config = yaml.safe_load((run_dir / "resolved_config.yaml").read_text())
        assert config["logger"]["group"] == "smoke" and config["logger"]["job_type"] == "sweep-trial"
        assert config["trial"]["number"] == t.number and config["trial"]["study_name"] == "smoke"
        assert config["trial"]["params"] == t.params
        assert config["agent"]["e_clip"] == pytest.approx(t.params["agent.e_clip"])
        assert config["torch_threads"] == 1
        run = read_run(t.user_attrs["wandb_run_dir"])
        assert run.name == f"smoke-{t.number}" and run.state == "finished"  # pruned runs too
        assert run.summary["trial/state"] == t.state.name
        assert run.summary["trial/value"] == pytest.approx(t.value)


def test_out_of_range_search_space_is_refused_before_any_trial(tmp_path: Path):
    cmd = [sys.executable, "-m", "workbench.cli", "sweep", "smoke", "agent.e_clip=interval(-0.1, 0.3)"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env_for(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "agent.e_clip=-0.1 is not allowed: must be > 0" in done.stderr
    assert not (tmp_path / "multirun" / "smoke" / "0").exists()


def test_every_categorical_choice_is_validated_before_any_trial(tmp_path: Path):
    # 3000 sits in the middle of the list: neither end would have shown it
    cmd = [sys.executable, "-m", "workbench.cli", "sweep", "smoke", "agent.batch_size=choice(4096, 3000, 2048)"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env_for(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "agent.batch_size=3000" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "multirun" / "smoke" / "0").exists()
