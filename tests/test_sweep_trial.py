"""run_trial in-process with the fake training: complete, pruned, NaN, raising, per-seed mode."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from workbench.sweep.fake import run_training
from workbench.sweep.fake.harness import REPO_ROOT
from workbench.sweep.storage import StorageSpec, open_storage
from workbench.sweep.trial import run_trial

FAKE_CONF = REPO_ROOT / "workbench" / "sweep" / "fake" / "conf"


@pytest.fixture
def setup(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WORKBENCH_SWEEP_STORAGE", raising=False)
    journal = tmp_path / "s.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(StorageSpec(str(journal), "journal")),
                                direction="maximize")

    def make(fake=None, **sweeper):
        trial = study.ask()
        trial.suggest_float("agent.e_clip", 0.1, 0.3)
        cfg = OmegaConf.merge(
            OmegaConf.load(FAKE_CONF / "config.yaml"),
            {"env": OmegaConf.load(FAKE_CONF / "env" / "pendulum.yaml")},
            {"trial": {"study_name": "s", "number": trial.number, "storage": str(journal)},
             "fake": fake or {}},
        )
        cfg.pop("defaults", None)
        cfg.pop("hydra", None)
        sweeper.setdefault("objective", {"metric": "eval/episode_reward", "window": 2, "report_every": 1})
        sweeper.setdefault("heartbeat", {"interval": 0.2})
        return trial, cfg, sweeper

    return study, make, tmp_path


def test_complete_trial_records_value_and_links(setup):
    study, make, tmp_path = setup
    trial, cfg, sweeper = make()
    outcome = run_trial(cfg, tmp_path / "out", run_training, sweeper)
    frozen = study.trials[trial.number]
    assert outcome.state == "COMPLETE" and frozen.state == TrialState.COMPLETE
    assert frozen.value == pytest.approx(outcome.value)
    assert frozen.user_attrs["wandb_run_id"].startswith("fake-")
    assert frozen.user_attrs["output_dir"] == str(tmp_path / "out")
    assert frozen.user_attrs["objective_metric"] == "eval/episode_reward"
    # 8 iterations (2048 steps / 8 envs x 32), first evaluation at iteration 2, reported from then on
    assert sorted(frozen.intermediate_values) == list(range(2, 9))
    assert cfg.trial.params == frozen.params  # the run's config carries the sampled params


def test_pruned_trial_keeps_its_last_value(setup):
    study, make, tmp_path = setup
    trial, cfg, sweeper = make(pruner={"_target_": "optuna.pruners.ThresholdPruner", "lower": 1e9,
                                       "n_warmup_steps": 3})
    outcome = run_trial(cfg, tmp_path / "out", run_training, sweeper)
    frozen = study.trials[trial.number]
    assert outcome.state == "PRUNED" and frozen.state == TrialState.PRUNED
    assert frozen.last_step == 3 and frozen.value == frozen.intermediate_values[3]
    assert frozen.user_attrs["frames"] == 3 * 8 * 32  # what it trained before the cut (for the report)


def test_a_trial_is_not_pruned_at_its_final_iteration(setup):
    study, make, tmp_path = setup
    # prunes every report from step 8 on, and 8 is the last of the fake's 8 iterations
    trial, cfg, sweeper = make(pruner={"_target_": "optuna.pruners.ThresholdPruner", "lower": 1e9,
                                       "n_warmup_steps": 8})
    outcome = run_trial(cfg, tmp_path / "out", run_training, sweeper)
    frozen = study.trials[trial.number]
    assert outcome.state == "COMPLETE" and frozen.state == TrialState.COMPLETE
    assert 8 in frozen.intermediate_values  # still reported


def test_real_runs_end_with_the_trial_state_in_their_summary(tmp_path: Path, monkeypatch, tiny_config):
    """A pruned trial's W&B run is finished (exit code 0), not failed; every run's summary holds
    trial/state and trial/value."""
    from workbench.tracking import read_run
    from workbench.train import run_training as real_training

    monkeypatch.delenv("WORKBENCH_SWEEP_STORAGE", raising=False)
    journal = tmp_path / "r.journal"
    study = optuna.create_study(study_name="r", storage=open_storage(StorageSpec(str(journal), "journal")),
                                direction="maximize")
    objective = {"metric": "eval/episode_reward", "window": 1, "report_every": 1}
    pruners = {"PRUNED": {"_target_": "optuna.pruners.ThresholdPruner", "lower": 1e9},
               "COMPLETE": {"_target_": "optuna.pruners.NopPruner"}}
    for expected, pruner in pruners.items():
        trial = study.ask()
        trial.suggest_float("agent.e_clip", 0.1, 0.3)
        cfg = tiny_config("logger.mode=offline")
        OmegaConf.set_struct(cfg, False)
        cfg.trial = {"study_name": "r", "number": trial.number, "storage": str(journal)}
        out = tmp_path / expected
        outcome = run_trial(cfg, out, real_training, {"objective": objective, "pruner": pruner})
        frozen = study.trials[trial.number]
        assert outcome.state == expected == frozen.state.name
        run = read_run(frozen.user_attrs["wandb_run_dir"])
        assert run.exit_code == 0 and run.state == "finished"
        assert run.summary["trial/state"] == expected
        assert run.summary["trial/value"] == pytest.approx(frozen.value)


def test_nan_objective_fails_with_reason(setup):
    study, make, tmp_path = setup
    trial, cfg, sweeper = make(fake={"nan_at_iteration": 3})
    outcome = run_trial(cfg, tmp_path / "out", run_training, sweeper)
    frozen = study.trials[trial.number]
    assert outcome.state == "FAIL" and frozen.state == TrialState.FAIL
    assert "nan" in frozen.user_attrs["fail_reason"].lower()


def test_raising_training_fails_with_reason_and_reraises(setup):
    study, make, tmp_path = setup
    trial, cfg, sweeper = make(fake={"raise_at_iteration": 2})
    with pytest.raises(RuntimeError, match="exploded"):
        run_trial(cfg, tmp_path / "out", run_training, sweeper)
    frozen = study.trials[trial.number]
    assert frozen.state == TrialState.FAIL
    assert frozen.user_attrs["fail_reason"].startswith("RuntimeError: fake training exploded")


def test_per_seed_mode_reports_seed_index_for_wilcoxon(setup):
    study, make, tmp_path = setup
    trial, cfg, sweeper = make(objective={"metric": "eval/episode_reward", "seeds": [0, 1, 2]},
                               pruner={"_target_": "optuna.pruners.WilcoxonPruner"})
    outcome = run_trial(cfg, tmp_path / "out", run_training, sweeper)
    frozen = study.trials[trial.number]
    assert outcome.state == "COMPLETE"
    assert sorted(frozen.intermediate_values) == [0, 1, 2]
    assert frozen.value == pytest.approx(sum(frozen.intermediate_values.values()) / 3)
    assert len(frozen.user_attrs["wandb_run_ids"]) == 3
