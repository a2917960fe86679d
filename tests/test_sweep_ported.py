"""A sweep file written for hydra-optuna-sweeper runs unchanged (``hydra/sweeper: optuna``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from workbench.sweep.factory import seed_sampler_for_worker, worker_seed
from workbench.testing.fake_sweep.harness import open_study, run, sweep_cli_cmd

PORTED = """\
# @package _global_
defaults:
  - override /hydra/sweeper: optuna
{sampler_override}
agent:
  training_max_steps: 2048
fake:
  iteration_seconds: 0.5  # trials long enough that both workers get one
hydra:
  sweeper:
    sampler:
      seed: 123
    storage: null
    study_name: null
    n_trials: {n_trials}
    n_jobs: 1
    params:
      agent.e_clip: interval(0.05, 0.4)
      agent.tau: interval(0.8, 1.0)
"""


def write_ported(directory: Path, name: str, n_trials: int = 4, sampler: str | None = None) -> None:
    override = f"  - override /hydra/sweeper/sampler: {sampler}" if sampler else ""
    path = directory / "sweep" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PORTED.format(sampler_override=override, n_trials=n_trials))


def test_worker_seeds_are_derived_from_the_fixed_one():
    assert worker_seed(123, 0) == 123
    assert len({worker_seed(123, w) for w in range(8)}) == 8
    assert worker_seed(123, 1) == worker_seed(123, 1)  # reproducible
    node, note = seed_sampler_for_worker({"_target_": "x", "seed": 123}, 1)
    assert node["seed"] == worker_seed(123, 1) and "derived from the fixed" in note
    assert seed_sampler_for_worker({"_target_": "x", "seed": None}, 1) == ({"_target_": "x", "seed": None}, None)
    assert seed_sampler_for_worker({"_target_": "x", "seed": 5}, 0)[1] is None


@pytest.mark.slow
def test_hydra_optuna_sweeper_file_runs_with_two_workers_and_distinct_seeds(tmp_path: Path):
    write_ported(tmp_path, "ported")
    # no baseline trial: this is about the sampled trials' seeds (the baseline has its own tests)
    done = run(sweep_cli_cmd(tmp_path, "ported", ["--workers", "2", "hydra.sweeper.baseline=false"]), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("derived from the fixed hydra.sweeper.sampler.seed 123") == 1
    study = open_study(tmp_path, "ported")  # study_name null: named after the file; storage null: the journal
    assert study.direction.name == "MINIMIZE"  # hydra-optuna-sweeper's default direction
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 4 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    first_by_worker = {}
    for t in sorted(trials, key=lambda t: t.number):
        first_by_worker.setdefault(t.user_attrs["worker"], t.params)
    assert len(first_by_worker) == 2
    a, b = first_by_worker.values()
    assert a != b  # the same fixed seed in both workers would propose identical params


def test_sampler_group_of_hydra_optuna_sweeper_is_known(tmp_path: Path):
    write_ported(tmp_path, "rand", sampler="random")
    done = run(sweep_cli_cmd(tmp_path, "rand", ["hydra.sweeper.dry_run=true"]), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sampler RandomSampler" in done.stdout
