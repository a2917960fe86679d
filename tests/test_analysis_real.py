"""workbench.analysis on a real sweep (the session fixture): trials joined with their W&B runs."""
from __future__ import annotations

import numpy as np
import optuna
import pytest

from sweep_fixture import N_TRIALS, real_sweep  # noqa: F401 - the session fixture
from workbench import analysis as wa
from workbench.tracking import read_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded(real_sweep):  # noqa: F811
    frame = wa.load_study(real_sweep.storage, real_sweep.study)
    return frame, wa.join_histories(frame)


def test_frame_matches_the_optuna_study(real_sweep, loaded):  # noqa: F811
    frame, _ = loaded
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(real_sweep.storage))
    trials = optuna.load_study(study_name=real_sweep.study, storage=storage).get_trials()
    assert len(frame) == len(trials) == N_TRIALS
    for t, (_, row) in zip(trials, frame.iterrows()):
        assert row["number"] == t.number and row["state"] == t.state.name
        assert row["last_step"] == t.last_step
        assert row["wandb_run_id"] == t.user_attrs["wandb_run_id"]
        assert row["wandb_run_dir"] == t.user_attrs["wandb_run_dir"]
        for name, value in t.params.items():
            assert row[f"params_{name}"] == value
        assert row["duration_s"] == pytest.approx(t.duration.total_seconds())
    assert frame.attrs["objective_metric"] == "eval/episode_reward"


def test_every_trial_history_is_its_runs_history(loaded):
    frame, histories = loaded
    assert histories.missing == {} and sorted(histories) == sorted(frame["number"])
    for _, row in frame.iterrows():
        expected = read_run(row["wandb_run_dir"]).history
        got = histories[row["number"]]
        assert got.equals(expected)
        assert read_run(row["wandb_run_dir"]).group == frame.attrs["study_name"]
        if row["state"] == "COMPLETE":  # 8 iterations of 2048 frames, as the fixture asks
            assert got["info/frames"].max() == 16384 == row["frames"]
        # the trial's reported objective is the mean of the last 3 evaluations seen at its last report
        evals = got["eval/episode_reward"].dropna().iloc[: int(row["last_step"]) // 2]
        assert row["value"] == pytest.approx(evals.iloc[-3:].mean())


def test_pruning_efficiency_on_the_real_sweep(loaded):
    frame, histories = loaded
    table = wa.pruning_efficiency(frame, histories)
    for state in table.index:
        numbers = frame.loc[frame["state"] == state, "number"]
        assert table.loc[state, "frames"] == sum(histories[n]["info/frames"].max() for n in numbers)
    assert table["share"].sum() == pytest.approx(1.0)


def test_plots_draw_the_real_trials(loaded):
    frame, histories = loaded
    curves = wa.plot_learning_curves(frame, histories)
    assert {line.get_label() for line in curves.axes[0].get_lines()} == {f"trial {n}" for n in frame["number"]}
    best, worst = wa.best_and_worst(frame)
    assert best != worst  # the fixture's pruner waits for two complete trials
    diag = wa.plot_training_diagnostics(frame, histories)
    clip_ax = next(ax for ax in diag.axes if ax.get_title() == "actor clip fraction")
    lines = {line.get_label(): line for line in clip_ax.get_lines()}
    assert np.allclose(lines[f"trial {best} (best)"].get_ydata(), histories[best]["actor/clip_frac"])
    assert f"trial {worst} (worst)" in lines
    assert not hasattr(wa.plot_param_importances(frame), "workbench_message")  # >= 2 complete trials
    layers = wa.plot_grad_layers(histories[best], "critic")  # the fixture trains with check_grad_mag
    assert len(layers.axes[0].get_lines()) == sum(c.startswith("grad_layers/critic/") for c in histories[best])


def test_latest_study_and_run_find_the_fixture(real_sweep):  # noqa: F811
    storage, study = wa.latest_study(real_sweep.root)
    assert storage == real_sweep.storage and study == real_sweep.study
    run_dir = wa.latest_run(real_sweep.root)
    assert run_dir.parent.parent.parent.name == real_sweep.study  # multirun/<study>/<n>/wandb/<run>
    run = wa.load_run(run_dir)
    summary = wa.run_summary(run)
    assert summary.loc["run id", "value"] == run.run_id and summary.loc["group", "value"] == real_sweep.study
