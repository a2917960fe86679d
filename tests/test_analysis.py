"""workbench.analysis on a synthetic study (no training): frames, histories, plots, defaults."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from matplotlib import colormaps
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from sweep_fixture import fake_history, fake_study
from workbench import analysis as wa


@pytest.fixture
def study_setup(tmp_path):
    journal = tmp_path / "sweeps_db" / "fake.journal"
    study = fake_study(journal)
    return journal, study


def test_load_study_has_one_row_per_trial_with_params_and_links(study_setup):
    journal, study = study_setup
    frame = wa.load_study(str(journal), "fake")
    trials = study.get_trials()
    assert list(frame["number"]) == [t.number for t in trials]
    assert list(frame["state"]) == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED", "FAIL"]
    assert frame.loc[3, "value"] == -900.0 and np.isnan(frame.loc[4, "value"])
    for column in ("params_agent.e_clip", "params_agent.tau", "params_agent.advantage_normalization.use_ema"):
        assert column in frame.columns
    assert frame.loc[1, "params_agent.e_clip"] == pytest.approx(0.20)
    assert bool(frame.loc[1, "params_agent.advantage_normalization.use_ema"]) is False
    assert list(frame["last_step"].astype("float").fillna(-1)) == [4, 4, 4, 2, -1]
    assert frame.loc[2, "wandb_run_id"] == "run0002"
    assert frame.loc[2, "output_dir"] == trials[2].user_attrs["output_dir"]
    assert frame.loc[4, "fail_reason"] == "RuntimeError: boom"
    assert "duration_s" in frame.columns and "wandb_run_dir" in frame.columns
    assert frame.attrs["study_name"] == "fake" and frame.attrs["direction"] == "maximize"
    assert frame.attrs["objective_metric"] == "eval/episode_reward"


def test_load_study_unknown_name_lists_the_studies_there(study_setup):
    journal, _ = study_setup
    with pytest.raises(wa.StudyNotFoundError) as err:
        wa.load_study(str(journal), "nope")
    assert "nope" in str(err.value) and "fake" in str(err.value)
    assert err.value.available == ["fake"]


def test_load_study_missing_journal_is_not_created(tmp_path):
    missing = tmp_path / "sweeps_db" / "absent.journal"
    with pytest.raises(wa.StorageNotFoundError, match="no study storage"):
        wa.load_study(str(missing), "absent")
    assert not missing.exists()


def test_load_study_default_storage_is_sweeps_db_in_base_dir(study_setup, monkeypatch):
    journal, _ = study_setup
    monkeypatch.delenv("WORKBENCH_SWEEP_STORAGE", raising=False)
    frame = wa.load_study(None, "fake", base_dir=journal.parent.parent)
    assert len(frame) == 5


def test_best_and_worst_follow_the_direction(tmp_path):
    fake_study(tmp_path / "a.journal", "a")
    maxi = wa.load_study(str(tmp_path / "a.journal"), "a")
    assert wa.best_and_worst(maxi) == (0, 2)
    fake_study(tmp_path / "b.journal", "b", direction="minimize")
    mini = wa.load_study(str(tmp_path / "b.journal"), "b")
    assert wa.best_and_worst(mini) == (2, 0)


def test_join_histories_reports_missing_files_without_raising(study_setup):
    journal, _ = study_setup
    frame = wa.load_study(str(journal), "fake")
    histories = wa.join_histories(frame)
    assert len(histories) == 0
    assert set(histories.missing) == {0, 1, 2, 3, 4}
    assert "run0001" in histories.missing[1] and "missing" in histories.missing[1]


class FakeRun:
    def __init__(self, rows):
        self.rows = rows

    def scan_history(self):
        return iter(self.rows)


class FakeApi:
    def __init__(self, rows):
        self.rows, self.paths = rows, []

    def run(self, path):
        self.paths.append(path)
        if path.endswith("run0002"):
            raise ValueError("Could not find run")
        return FakeRun(self.rows)


def test_join_histories_uses_the_wandb_api_when_local_files_are_gone(study_setup):
    journal, _ = study_setup
    frame = wa.load_study(str(journal), "fake")
    rows = [{"info/frames": 4096, "eval/episode_reward": -200.0}, {"info/frames": 2048, "eval/episode_reward": -300.0}]
    api = FakeApi(rows)
    histories = wa.join_histories(frame.iloc[:3], api=api, project="proj", entity="team")
    assert api.paths == ["team/proj/run0000", "team/proj/run0001", "team/proj/run0002"]
    assert sorted(histories) == [0, 1] and histories.sources[0] == "api"
    assert list(histories[0]["info/frames"]) == [2048, 4096]  # sorted by the step metric
    assert list(histories[0]["eval/episode_reward"]) == [-300.0, -200.0]
    assert "Could not find run" in histories.missing[2]


def test_online_runs_without_local_files_try_the_api_and_say_why_it_failed(tmp_path, monkeypatch):
    journal = tmp_path / "sweeps_db" / "on.journal"
    trials = [dict(state="COMPLETE", params=[0.1, 0.9, True], value=1.0, intermediate={},
                   user_attrs={"wandb_run_dir": str(tmp_path / "gone" / "run-20260101_000000-abc")})]
    fake_study(journal, "on", trials=trials)
    frame = wa.load_study(str(journal), "on")
    assert wa.runs_were_online(frame)

    def no_api():
        raise RuntimeError("no API key configured")

    monkeypatch.setattr("workbench.analysis.histories.default_api", no_api)
    histories = wa.join_histories(frame)
    assert "W&B API failed" in histories.missing[0] and "no API key" in histories.missing[0]

    api = FakeApi([{"info/frames": 1, "eval/episode_reward": 2.0}])
    monkeypatch.setattr("workbench.analysis.histories.default_api", lambda: api)
    monkeypatch.setenv("WANDB_PROJECT", "envproj")
    histories = wa.join_histories(frame)
    assert api.paths == ["envproj/run0000"] and histories[0]["eval/episode_reward"].tolist() == [2.0]


def test_long_history_stacks_trials():
    long = wa.long_history({3: fake_history(4), 5: fake_history(2)}, ["actor/clip_frac"])
    assert list(long.columns) == ["info/frames", "actor/clip_frac", "trial"]
    assert long["trial"].tolist() == [3, 3, 3, 3, 5, 5]


# ---- plots ----

def _frame_and_histories(journal):
    frame = wa.load_study(str(journal), "fake")
    histories = wa.Histories({n: fake_history(8 if n < 3 else 2, scale=1.0 + n) for n in range(4)})
    return frame, histories


def test_objective_vs_params_plots_every_trial_with_a_value_on_each_knob(study_setup):
    frame, _ = _frame_and_histories(study_setup[0])
    fig = wa.plot_objective_vs_params(frame)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 3
    e_clip_ax = next(ax for ax in axes if "e_clip" in ax.get_xlabel())
    points = np.vstack([c.get_offsets() for c in e_clip_ax.collections])
    expected = frame[frame["state"].isin(["COMPLETE", "PRUNED"])][["params_agent.e_clip", "value"]].to_numpy(float)
    assert sorted(map(tuple, points.round(6))) == sorted(map(tuple, expected.round(6)))
    use_ema_ax = next(ax for ax in axes if "use_ema" in ax.get_xlabel())
    assert [t.get_text() for t in use_ema_ax.get_xticklabels()] == ["False", "True"]


def test_learning_curves_one_line_per_trial_coloured_by_objective(study_setup):
    frame, histories = _frame_and_histories(study_setup[0])
    fig = wa.plot_learning_curves(frame, histories)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"trial 0", "trial 1", "trial 2", "trial 3"}
    cmap = colormaps["viridis"]
    assert np.allclose(to_rgba(lines["trial 0"].get_color()), cmap(1.0))  # best value: top of the map
    assert np.allclose(to_rgba(lines["trial 3"].get_color()), cmap(0.0))  # worst (pruned): bottom
    assert lines["trial 3"].get_linestyle() == "--" and lines["trial 0"].get_linestyle() == "-"
    # eval is logged every 2nd iteration: the line holds only those points
    assert list(lines["trial 1"].get_xdata()) == [4096, 8192, 12288, 16384]


def test_training_diagnostics_show_best_and_worst(study_setup):
    frame, histories = _frame_and_histories(study_setup[0])
    fig = wa.plot_training_diagnostics(frame, histories)
    clip_ax = next(ax for ax in fig.axes if ax.get_title() == "actor clip fraction")
    lines = {line.get_label(): line for line in clip_ax.get_lines()}
    assert set(lines) == {"trial 0 (best)", "trial 2 (worst)"}
    assert np.allclose(lines["trial 2 (worst)"].get_ydata(), histories[2]["actor/clip_frac"])
    grad_ax = next(ax for ax in fig.axes if ax.get_title().startswith("actor grad norm"))
    assert {line.get_label() for line in grad_ax.get_lines()} == {
        "trial 0 (best) before", "trial 0 (best) after", "trial 2 (worst) before", "trial 2 (worst) after"}


def test_training_diagnostics_without_history_says_so(study_setup):
    frame, _ = _frame_and_histories(study_setup[0])
    fig = wa.plot_training_diagnostics(frame, wa.Histories())
    assert "no W&B history" in fig.workbench_message


def test_param_importances_match_optuna(study_setup):
    journal, study = study_setup
    frame = wa.load_study(str(journal), "fake")
    importances = wa.param_importances(frame)
    expected = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    assert importances.to_dict() == pytest.approx(expected)
    fig = wa.plot_param_importances(frame)
    bars = fig.axes[0].patches
    assert sorted(b.get_width() for b in bars) == pytest.approx(sorted(expected.values()))


def test_param_importances_need_two_complete_trials(tmp_path):
    trials = [dict(state="COMPLETE", params=[0.1, 0.9, True], value=1.0, intermediate={}),
              dict(state="PRUNED", params=[0.2, 0.9, True], value=0.5, intermediate={1: 0.5})]
    fake_study(tmp_path / "one.journal", "one", trials=trials)
    frame = wa.load_study(str(tmp_path / "one.journal"), "one")
    importances = wa.param_importances(frame)
    assert importances.empty and "at least 2 complete trials (has 1)" in importances.attrs["reason"]
    fig = wa.plot_param_importances(frame)
    assert "at least 2 complete" in fig.workbench_message


def test_parallel_coordinates_one_line_per_trial(study_setup):
    frame, _ = _frame_and_histories(study_setup[0])
    fig = wa.plot_parallel_coordinates(frame)
    ax = fig.axes[0]
    trial_lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 4]  # 3 knobs + objective
    assert len(trial_lines) == 4  # 3 complete + 1 pruned; the failed trial has no value
    objective = sorted(line.get_ydata()[-1] for line in trial_lines)
    assert objective == pytest.approx([0.0, (-400 + 900) / 750, (-250 + 900) / 750, 1.0])
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "objective"


def test_pruning_efficiency_counts_frames_by_state(study_setup):
    frame, histories = _frame_and_histories(study_setup[0])
    table = wa.pruning_efficiency(frame, histories)
    assert table.loc["COMPLETE", "frames"] == 3 * 8 * 2048
    assert table.loc["PRUNED", "frames"] == 2 * 2048
    assert table.loc["COMPLETE", "trials"] == 3 and table.loc["FAIL", "trials"] == 1
    assert table.loc["PRUNED", "share"] == pytest.approx(2 / 26)
    fig = wa.plot_pruning_efficiency(frame, histories)
    per_trial = fig.axes[0]
    assert [b.get_height() for b in per_trial.patches] == [16384, 16384, 16384, 4096, 0]


def test_trial_frames_fall_back_to_the_recorded_frames(tmp_path):
    trials = [dict(state="COMPLETE", params=[0.1, 0.9, True], value=1.0, intermediate={},
                   user_attrs={"frames": 12345})]
    fake_study(tmp_path / "f.journal", "f", trials=trials)
    frame = wa.load_study(str(tmp_path / "f.journal"), "f")
    assert wa.trial_frames(frame).tolist() == [12345.0]


def test_plots_of_an_empty_study_say_there_is_nothing(tmp_path):
    fake_study(tmp_path / "e.journal", "e", trials=[])
    frame = wa.load_study(str(tmp_path / "e.journal"), "e")
    assert frame.empty
    for fig in (wa.plot_objective_vs_params(frame), wa.plot_learning_curves(frame, {}),
                wa.plot_training_diagnostics(frame, {}), wa.plot_param_importances(frame),
                wa.plot_parallel_coordinates(frame), wa.plot_pruning_efficiency(frame)):
        assert isinstance(fig, Figure) and fig.workbench_message


def test_run_plots_draw_logged_keys_and_name_the_missing_ones():
    history = fake_history(6)
    fig = wa.plot_run_section(history, "grad_norms")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2 and len(axes[0].get_lines()) == 2
    fig = wa.plot_run_section(history, "adv_norm")
    assert "adv_norm/raw_mean" in fig.workbench_message  # not logged by the fake history
    fig = wa.plot_metrics(history, ["losses/actor_loss", "adv_norm/raw_std"])
    assert "not logged: adv_norm/raw_std" in fig._suptitle.get_text()
    assert np.allclose(fig.axes[0].get_lines()[0].get_ydata(), history["losses/actor_loss"])
    with pytest.raises(KeyError, match="unknown section"):
        wa.plot_run_section(history, "nope")
    assert "check_grad_mag" in wa.plot_grad_layers(history).workbench_message


def test_figures_render_to_png(study_setup):
    frame, histories = _frame_and_histories(study_setup[0])
    png = wa.figure_png(wa.plot_learning_curves(frame, histories))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


# ---- defaults: the latest study and run ----

def test_latest_study_picks_the_newest_journal_and_study(tmp_path):
    old = fake_study(tmp_path / "sweeps_db" / "old.journal", "old")
    new_journal = tmp_path / "sweeps_db" / "new.journal"
    fake_study(new_journal, "new")
    past = time.time() - 100
    os.utime(tmp_path / "sweeps_db" / "old.journal", (past, past))
    assert old.study_name == "old"
    storage, study = wa.latest_study(tmp_path)
    assert Path(storage) == new_journal.resolve() and study == "new"
    assert wa.resolve_study(None, "old", tmp_path) == (str((tmp_path / "sweeps_db" / "old.journal").resolve()), "old")
    assert wa.resolve_study(str(new_journal), None) == (str(new_journal), "new")


def test_latest_study_looks_in_the_parent_of_a_notebook_folder(tmp_path, monkeypatch):
    fake_study(tmp_path / "sweeps_db" / "s.journal", "s")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert wa.latest_study()[1] == "s"


def test_latest_study_and_run_say_what_to_do_when_there_is_none(tmp_path):
    with pytest.raises(wa.StorageNotFoundError, match="workbench sweep"):
        wa.latest_study(tmp_path)
    with pytest.raises(wa.RunNotFoundError, match="workbench train"):
        wa.latest_run(tmp_path)


def test_latest_run_picks_the_newest_run_file(tmp_path):
    runs = []
    for i, parent in enumerate(["outputs/2026-01-01/10-00-00", "multirun/s/0", "outputs/2026-01-02/09-00-00"]):
        run_dir = tmp_path / parent / "wandb" / f"offline-run-{i}-id{i}"
        run_dir.mkdir(parents=True)
        (run_dir / f"run-id{i}.wandb").write_bytes(b"")
        stamp = time.time() - 100 + 10 * i
        os.utime(run_dir / f"run-id{i}.wandb", (stamp, stamp))
        runs.append(run_dir)
    newest = time.time()
    os.utime(runs[1] / "run-id1.wandb", (newest, newest))
    assert wa.latest_run(tmp_path) == runs[1]
    (runs[1] / "workbench-superseded.json").write_text("{}")  # replaced by a fallback run
    assert wa.latest_run(tmp_path) == runs[2]


def test_a_failing_wandb_api_is_tried_once(tmp_path, monkeypatch):
    trials = [dict(state="COMPLETE", params=[0.1, 0.9, True], value=1.0, intermediate={},
                   user_attrs={"wandb_run_dir": str(tmp_path / "gone" / f"run-20260101_000000-r{i}")}) for i in range(3)]
    fake_study(tmp_path / "o.journal", "o", trials=trials)
    calls = []

    def no_api():
        calls.append(1)
        raise RuntimeError("offline")

    monkeypatch.setattr("workbench.analysis.histories.default_api", no_api)
    histories = wa.join_histories(wa.load_study(str(tmp_path / "o.journal"), "o"))
    assert len(calls) == 1 and len(histories.missing) == 3


def _log_param_study(journal):
    """A study whose knob is searched on a log scale within one decade and has a long name."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from workbench.sweep.storage import StorageSpec, open_storage

    name = "agent.advantage_normalization.ema_alpha"
    dist = {name: FloatDistribution(0.01, 0.09, log=True)}
    study = optuna.create_study(study_name="log", storage=open_storage(StorageSpec(str(journal), "journal")),
                                direction="maximize")
    for number, (alpha, state) in enumerate([(0.012, "COMPLETE"), (0.03, "COMPLETE"), (0.08, "PRUNED")]):
        study.add_trial(create_trial(state=getattr(TrialState, state), params={name: alpha}, distributions=dist,
                                     value=-100.0 * (number + 1), intermediate_values={2: -100.0 * (number + 1)}))
    return name


def test_log_scale_parameter_axes_have_plain_ticks_and_full_names(tmp_path):
    name = _log_param_study(tmp_path / "log.journal")
    frame = wa.load_study(str(tmp_path / "log.journal"), "log")
    fig = wa.plot_objective_vs_params(frame)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == name  # not "…normalization.ema_alpha"
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    labels += [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
    assert labels and not any("$" in text or "10^" in text for text in labels), labels
    assert {"0.02", "0.05"} <= set(labels)
    coords = wa.plot_parallel_coordinates(frame)
    assert name in [t.get_text() for t in coords.axes[0].get_xticklabels()]


def test_pruning_efficiency_legend_is_clear_of_the_bars(study_setup):
    journal, _ = study_setup
    frame = wa.load_study(str(journal), "fake")
    histories = {n: fake_history(iterations=8 if s != "PRUNED" else 2) for n, s in zip(frame["number"], frame["state"])}
    fig = wa.plot_pruning_efficiency(frame, histories)
    fig.canvas.draw()
    per_trial = fig.axes[0]
    legend = per_trial.get_legend().get_window_extent()
    for bar in per_trial.patches:
        assert not legend.overlaps(bar.get_window_extent()), "the legend covers a bar"


def test_report_table_shows_frames_of_pruned_trials(study_setup):
    from workbench.analysis.html_report import _trials_table

    journal, _ = study_setup
    frame = wa.load_study(str(journal), "fake")  # its pruned trial recorded no frames (an older study)
    pruned = int(frame.loc[frame["state"] == "PRUNED", "number"].iloc[0])
    table = _trials_table(frame, {pruned: fake_history(iterations=2)})
    assert int(table.loc[table["number"] == pruned, "frames"].iloc[0]) == 2 * 2048
