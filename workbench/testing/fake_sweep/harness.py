"""Helpers to run sweeps of the fake app in a scratch directory (tests and benchmarks)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import optuna
import yaml

import workbench
from workbench.sweep.storage import ENV_STORAGE, load_study, resolve_storage

REPO_ROOT = Path(workbench.__file__).resolve().parent.parent

PARAMS = {
    # half of the e_clip range is hopeless for the fake score: the pruner has work to do
    "agent.e_clip": "interval(0.05, 1.0)",
    "agent.tau": "interval(0.8, 1.0)",
    "agent.model.actor.actor_logstd": "interval(-3.0, 0.0)",
    "agent.advantage_normalization.use_ema": "choice(true, false)",
    "agent.advantage_normalization.ema_alpha": "tag(log, interval(0.005, 0.5))",
}
CONDITIONS = {"agent.advantage_normalization.ema_alpha": "agent.advantage_normalization.use_ema == true"}


def write_sweep(directory: Path, name: str, sweeper: dict | None = None, body: dict | None = None,
                iterations: int = 8, iteration_seconds: float = 0.02) -> Path:
    """Write ``<directory>/sweep/<name>.yaml`` (add ``hydra.searchpath=[file://<directory>]``)."""
    conf = {
        "n_trials": 6,
        "params": dict(PARAMS),
        "conditions": dict(CONDITIONS),
        "objective": {"metric": "eval/episode_reward", "window": 2, "report_every": 1},
        # random search + a strict pruner (keeps the top 25% only): some trials are pruned, reliably
        "pruner": {"_target_": "optuna.pruners.PercentilePruner", "percentile": 25.0,
                   "n_startup_trials": 2, "n_warmup_steps": 2},
        "sampler": {"_target_": "optuna.samplers.RandomSampler"},
        "heartbeat": {"interval": 0.5, "grace_period": 4.0, "max_retry": 1},
    }
    conf.update(sweeper or {})
    doc = {
        "defaults": [{"override /hydra/sweeper": "workbench_optuna"}],
        "agent": {"training_max_steps": iterations * 8 * 32, "evaluator": {"eval_metrics_every": 1}},
        "fake": {"iteration_seconds": iteration_seconds},
        "hydra": {"sweeper": conf},
    }
    for key, value in (body or {}).items():
        doc[key] = value
    path = directory / "sweep" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# @package _global_\n" + yaml.safe_dump(doc, sort_keys=False))
    return path


def env_for(storage: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.pop(ENV_STORAGE, None)
    if storage:
        env[ENV_STORAGE] = storage
    return env


def worker_cmd(directory: Path, name: str, extra: Sequence[str] = ()) -> list[str]:
    """One worker of the fake app (what ``workbench sweep`` starts, minus the real training)."""
    return [sys.executable, "-m", "workbench.testing.fake_sweep", "-m", f"+sweep={name}",
            f"hydra.searchpath=[file://{directory}]", f"hydra.sweep.dir={directory}/multirun/{name}",
            "torch_threads=1", *extra]


def sweep_cli_cmd(directory: Path, name: str, extra: Sequence[str] = ()) -> list[str]:
    """``workbench sweep`` on the fake app."""
    return [sys.executable, "-c", "import sys; from workbench.sweep.cli import sweep_main; "
            "sys.exit(sweep_main(sys.argv[1:]))", name, "--app", "workbench.testing.fake_sweep",
            f"hydra.searchpath=[file://{directory}]", *extra]


def run(cmd: Sequence[str], cwd: Path, storage: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=cwd, env=env_for(storage), capture_output=True, text=True,
                          timeout=timeout)


def open_study(directory: Path, name: str, storage: str | None = None) -> optuna.Study:
    return load_study(resolve_storage(storage, name, directory), name)
