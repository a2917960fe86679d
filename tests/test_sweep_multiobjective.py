"""Multi-objective sweeps: the objectives' grammar, costs (wall time, frames to a return), the
Pareto front (checked against a brute-force filter) in the summary, the analysis and the report,
pruners refused, and a misspelled objective metric that fails its trial instead of being replaced."""
from __future__ import annotations

import csv
import random

import numpy as np
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from workbench import analysis
from workbench.sweep.errors import SweepConfigError
from workbench.testing.fake_sweep.harness import REPO_ROOT, open_study, run, sweep_cli_cmd, write_sweep
from workbench.sweep.multiobjective import CostTracker, Objectives, check_multi_objective, parse_objectives
from workbench.sweep.objective import ObjectiveSettings
from workbench.sweep.storage import StorageSpec, open_storage
from workbench.sweep.summary import pareto_front, summary_rows, summary_table
from workbench.sweep.trial import run_trial

FAKE_CONF = REPO_ROOT / "workbench" / "testing" / "fake_sweep" / "conf"
MO = {"direction": ["maximize", "minimize"],
      "objective": {"metrics": ["eval/episode_reward", "frames_to:-300"], "window": 2}}


def dominates(a, b, directions) -> bool:
    signs = [1.0 if d == "maximize" else -1.0 for d in directions]
    at_least = all(s * x >= s * y for s, x, y in zip(signs, a, b))
    better = any(s * x > s * y for s, x, y in zip(signs, a, b))
    return at_least and better


def brute_force_front(trials, directions) -> set[int]:
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    return {t.number for t in done if not any(dominates(o.values, t.values, directions) for o in done)}


# ---- the grammar ------------------------------------------------------------------------

def test_single_objective_files_mean_what_they_did():
    assert parse_objectives("maximize", {"metric": "eval/episode_reward"}) == \
        Objectives(("maximize",), ("eval/episode_reward",))
    assert parse_objectives("MINIMIZE", {}).metrics == ("eval/episode_reward",)
    assert not parse_objectives(["maximize"], {"metrics": ["info/episode_reward"]}).multi


@pytest.mark.parametrize("direction, objective, message", [
    (["maximize", "minimize"], {}, "give as many metrics in hydra.sweeper.objective.metrics"),
    (["maximize", "minimize"], {"metrics": ["eval/episode_reward"]}, "1 entries for 2 directions"),
    (["maximize", "upward"], {"metrics": ["a", "b"]}, "direction must be maximize or minimize .*got 'upward'"),
    (["minimize", "maximize"], {"metrics": ["time/wall_seconds", "eval/episode_reward"]}, "must be a metric the training logs"),
    (["maximize", "maximize"], {"metrics": ["eval/episode_reward", "time/wall_seconds"]}, "is a cost; its direction must be minimize"),
    (["maximize", "minimize"], {"metrics": ["eval/episode_reward", "frames_to:high"]}, "'high' is not a number"),
])
def test_bad_objectives_are_refused_in_one_line(direction, objective, message):
    with pytest.raises(SweepConfigError, match=message):
        parse_objectives(direction, objective)


def test_multi_objective_studies_refuse_pruners_and_single_objective_samplers():
    objectives = parse_objectives(**MO)
    tpe = optuna.samplers.TPESampler()
    with pytest.raises(SweepConfigError, match="PercentilePruner cannot prune a multi-objective study"):
        check_multi_objective(objectives, tpe, optuna.pruners.PercentilePruner(50.0), None)
    check_multi_objective(objectives, tpe, optuna.pruners.NopPruner(), None)
    check_multi_objective(parse_objectives("maximize", {}), tpe, optuna.pruners.MedianPruner(), None)  # one objective: fine
    with pytest.raises(SweepConfigError, match="CmaEsSampler handles one objective only"):
        check_multi_objective(objectives, optuna.samplers.CmaEsSampler(), optuna.pruners.NopPruner(), None)


# ---- the costs --------------------------------------------------------------------------

def test_frames_to_is_the_first_frame_where_the_window_mean_reaches_the_value():
    objectives = parse_objectives(["maximize", "minimize", "minimize"],
                                  {"metrics": ["eval/episode_reward", "frames_to:-300", "frames_to:-100"]})
    costs = CostTracker(ObjectiveSettings(window=2), objectives)
    costs.start()
    for frames, ret in [(100, -500.0), (200, -350.0), (300, -250.0), (400, -200.0)]:
        costs.update({"info/frames": float(frames), "eval/episode_reward": ret})
    # window means: -500, -425, -300 (reached at 300), -225; -100 never: total frames + 1
    assert costs.values(total_frames=400) == [-225.0, 300.0, 401.0]


def test_frames_to_of_a_minimised_metric_reaches_downwards():
    objectives = parse_objectives(["minimize", "minimize"], {"metrics": ["losses/critic_loss", "frames_to:1.0"]})
    costs = CostTracker(ObjectiveSettings(window=1), objectives)
    for frames, loss in [(10, 5.0), (20, 0.9), (30, 2.0)]:
        costs.update({"info/frames": float(frames), "losses/critic_loss": loss})
    assert costs.values() == [2.0, 20.0]


@pytest.fixture
def trial_setup(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WORKBENCH_SWEEP_STORAGE", raising=False)
    journal = tmp_path / "s.journal"

    def make(directions, fake=None):
        study = optuna.create_study(study_name="s", directions=directions,
                                    storage=open_storage(StorageSpec(str(journal), "journal")), load_if_exists=True)
        trial = study.ask()
        trial.suggest_float("agent.e_clip", 0.1, 0.3)
        cfg = OmegaConf.merge(OmegaConf.load(FAKE_CONF / "config.yaml"),
                              {"env": OmegaConf.load(FAKE_CONF / "env" / "pendulum.yaml")},
                              {"trial": {"study_name": "s", "number": trial.number, "storage": str(journal)},
                               "fake": fake or {}})
        cfg.pop("defaults", None)
        cfg.pop("hydra", None)
        return study, trial, cfg

    return make, tmp_path


def scripted_training(returns: list[float], frames_per_iteration: int = 1000):
    """A training that logs the given evaluation returns, one per iteration."""
    from workbench.testing.fake_sweep import FakeTrainResult

    def run_training(cfg, output_dir, callbacks):
        callbacks.on_start({"wandb_run_id": "scripted", "output_dir": str(output_dir)})
        for it, ret in enumerate(returns, start=1):
            callbacks.on_iteration(it, {"info/frames": float(it * frames_per_iteration), "eval/episode_reward": ret})
        callbacks.on_end(None)
        return FakeTrainResult(final_eval_return=returns[-1], frames=len(returns) * frames_per_iteration)

    return run_training


def test_a_multi_objective_trial_records_every_value_and_reports_nothing(trial_setup):
    make, tmp_path = trial_setup
    study, trial, cfg = make(["maximize", "minimize", "minimize"])
    sweeper = {"direction": ["maximize", "minimize", "minimize"], "heartbeat": {"interval": 0.2},
               "objective": {"metrics": ["eval/episode_reward", "frames_to:-300", "time/wall_seconds"], "window": 2}}
    outcome = run_trial(cfg, tmp_path / "out", scripted_training([-500.0, -320.0, -280.0, -200.0]), sweeper)
    frozen = study.trials[trial.number]
    assert outcome.state == "COMPLETE" and frozen.state == TrialState.COMPLETE
    # window means -500, -410, -300 (reached at 3000 frames), -240
    assert frozen.values[:2] == [-240.0, 3000.0] and 0.0 <= frozen.values[2] < 5.0
    assert outcome.value == frozen.values
    assert frozen.intermediate_values == {}  # Optuna cannot report several values per step
    assert frozen.user_attrs["objective_metrics"] == sweeper["objective"]["metrics"]


def test_a_return_never_reached_costs_the_total_frames_plus_one(trial_setup):
    make, tmp_path = trial_setup
    study, trial, cfg = make(["maximize", "minimize"])
    sweeper = {**MO, "heartbeat": {"interval": 0.2}}
    run_trial(cfg, tmp_path / "out", scripted_training([-900.0, -800.0]), sweeper)
    assert study.trials[trial.number].values == [-850.0, 2001.0]


def test_wall_seconds_measure_the_training(trial_setup):
    from workbench.testing.fake_sweep import run_training

    make, tmp_path = trial_setup
    study, trial, cfg = make(["maximize", "minimize"], fake={"iteration_seconds": 0.05})
    sweeper = {"direction": ["maximize", "minimize"], "heartbeat": {"interval": 0.2},
               "objective": {"metrics": ["eval/episode_reward", "time/wall_seconds"], "window": 2}}
    run_trial(cfg, tmp_path / "out", run_training, sweeper)
    seconds = study.trials[trial.number].values[1]
    assert 8 * 0.05 <= seconds < 8 * 0.05 + 5.0  # 8 iterations of at least 0.05 s each


# ---- a misspelled objective metric --------------------------------------------------------

@pytest.mark.parametrize("multi", [False, True])
def test_a_metric_the_training_never_logs_fails_the_trial_and_names_it(trial_setup, multi):
    from workbench.testing.fake_sweep import run_training

    make, tmp_path = trial_setup
    directions = ["maximize", "minimize"] if multi else ["maximize"]
    study, trial, cfg = make(directions)
    objective = ({"metrics": ["eval/episode_rewrd", "time/wall_seconds"]} if multi
                 else {"metric": "eval/episode_rewrd"})
    sweeper = {"direction": directions if multi else "maximize", "objective": objective,
               "heartbeat": {"interval": 0.2}}
    outcome = run_trial(cfg, tmp_path / "out", run_training, sweeper)
    frozen = study.trials[trial.number]
    assert outcome.state == "FAIL" and frozen.state == TrialState.FAIL  # not the final evaluation's value
    reason = frozen.user_attrs["fail_reason"]
    assert "'eval/episode_rewrd' was never logged" in reason and "did you mean eval/episode_reward" in reason


def test_the_final_evaluation_still_stands_in_for_an_unlogged_eval_return(trial_setup):
    make, tmp_path = trial_setup
    study, trial, cfg = make(["maximize"])

    def run_training(cfg, output_dir, callbacks):  # evaluates only at the end
        from workbench.testing.fake_sweep import FakeTrainResult

        callbacks.on_iteration(1, {"info/frames": 10.0})
        callbacks.on_end(None)
        return FakeTrainResult(final_eval_return=-123.0, frames=10)

    run_trial(cfg, tmp_path / "out", run_training, {"objective": {}, "heartbeat": {"interval": 0.2}})
    assert study.trials[trial.number].value == -123.0


# ---- the Pareto front ---------------------------------------------------------------------

def random_study(tmp_path: Path, n: int = 40, seed: int = 3) -> optuna.Study:
    rng = random.Random(seed)
    study = optuna.create_study(study_name="mo", directions=["maximize", "minimize"],
                                storage=open_storage(StorageSpec(str(tmp_path / "sweeps_db" / "mo.journal"), "journal")))
    study.set_user_attr("objective_metrics", ["eval/episode_reward", "time/wall_seconds"])
    dist = {"agent.e_clip": FloatDistribution(0.05, 0.4)}
    for i in range(n):
        state = TrialState.COMPLETE if i % 7 else TrialState.PRUNED if i % 2 else TrialState.FAIL
        # rounded values: ties (equal in one objective) test the "better in one" half of dominance
        values = [round(rng.uniform(-900, -100), -1), round(rng.uniform(1, 60))] if state == TrialState.COMPLETE else None
        study.add_trial(create_trial(state=state, values=values, params={"agent.e_clip": rng.uniform(0.05, 0.4)},
                                     distributions=dist, user_attrs={"objective_metric": "eval/episode_reward"}))
    return study


def test_the_front_everywhere_matches_a_brute_force_non_dominated_filter(tmp_path: Path):
    study = random_study(tmp_path)
    trials = study.get_trials(deepcopy=False)
    expected = brute_force_front(trials, ["maximize", "minimize"])
    assert 2 <= len(expected) < len([t for t in trials if t.state == TrialState.COMPLETE])
    # the end-of-sweep summary and its CSV rows
    assert {t.number for t in pareto_front(study)} == expected
    rows = summary_rows(study)
    assert {r["number"] for r in rows if r["pareto"]} == expected
    assert all(r["value"] is None and "value.time/wall_seconds" in r for r in rows)
    table = summary_table(study)
    assert f"Pareto front: {len(expected)} trials" in table
    front_lines = table.split("time/wall_seconds (minimize)")[1].splitlines()[2:2 + len(expected)]
    assert {int(line.split()[0]) for line in front_lines} == expected
    # the analysis frame and its front table
    frame = analysis.load_study(None, "mo", base_dir=tmp_path)
    assert set(frame.loc[frame["pareto"], "number"]) == expected
    front = analysis.pareto_front(frame)
    assert set(front["number"]) == expected
    assert list(front.columns[:3]) == ["number", "eval/episode_reward (maximize)", "time/wall_seconds (minimize)"]
    assert front["eval/episode_reward (maximize)"].is_monotonic_decreasing
    fig = analysis.plot_pareto_front(frame)
    assert not hasattr(fig, "workbench_message")


def test_the_report_shows_the_front(tmp_path: Path):
    study = random_study(tmp_path)
    expected = brute_force_front(study.get_trials(deepcopy=False), ["maximize", "minimize"])
    report = analysis.write_html_report(None, "mo", base_dir=tmp_path)
    text = report.path.read_text()
    assert f"Pareto front: {len(expected)} trials" in text and "Pareto front" in report.plots
    section = text.split("id='pareto'")[1].split("<h2")[0]
    numbers = {int(cell.split("<td>")[1].split("</td>")[0]) for cell in section.split("<tr>")[2:]}
    assert numbers == expected
    assert "objectives eval/episode_reward (maximize), time/wall_seconds (minimize)" in text


def test_single_objective_frames_have_no_front_columns(tmp_path: Path):
    from sweep_fixture import fake_study

    fake_study(tmp_path / "sweeps_db" / "fake.journal")
    frame = analysis.load_study(None, "fake", base_dir=tmp_path)
    assert "pareto" not in frame.columns and "values_0" not in frame.columns
    assert list(analysis.pareto_front(frame)["number"]) == [0]  # the best trial
    assert hasattr(analysis.plot_pareto_front(frame), "workbench_message")


# ---- whole sweeps of the fake app ----------------------------------------------------------

@pytest.mark.slow
def test_a_two_worker_multi_objective_sweep_ends_with_its_front(tmp_path: Path):
    write_sweep(tmp_path, "mo", {"n_trials": 6, "pruner": None, **MO})
    done = run(sweep_cli_cmd(tmp_path, "mo", ["--workers", "2"]), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    study = open_study(tmp_path, "mo")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE and len(t.values) == 2 for t in trials)
    expected = brute_force_front(trials, ["maximize", "minimize"])
    assert f"Pareto front: {len(expected)} trials" in done.stdout
    with open(tmp_path / "sweeps_db" / "mo.summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {int(r["number"]) for r in rows if r["pareto"] == "True"} == expected


def test_a_pruner_with_several_objectives_is_refused_before_any_trial(tmp_path: Path):
    write_sweep(tmp_path, "mop", {"n_trials": 2, **MO})  # keeps the fixture's PercentilePruner
    done = run(sweep_cli_cmd(tmp_path, "mop", []), cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "PercentilePruner cannot prune a multi-objective study" in lines[0], done.stderr


@pytest.mark.parametrize("cost", ["frames_to:-300", "time/wall_seconds"])
def test_reevaluation_covers_the_front_and_finds_it_again_on_fresh_seeds(tmp_path: Path, cost: str):
    mo = {"direction": ["maximize", "minimize"], "objective": {"metrics": ["eval/episode_reward", cost], "window": 2}}
    reevaluate = {"top_k": 1, "seeds": 2, "budget": 8 * 8 * 32, "baseline": True}
    write_sweep(tmp_path, "mofront", {"n_trials": 8, "pruner": None, "reevaluate": reevaluate, **mo})
    done = run(sweep_cli_cmd(tmp_path, "mofront", []), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    study = open_study(tmp_path, "mofront")
    trials = study.get_trials(deepcopy=False)
    record = study.user_attrs["reevaluation"]
    directions = ["maximize", "minimize"]
    front = brute_force_front([t for t in trials if not t.user_attrs.get("baseline")], directions)
    # the whole search front (top_k does not cut it), then the defaults
    assert {r["trial"] for r in record["rows"] if not r["baseline"]} == front
    assert record["rows"][-1]["baseline"] and record["rows"][-1]["trial"] == 0
    points = {}
    for row in record["rows"]:
        reward, other = row["objectives"]["eval/episode_reward"], row["objectives"][cost]
        assert len(reward["values"]) == 2 and reward["mean"] == pytest.approx(np.mean(reward["values"]))
        assert reward["search_value"] == pytest.approx(trials[row["trial"]].values[0])
        if cost == "time/wall_seconds":  # a population member has no wall time of its own
            assert other["remeasured"] is False and other["mean"] == trials[row["trial"]].values[1]
        else:
            assert other["remeasured"] and other["mean"] == pytest.approx(np.mean(other["values"]))
        points[row["trial"]] = (reward["mean"], other["mean"])
    expected = {n for n, p in points.items() if not any(dominates(q, p, directions) for q in points.values())}
    assert set(record["fresh_front"]) == expected
    assert "Pareto front on fresh seeds" in done.stdout
    with open(tmp_path / "sweeps_db" / "mofront.reeval.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {int(r["trial"]) for r in rows if r["on_fresh_front"] == "True"} == expected
    table = analysis.reevaluation_table(analysis.load_study(None, "mofront", base_dir=tmp_path))
    assert set(table.loc[table["on_fresh_front"], "trial"]) == expected
    assert f"fresh {cost}" in table.columns and "search eval/episode_reward" in table.columns
