"""`workbench report`: bad input (fast, synthetic studies) and the W&B report object (no network)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sweep_fixture import REPO, fake_study
from workbench import analysis as wa
from workbench.analysis.cli import report_main

# wandb-workspaces' own pydantic v1-style validators warn at import
pytestmark = pytest.mark.filterwarnings("ignore:Pydantic V1 style:DeprecationWarning")


def no_network_fetch(text: str) -> bool:
    """True when the HTML loads nothing from elsewhere (every src/href/url() is inline or local)."""
    refs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]|url\(([^)]*)\)|@import""", text)
    return all((a or b).startswith(("data:", "#")) for a, b in refs if (a or b))


def test_unknown_study_lists_the_existing_ones_and_exits_2(tmp_path, capsys):
    journal = tmp_path / "sweeps_db" / "fake.journal"
    fake_study(journal)
    assert report_main(["nope", "--storage", str(journal)]) == 2
    err = capsys.readouterr().err
    assert "no study 'nope'" in err and "studies there: fake" in err and "Traceback" not in err
    assert not (tmp_path / "sweeps_db" / "nope.report.html").exists()


def test_missing_default_storage_names_the_journals_that_exist(tmp_path, capsys, monkeypatch):
    fake_study(tmp_path / "sweeps_db" / "fake.journal")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WORKBENCH_SWEEP_STORAGE", raising=False)
    assert report_main(["other"]) == 2
    err = capsys.readouterr().err
    assert "no study storage at" in err and "other.journal" in err and "journals in" in err and "fake" in err
    assert not (tmp_path / "sweeps_db" / "other.journal").exists()  # reading never creates a study


def test_empty_study_writes_a_report_that_says_so(tmp_path, capsys):
    journal = tmp_path / "sweeps_db" / "empty.journal"
    fake_study(journal, "empty", trials=[])
    assert report_main(["empty", "--storage", str(journal)]) == 0
    captured = capsys.readouterr()
    assert "has no trials yet" in captured.err
    report = tmp_path / "sweeps_db" / "empty.report.html"
    assert str(report) in captured.out
    text = report.read_text()
    assert "The study has no trials yet" in text and "<img" not in text


def test_trials_without_wandb_files_are_listed_in_the_report(tmp_path, capsys):
    journal = tmp_path / "sweeps_db" / "fake.journal"
    fake_study(journal)
    out = tmp_path / "elsewhere" / "r.html"
    assert report_main(["fake", "--storage", str(journal), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "5 of 5 trials have no W&B history" in err and "Traceback" not in err
    text = out.read_text()
    assert "id='missing'" in text
    for number in range(5):
        assert f"Trial {number}: W&amp;B files of run run{number:04d} are missing" in text
    # what does not need the runs is still there: the trials table and the study-level plots
    assert "RuntimeError: boom" in text and "Objective vs each parameter" in text
    assert text.count("<img") == 6 and no_network_fetch(text)


def test_cli_dispatch_reports_errors_without_a_traceback(tmp_path):
    journal = tmp_path / "j.journal"
    fake_study(journal)
    done = subprocess.run([sys.executable, "-m", "workbench.cli", "report", "nope", "--storage", str(journal)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "workbench report: error: no study 'nope'" in done.stderr and "Traceback" not in done.stderr


def test_report_path_defaults_beside_the_study(tmp_path):
    assert wa.default_report_path(str(tmp_path / "db" / "s.journal"), "s") == tmp_path / "db" / "s.report.html"
    assert wa.default_report_path(f"sqlite:///{tmp_path}/x.db", "s") == tmp_path / "s.report.html"
    assert (wa.default_report_path("postgresql+psycopg://u:pw@h/db", "s", base_dir=tmp_path)
            == tmp_path / "multirun" / "s" / "s.report.html")


# ---- the W&B report as code ----

@pytest.fixture
def no_wandb_network(monkeypatch):
    """Any call that would reach the W&B server fails the test."""
    import wandb_workspaces.reports.v2.interface as interface

    def refuse(*args, **kwargs):
        raise AssertionError("the W&B report tried to reach the network")

    monkeypatch.setattr(interface, "_get_api", refuse)
    return interface


def test_wandb_report_has_the_panels_and_the_study_runset(tmp_path, no_wandb_network):
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    fake_study(tmp_path / "f.journal", "it's")
    frame = wa.load_study(str(tmp_path / "f.journal"), "it's")
    report = wa.build_wandb_report(frame, project="proj", entity="team")
    assert isinstance(report, wr.Report) and report.project == "proj" and report.entity == "team"
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    assert len(grids) == 1
    (runset,) = grids[0].runsets
    assert (runset.entity, runset.project) == ("team", "proj")
    parsed = expr.expr_to_filters(runset.filters)  # the filter W&B will apply
    assert (parsed.key.section, parsed.key.name, parsed.op, parsed.value) == ("run", "group", "=", "it's")
    panels = grids[0].panels
    lines = {p.title: p for p in panels if isinstance(p, wr.LinePlot)}
    assert lines["objective: eval/episode_reward"].y == ["eval/episode_reward"]
    assert lines["clip fractions"].y == ["actor/clip_frac", "critic/value_clip_frac"]
    assert lines["actor gradient norm (before / after clip)"].y == [
        "actor/grad_norm_before_clip", "actor/grad_norm_after_clip"]
    assert lines["critic gradient norm (before / after clip)"].y == [
        "critic/grad_norm_before_clip", "critic/grad_norm_after_clip"]
    assert all(p.x == "info/frames" for p in lines.values())
    (parallel,) = [p for p in panels if isinstance(p, wr.ParallelCoordinatesPlot)]
    columns = [c.metric for c in parallel.columns]
    assert [c.name for c in columns[:-1]] == [
        "agent.advantage_normalization.use_ema", "agent.e_clip", "agent.tau"]
    assert all(isinstance(c, wr.Config) for c in columns[:-1])
    assert isinstance(columns[-1], wr.SummaryMetric) and columns[-1].name == "eval/episode_reward"
    scatters = [p for p in panels if isinstance(p, wr.ScatterPlot)]
    assert sorted(p.x.name for p in scatters) == ["agent.advantage_normalization.use_ema", "agent.e_clip", "agent.tau"]
    assert any(isinstance(p, wr.ParameterImportancePlot) for p in panels)
    text = " ".join(getattr(b, "text", "") if isinstance(getattr(b, "text", ""), str) else str(b.text)
                    for b in report.blocks if not isinstance(b, wr.PanelGrid))
    assert "best trial 0" in text and "3 complete" in text


def test_wandb_report_is_saved_only_when_the_runs_were_online(tmp_path, monkeypatch, no_wandb_network):
    import wandb_workspaces.reports.v2 as wr

    saved = []
    monkeypatch.setattr(wr.Report, "save", lambda self, *a, **k: saved.append(self.title) or self)
    fake_study(tmp_path / "f.journal")
    frame = wa.load_study(str(tmp_path / "f.journal"), "fake")
    wa.build_wandb_report(frame, project="p", entity="e", save=True)
    assert saved == []  # offline runs: built, never saved

    frame.loc[0, "wandb_run_dir"] = str(tmp_path / "wandb" / "run-20260101_000000-abc")  # an online run
    monkeypatch.delenv("WANDB_MODE", raising=False)
    wa.build_wandb_report(frame, project="p", entity="e")
    assert saved == []  # save=False: never
    wa.build_wandb_report(frame, project="p", entity="e", save=True)
    assert saved == ["Sweep fake"]
    monkeypatch.setenv("WANDB_MODE", "offline")
    wa.build_wandb_report(frame, project="p", entity="e", save=True)
    assert saved == ["Sweep fake"]


def test_report_cli_leaves_wandb_alone_for_offline_runs(tmp_path, monkeypatch, capsys):
    import wandb_workspaces.reports.v2 as wr

    monkeypatch.setattr(wr.Report, "save", lambda self, *a, **k: pytest.fail("saved a W&B report"))
    fake_study(tmp_path / "f.journal")
    assert report_main(["fake", "--storage", str(tmp_path / "f.journal")]) == 0
    assert "W&B report" not in capsys.readouterr().out


def test_repo_ci_installs_chromium():
    assert "command -v chromium >/dev/null || need+=(chromium)" in (REPO / ".ci" / "run").read_text()


def test_report_cli_saves_a_wandb_report_for_online_runs(tmp_path, monkeypatch, capsys, no_wandb_network):
    import wandb_workspaces.reports.v2 as wr

    from test_analysis import FakeApi

    saved = []
    monkeypatch.setattr(wr.Report, "save", lambda self, *a, **k: saved.append(self) or self)
    api = FakeApi([{"info/frames": 2048, "eval/episode_reward": -100.0}])
    monkeypatch.setattr("workbench.analysis.histories.default_api", lambda: api)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    online = [dict(state="COMPLETE", params=[0.1 * (i + 1), 0.9, True], value=-100.0 * (i + 1), intermediate={},
                   user_attrs={"wandb_run_dir": str(tmp_path / "gone" / f"run-20260101_000000-run000{i}")})
              for i in range(2)]
    fake_study(tmp_path / "on.journal", "on", trials=online)
    code = report_main(["on", "--storage", str(tmp_path / "on.journal"), "--project", "proj", "--entity", "team"])
    assert code == 0
    assert api.paths == ["team/proj/run0000", "team/proj/run0001"]  # histories through the API
    (report,) = saved
    assert (report.project, report.entity) == ("proj", "team") and "W&B report" in capsys.readouterr().out
    assert report.blocks[-1].runsets[0].filters == "Group = 'on'"
    text = (tmp_path / "on.report.html").read_text()
    assert "id='missing'" not in text and text.count("<img") == 6


def test_report_cli_says_when_the_wandb_report_cannot_be_saved(tmp_path, monkeypatch, capsys):
    def refuse():
        raise RuntimeError("no API key configured")

    monkeypatch.setattr("workbench.analysis.histories.default_api", refuse)
    fake_study(tmp_path / "f.journal")
    code = report_main(["fake", "--storage", str(tmp_path / "f.journal"), "--wandb-report", "always"])
    err = capsys.readouterr().err
    assert code == 1 and "W&B report not saved: RuntimeError: no API key configured" in err
    assert (tmp_path / "fake.report.html").is_file()  # the HTML report is written first
