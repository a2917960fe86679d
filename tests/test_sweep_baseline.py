"""The defaults as trial 0: baseline params from the composed config, enqueued once per study
(two workers, restarts), marked ``baseline: true``, run without overrides for what is outside."""
from __future__ import annotations

import subprocess
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from workbench.sweep.baseline import baseline_params, enqueue_baseline
from workbench.testing.fake_sweep.harness import env_for, open_study, run, sweep_cli_cmd, worker_cmd, write_sweep
from workbench.sweep.space import parse_search_space
from workbench.sweep.storage import StorageSpec, open_storage

FAKE_DEFAULTS = {"agent.e_clip": 0.2, "agent.tau": 0.95, "agent.model.actor.actor_logstd": -2.9,
                 "agent.advantage_normalization.use_ema": True, "agent.advantage_normalization.ema_alpha": 0.05}


def composed(**agent) -> OmegaConf:
    return OmegaConf.create({"agent": {"e_clip": 0.2, "norm": {"on": False, "alpha": 0.05}, **agent},
                             "hydra": {"runtime": {"choices": {"env": "pendulum"}}}})


def test_baseline_params_follow_conditions_and_set_aside_out_of_range_defaults():
    space = parse_search_space(
        {"agent.e_clip": "interval(0.3, 0.4)", "agent.norm.on": "choice(true, false)",
         "agent.norm.alpha": "interval(0.01, 0.5)", "env": "choice(pendulum, cartpole)"},
        {"agent.norm.alpha": "agent.norm.on == true"})
    inside, outside = baseline_params(space, composed())
    assert inside == {"agent.norm.on": False, "env": "pendulum"}  # alpha inactive: on is false
    assert outside == {"agent.e_clip": 0.2}  # below its interval: run unoverridden, listed aside
    with_on = composed(norm={"on": True, "alpha": 0.05})
    assert baseline_params(space, with_on)[0]["agent.norm.alpha"] == 0.05


def test_enqueued_once_and_never_on_a_study_with_trials(tmp_path: Path):
    spec = StorageSpec(str(tmp_path / "b.journal"), "journal")
    study = optuna.create_study(study_name="b", storage=open_storage(spec), direction="maximize")
    space = parse_search_space({"agent.e_clip": "interval(0.1, 0.3)"})
    assert enqueue_baseline(study, spec, space, composed())
    assert not enqueue_baseline(study, spec, space, composed())  # a second worker, a restart
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.user_attrs["baseline"] is True and waiting.system_attrs["fixed_params"] == {"agent.e_clip": 0.2}
    other = optuna.create_study(study_name="old", storage=open_storage(spec))
    other.add_trial(optuna.trial.create_trial(value=1.0))
    assert not enqueue_baseline(other, spec, space, composed())  # an older study: no trial 0 to add


def baselines(study) -> list:
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("baseline")]


@pytest.mark.slow
def test_two_workers_run_the_baseline_once_and_a_rerun_does_not_add_one(tmp_path: Path):
    write_sweep(tmp_path, "base", {"n_trials": 4})
    done = run(sweep_cli_cmd(tmp_path, "base", ["--workers", "2"]), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    study = open_study(tmp_path, "base")
    (base,) = baselines(study)
    assert base.number == 0 and base.state == TrialState.COMPLETE
    assert base.params == FAKE_DEFAULTS  # the fake config's own values
    # the summary marks it; extending the study does not enqueue it again
    assert "baseline" in (tmp_path / "sweeps_db" / "base.summary.csv").read_text().splitlines()[0]
    again = run(sweep_cli_cmd(tmp_path, "base", ["--workers", "2", "--n-trials", "6"]), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(study.get_trials()) == 6 and len(baselines(study)) == 1


@pytest.mark.slow
def test_hand_started_workers_racing_to_create_the_study_enqueue_one_baseline(tmp_path: Path):
    write_sweep(tmp_path, "race", {"n_trials": 4})
    cmd = worker_cmd(tmp_path, "race")  # no dry run first: both workers create the study
    workers = [subprocess.Popen(cmd, cwd=tmp_path, env=env_for(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for w in workers:
        assert w.wait(timeout=240) == 0, w.stderr.read()[-3000:]
    study = open_study(tmp_path, "race")
    assert len(baselines(study)) == 1 and len(study.get_trials()) == 4
