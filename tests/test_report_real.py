"""`workbench report` on a real sweep: the HTML report renders its plots in headless Chromium."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from matplotlib.image import imread

from sweep_fixture import real_sweep  # noqa: F401 - the session fixture
from test_report import no_network_fetch
from workbench.analysis.cli import report_main

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Pydantic V1 style:DeprecationWarning")]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PLOT_TITLES = ["Objective vs each parameter", "Learning curves (coloured by objective)",
               "Clip fractions and gradient norms: best and worst trial", "Parameter importances",
               "Parallel coordinates", "Pruning efficiency"]


def screenshot(html: Path, png: Path, profile: Path) -> np.ndarray:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1200,3000", html.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.is_file(), done.stderr[-2000:]
    return imread(png)[..., :3]


def colourful(pixels: np.ndarray) -> np.ndarray:
    """Saturated pixels: the report's text and tables are grey, only the plots have colour."""
    return pixels[(pixels.max(-1) - pixels.min(-1)) > 0.25]


def test_cli_writes_the_report_beside_the_study(real_sweep):  # noqa: F811
    done = subprocess.run([sys.executable, "-m", "workbench.cli", "report", real_sweep.study],
                          cwd=real_sweep.root, env=real_sweep.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = Path(real_sweep.storage).parent / f"{real_sweep.study}.report.html"
    assert f"HTML report: {report}" in done.stdout
    assert "Traceback" not in done.stderr and "no W&B history" not in done.stderr
    text = report.read_text()
    assert "id='missing'" not in text  # every trial's run was found
    assert no_network_fetch(text)
    images = re.findall(r"<img alt='([^']*)' src='data:image/png;base64,([^']*)'>", text)
    assert [title for title, _ in images] == PLOT_TITLES
    for _, data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    for n in range(6):  # every trial is in the table, with its W&B run id
        assert f"multirun/{real_sweep.study}/{n}" in real_sweep.root.joinpath(
            "sweeps_db", f"{real_sweep.study}.summary.csv").read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (.ci/run installs it)")
def test_report_plots_show_in_headless_chromium(real_sweep, tmp_path):  # noqa: F811
    out = tmp_path / "report.html"
    assert report_main([real_sweep.study, "--storage", real_sweep.storage, "--out", str(out)]) == 0
    shot = screenshot(out, tmp_path / "report.png", tmp_path / "profile")
    # the same page with its images removed: what text and tables alone look like
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r"<img[^>]*>", "", out.read_text()))
    control = screenshot(bare, tmp_path / "bare.png", tmp_path / "profile2")
    assert shot.shape == (3000, 1200, 3)
    assert len(colourful(control)) < 100  # grey text and tables: the measure sees no plot there
    plotted = colourful(shot)
    assert len(plotted) > 10_000
    assert len(np.unique((plotted * 255).round().astype(int), axis=0)) > 200  # colour maps, not one flat box
    # the top of the page is tables; the plots (colour) are in the lower part of the screenshot
    assert len(colourful(shot[:600])) < 100 and len(colourful(shot[1500:])) > 5_000


def test_report_on_a_study_whose_run_files_went_missing(real_sweep, tmp_path, capsys):  # noqa: F811
    """A copy of the real study in which two trials point at W&B files that are gone."""
    source = optuna.load_study(study_name=real_sweep.study, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(real_sweep.storage)))
    journal = tmp_path / "sweeps_db" / "copy.journal"
    journal.parent.mkdir()
    copy = optuna.create_study(study_name="copy", direction=source.direction,
                               storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal))))
    gone = {}
    for t in source.get_trials():
        attrs = dict(t.user_attrs)
        if t.number in (0, 3):
            attrs["wandb_run_dir"] = str(tmp_path / "deleted" / Path(attrs["wandb_run_dir"]).name)
            attrs["output_dir"] = str(tmp_path / "deleted")
            gone[t.number] = attrs["wandb_run_id"]
        copy.add_trial(optuna.trial.create_trial(
            state=t.state, params=t.params, distributions=t.distributions, value=t.value,
            intermediate_values=t.intermediate_values, user_attrs=attrs))
    assert report_main(["copy", "--storage", str(journal)]) == 0
    err = capsys.readouterr().err
    assert "2 of 6 trials have no W&B history" in err and "trials 0, 3" in err and "Traceback" not in err
    text = (tmp_path / "sweeps_db" / "copy.report.html").read_text()
    for number, run_id in gone.items():
        assert f"Trial {number}: W&amp;B files of run {run_id} are missing" in text
    assert text.count("<img") == len(PLOT_TITLES)  # the other trials are still plotted
