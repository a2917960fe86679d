"""One small real sweep, shared by the analysis, notebook and report tests (session scope).

``workbench sweep smoke`` on a tiny pendulum: 2 workers, 6 trials, 8 iterations each, a
median pruner that may prune from the 2nd report on, W&B offline. The pruner waits for 2
COMPLETE trials (Optuna counts only completed ones), so the best and the worst complete
trial always differ and importances have data, however the workers' timing falls. Import the fixture into a
test module with ``from sweep_fixture import real_sweep  # noqa: F401``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STUDY = "smoke"
N_TRIALS = 6
# 64 envs x 32 steps = 2048 frames an iteration, 8 iterations, an evaluation every 2
OVERRIDES = [
    "env.num_envs=64", "agent.batch_size=1024", "agent.training_max_steps=16384",
    "agent.evaluator.eval_metrics_every=2", "agent.evaluator.num_envs=8",
    "agent.evaluator.max_eval_steps=50", "hydra.sweeper.objective.report_every=2",
    "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.pruner.n_warmup_steps=2",
    "agent.check_grad_mag=true",
]


@dataclass(frozen=True)
class SweepFixture:
    root: Path  # where the sweep was started: sweeps_db/, multirun/ live here
    study: str
    storage: str  # the journal file
    env: dict  # environment for subprocesses that read this sweep (W&B offline, isolated dirs)


def sweep_env(root: Path) -> dict[str, str]:
    """The environment of the sweep's processes, set explicitly: conftest's per-test W&B
    dirs are monkeypatched into os.environ and vanish when the first test ends."""
    env = dict(os.environ)
    wandb_home = root / "wandb_home"
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        env[var] = str(wandb_home / var.lower())
    env.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
                "MPLBACKEND": "Agg"})
    env.pop("WANDB_API_KEY", None)
    env.pop("WORKBENCH_SWEEP_STORAGE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_sweep(root: Path, study: str = STUDY, n_trials: int = N_TRIALS, workers: int = 2) -> SweepFixture:
    env = sweep_env(root)
    cmd = [sys.executable, "-m", "workbench.cli", "sweep", "smoke", "--workers", str(workers),
           "--n-trials", str(n_trials), "--study-name", study, *OVERRIDES]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"fixture sweep failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    storage = root / "sweeps_db" / f"{study}.journal"
    assert storage.is_file(), f"no journal at {storage}"
    return SweepFixture(root=root, study=study, storage=str(storage), env=env)


_SWEEP: list[SweepFixture] = []


@pytest.fixture(scope="session")
def real_sweep(tmp_path_factory) -> SweepFixture:
    # Each test module that imports this fixture gets its own definition of it (pytest keys
    # fixtures by the module defining them), so the sweep itself is memoised: one per session.
    if not _SWEEP:
        _SWEEP.append(run_sweep(tmp_path_factory.mktemp("sweep")))
    return _SWEEP[0]


# ---- a synthetic study (no training, no W&B files): fast tests of the analysis code ----

def fake_study(journal: Path, name: str = "fake", direction: str = "maximize",
               trials: list[dict] | None = None):
    """A journal study holding finished trials written directly (``create_trial``).

    Each trial dict: state (COMPLETE/PRUNED/FAIL), params {e_clip, tau, use_ema}, value,
    intermediate {step: value}, user_attrs. Defaults: 3 complete, 1 pruned, 1 failed."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState, create_trial

    dists = {"agent.e_clip": FloatDistribution(0.05, 0.4), "agent.tau": FloatDistribution(0.8, 1.0),
             "agent.advantage_normalization.use_ema": CategoricalDistribution([True, False])}
    if trials is None:
        trials = [
            dict(state="COMPLETE", params=[0.10, 0.95, True], value=-150.0, intermediate={2: -300.0, 4: -150.0}),
            dict(state="COMPLETE", params=[0.20, 0.90, False], value=-250.0, intermediate={2: -320.0, 4: -250.0}),
            dict(state="COMPLETE", params=[0.30, 0.85, True], value=-400.0, intermediate={2: -500.0, 4: -400.0}),
            dict(state="PRUNED", params=[0.38, 0.82, False], value=-900.0, intermediate={2: -900.0}),
            dict(state="FAIL", params=[0.06, 0.99, True], value=None, intermediate={},
                 user_attrs={"fail_reason": "RuntimeError: boom"}),
        ]
    journal.parent.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, direction=direction)
    for number, spec in enumerate(trials):
        params = dict(zip(dists, spec["params"]))
        attrs = {"wandb_run_id": f"run{number:04d}", "objective_metric": "eval/episode_reward",
                 "wandb_run_dir": str(journal.parent / "gone" / str(number) / "wandb" / f"offline-run-x-run{number:04d}"),
                 "output_dir": str(journal.parent / "gone" / str(number))}
        attrs.update(spec.get("user_attrs", {}))
        study.add_trial(create_trial(
            state=getattr(TrialState, spec["state"]), params=params, distributions=dists,
            value=spec["value"], intermediate_values=spec["intermediate"], user_attrs=attrs))
    return study


def fake_history(iterations: int = 8, frames_per_iteration: int = 2048, scale: float = 1.0):
    """A history shaped like a training run's: eval/* only every 2nd iteration."""
    import numpy as np
    import pandas as pd

    i = np.arange(1, iterations + 1)
    evals = np.where(i % 2 == 0, -500.0 + 40.0 * i * scale, np.nan)
    return pd.DataFrame({
        "info/frames": i * frames_per_iteration, "eval/episode_reward": evals,
        "info/episode_reward": -600.0 + 30.0 * i * scale, "actor/clip_frac": 0.01 * i * scale,
        "critic/value_clip_frac": 0.3 / i, "actor/grad_norm_before_clip": 2.0 * scale + 0.1 * i,
        "actor/grad_norm_after_clip": np.minimum(2.0 * scale + 0.1 * i, 1.0),
        "critic/grad_norm_before_clip": 1.5 / i, "critic/grad_norm_after_clip": np.minimum(1.5 / i, 1.0),
        "losses/actor_loss": -0.01 * i, "losses/critic_loss": 10.0 / i,
    })
