"""The 2-worker sweep on a real PostgreSQL server (installed and started by pg_fixture)."""
from __future__ import annotations

from pathlib import Path

import pytest

from pg_fixture import postgres_url  # noqa: F401  (the session fixture)
from workbench.sweep.driver import budget_used
from workbench.testing.fake_sweep.harness import open_study, run, sweep_cli_cmd, write_sweep

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_two_workers_share_a_postgres_study(tmp_path: Path, postgres_url: str):  # noqa: F811
    # trust authentication accepts any password: use one to check it never reaches a file
    url = postgres_url.replace("postgres@", "postgres:hunter2-secret@")
    write_sweep(tmp_path, "pg", {"n_trials": 8})
    done = run(sweep_cli_cmd(tmp_path, "pg", ["--workers", "2", "--storage", url]), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "hunter2" not in done.stdout + done.stderr

    study = open_study(tmp_path, "pg", storage=url)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 8 and budget_used(trials) == 8
    assert sum(t.state.name == "PRUNED" for t in trials) >= 1
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert all(t.user_attrs["wandb_run_id"] for t in trials)
    # the summary goes to the sweep dir for a database server
    assert (tmp_path / "multirun" / "pg" / "pg.summary.csv").exists()
    for path in (tmp_path / "multirun").rglob("*"):
        if path.is_file():
            assert "hunter2" not in path.read_text(errors="ignore"), path

    # resuming with a larger budget continues the same study
    done = run(sweep_cli_cmd(tmp_path, "pg", ["--workers", "2", "--storage", url, "--n-trials", "10"]),
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert budget_used(study.get_trials(deepcopy=False)) == 10


def test_population_workers_share_a_postgres_study(tmp_path: Path, postgres_url: str):  # noqa: F811
    url = postgres_url.replace("postgres@", "postgres:hunter2-secret@")
    write_sweep(tmp_path, "pgpop", {"n_trials": 9})
    done = run(sweep_cli_cmd(tmp_path, "pgpop", ["--workers", "2", "--population", "3", "--storage", url]),
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "hunter2" not in done.stdout + done.stderr
    trials = open_study(tmp_path, "pgpop", storage=url).get_trials(deepcopy=False)
    assert len(trials) == 9 and budget_used(trials) == 9 and all(t.state.is_finished() for t in trials)
    assert all(t.user_attrs["population_worker"] and t.intermediate_values for t in trials)
    for path in (tmp_path / "multirun").rglob("*"):
        if path.is_file():
            assert "hunter2" not in path.read_text(errors="ignore"), path
