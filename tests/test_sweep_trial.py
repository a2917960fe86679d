"""run_trial in-process with the fake training: complete, pruned, NaN, raising, per-seed mode."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

import numpy as np

from workbench.sweep.errors import SweepConfigError
from workbench.testing.fake_sweep import run_population, run_training
from workbench.sweep.objective import ObjectiveSettings, aggregate, iqm
from workbench.testing.fake_sweep.harness import REPO_ROOT
from workbench.sweep.storage import StorageSpec, open_storage
from workbench.sweep.trial import run_trial

FAKE_CONF = REPO_ROOT / "workbench" / "testing" / "fake_sweep" / "conf"


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


class CountingPopulation:
    """The fake population runner, counting its calls (the seeds must train as ONE population)."""

    def __init__(self):
        self.calls = []

    def __call__(self, cfg, output_dir, callbacks=None):
        self.calls.append(list(cfg.population.seeds))
        return run_population(cfg, output_dir, callbacks)


def no_single_runs(*args, **kwargs):
    raise AssertionError("objective.seeds must not train the seeds one after another")


def test_per_seed_mode_reports_seed_index_for_wilcoxon(setup):
    study, make, tmp_path = setup
    trial, cfg, sweeper = make(objective={"metric": "eval/episode_reward", "seeds": [0, 1, 2]},
                               pruner={"_target_": "optuna.pruners.WilcoxonPruner"})
    runner = CountingPopulation()
    outcome = run_trial(cfg, tmp_path / "out", no_single_runs, sweeper, run_population=runner)
    frozen = study.trials[trial.number]
    assert outcome.state == "COMPLETE" and runner.calls == [[0, 1, 2]]
    assert sorted(frozen.intermediate_values) == [0, 1, 2]  # reported at the end, step = seed index
    per_seed = frozen.user_attrs["seed_values"]
    assert [frozen.intermediate_values[i] for i in range(3)] == [per_seed[str(s)] for s in (0, 1, 2)]
    assert frozen.value == pytest.approx(sum(frozen.intermediate_values.values()) / 3)
    assert len(set(frozen.user_attrs["wandb_run_ids"])) == 3


@pytest.mark.parametrize("how", ["mean", "median", "iqm"])
def test_seeds_train_as_one_population_and_report_the_aggregate_each_iteration(setup, how):
    study, make, tmp_path = setup
    seeds = [3, 4, 5, 6]
    trial, cfg, sweeper = make(objective={"metric": "eval/episode_reward", "window": 2, "seeds": seeds,
                                          "aggregate": how})
    runner = CountingPopulation()
    outcome = run_trial(cfg, tmp_path / "out", no_single_runs, sweeper, run_population=runner)
    frozen = study.trials[trial.number]
    assert outcome.state == "COMPLETE" and runner.calls == [seeds]
    assert sorted(frozen.intermediate_values) == list(range(2, 9))  # steps are iterations (from the 1st eval)
    values = [frozen.user_attrs["seed_values"][str(s)] for s in seeds]
    assert len(set(values)) == 4  # the seeds differ
    assert frozen.value == pytest.approx(aggregate(values, how))
    assert frozen.intermediate_values[8] == pytest.approx(frozen.value)  # the last report is the value
    attrs = frozen.user_attrs
    assert attrs["seeds"] == seeds and len(set(attrs["wandb_run_ids"])) == 4
    assert attrs["output_dirs"] == [str(tmp_path / "out" / f"member_{i}") for i in range(4)]
    assert attrs["wandb_run_id"] == attrs["wandb_run_ids"][0]


def test_seeds_population_is_pruned_on_the_aggregate(setup):
    study, make, tmp_path = setup
    for value in (1000.0, 900.0):  # two far better finished trials
        study.add_trial(optuna.trial.create_trial(value=value, intermediate_values={2: value, 4: value}))
    trial, cfg, sweeper = make(objective={"metric": "eval/episode_reward", "seeds": [0, 1]},
                               pruner={"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1})
    outcome = run_trial(cfg, tmp_path / "out", no_single_runs, sweeper, run_population=run_population)
    assert outcome.state == "PRUNED" and study.trials[trial.number].last_step == 2


def test_aggregates_against_hand_worked_examples():
    seeds = [1.0, 2.0, 3.0, 4.0, 100.0]
    assert iqm(seeds) == 3.0  # n=5: one value cut at each end, mean of 2, 3, 4
    assert iqm([8.0, 1.0, 7.0, 2.0, 6.0, 3.0, 5.0, 4.0]) == 4.5  # n=8: two cut each end, mean of 3..6
    assert iqm([1.0, 5.0]) == 3.0 and iqm([7.0]) == 7.0  # n < 4: nothing to cut
    assert aggregate(seeds, "mean") == 22.0 and aggregate(seeds, "median") == 3.0
    from scipy.stats import trim_mean
    rng = np.random.default_rng(0)
    for n in range(1, 12):
        x = rng.normal(size=n)
        assert iqm(x) == pytest.approx(trim_mean(x, 0.25))
    with pytest.raises(SweepConfigError, match="aggregate='mode' is not allowed: one of mean, median, iqm"):
        ObjectiveSettings.from_config({"aggregate": "mode"})


@pytest.mark.slow
def test_real_seeds_train_as_one_population_each_seed_its_own_run(tmp_path: Path, monkeypatch, tiny_config):
    """objective.seeds on the real app: one population (member_<i>/ dirs), one W&B run per seed,
    each linked from the trial, the value the mean of the seeds' objectives."""
    from workbench.tracking import read_run
    from workbench.train import run_training as real_training
    from workbench.train_population import run_population as real_population

    monkeypatch.delenv("WORKBENCH_SWEEP_STORAGE", raising=False)
    journal = tmp_path / "p.journal"
    study = optuna.create_study(study_name="p", storage=open_storage(StorageSpec(str(journal), "journal")),
                                direction="maximize")
    trial = study.ask()
    trial.suggest_float("agent.e_clip", 0.1, 0.3)
    cfg = tiny_config("logger.mode=offline", "logger.name=p-0", "logger.group=p")
    OmegaConf.set_struct(cfg, False)
    cfg.trial = {"study_name": "p", "number": trial.number, "storage": str(journal)}
    calls = []

    def population(*args):
        calls.append(1)
        return real_population(*args)

    sweeper = {"objective": {"metric": "eval/episode_reward", "window": 1, "seeds": [0, 1]}}
    outcome = run_trial(cfg, tmp_path / "t", no_single_runs, sweeper, run_population=population)
    frozen = study.trials[trial.number]
    assert outcome.state == "COMPLETE" and calls == [1]
    values = [frozen.user_attrs["seed_values"][s] for s in ("0", "1")]
    assert frozen.value == pytest.approx(sum(values) / 2)
    runs = [read_run(d) for d in frozen.user_attrs["wandb_run_dirs"]]
    assert [r.run_id for r in runs] == frozen.user_attrs["wandb_run_ids"] and len(set(frozen.user_attrs["wandb_run_ids"])) == 2
    for seed, run, value in zip((0, 1), runs, values):
        assert run.config["seed"] == seed and run.config["logger"]["name"] == f"p-0-seed{seed}"
        assert run.summary["trial/state"] == "COMPLETE" and run.summary["trial/value"] == pytest.approx(value)
    assert frozen.user_attrs["output_dirs"] == [str(tmp_path / "t" / f"member_{i}") for i in (0, 1)]
