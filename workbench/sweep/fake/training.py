"""Synthetic training with the real ``run_training`` interface."""
from __future__ import annotations

import json
import math
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


@dataclass
class FakeTrainResult:
    history: list = field(default_factory=list)
    final_eval_return: float | None = None
    best_eval_return: float | None = None
    output_dir: Path = Path(".")
    wandb_run_id: str | None = None
    wandb_run_dir: str | None = None
    frames: int = 0


def quality(cfg: DictConfig) -> float:
    """A smooth score of the knobs, best near e_clip 0.2, tau 0.95, logstd -1."""
    agent = cfg.agent
    norm = agent.advantage_normalization
    score = -((float(agent.e_clip) - 0.2) / 0.1) ** 2
    score -= ((float(agent.tau) - 0.95) / 0.05) ** 2
    score -= ((float(agent.model.actor.actor_logstd) + 1.0) / 1.0) ** 2
    score += 0.5 if norm.enabled else 0.0
    if norm.enabled and norm.use_ema:
        score -= abs(math.log(float(norm.ema_alpha) / 0.05)) * 0.3
    return 100.0 * math.exp(score / 4.0)


def _burn(seconds: float) -> None:
    # a fixed amount of single-threaded CPU work (process time, not wall time), like a
    # 1-thread trial: on a crowded machine it takes longer, as a real trial would
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        for i in range(2000):
            x += i * i


def warm_up(cfg: DictConfig) -> None:
    """A ``hydra.sweeper.preload`` hook: appends "<pid> <time>" to ``fake.preload_marker``."""
    marker = (cfg.get("fake") or {}).get("preload_marker")
    if marker:
        with open(marker, "a") as out:
            out.write(f"{os.getpid()} {time.time()}\n")


def _record_device(cfg: DictConfig, output_dir: Path) -> None:
    """What this run was given (``workbench sweep --devices``): tests read it back."""
    output_dir.mkdir(parents=True, exist_ok=True)
    seen = {"device": str(cfg.get("device")), "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
    (output_dir / "fake_device.json").write_text(json.dumps(seen))


def run_training(cfg: DictConfig, output_dir: Path, callbacks: Any = None) -> FakeTrainResult:
    fake = cfg.get("fake") or {}
    per_iter = int(cfg.env.num_envs) * int(cfg.agent.num_steps)
    iterations = max(1, int(cfg.agent.training_max_steps) // per_iter)
    eval_every = int(cfg.agent.evaluator.eval_metrics_every)
    rng = random.Random(int(cfg.seed) * 7919 + hash(round(quality(cfg), 6)) % 1000)
    output_dir = Path(output_dir)
    _record_device(cfg, output_dir)
    run_id = f"fake-{uuid.uuid4().hex[:8]}"
    if callbacks is not None and callbacks.on_start is not None:
        callbacks.on_start({"wandb_run_id": run_id, "wandb_run_dir": None, "output_dir": str(output_dir)})
    top = quality(cfg)
    history, evals = [], []
    stopped_by = None
    try:
        for it in range(1, iterations + 1):
            if fake.get("iteration_seconds"):
                (_burn if fake.get("busy") else time.sleep)(float(fake.iteration_seconds))
            if fake.get("raise_at_iteration") == it:
                raise RuntimeError(f"fake training exploded at iteration {it}")
            progress = 1.0 - math.exp(-it / max(1.0, iterations / 4))
            metrics = {
                "info/frames": float(it * per_iter),
                "info/episode_reward": top * progress + rng.gauss(0, 2.0),
            }
            if it % eval_every == 0:
                value = top * progress + rng.gauss(0, 0.5)
                if fake.get("nan_at_iteration") is not None and it >= int(fake.nan_at_iteration):
                    value = float("nan")
                metrics["eval/episode_reward"] = value
                evals.append(value)
            history.append(metrics)
            if callbacks is not None and callbacks.on_iteration is not None:
                callbacks.on_iteration(it, metrics)
    except BaseException as exc:
        stopped_by = exc
        raise
    finally:  # as the real training: the run's last word (W&B summary, exit code)
        if getattr(callbacks, "on_end", None) is not None:
            callbacks.on_end(stopped_by)
    return FakeTrainResult(
        history=history,
        final_eval_return=evals[-1] if evals else None,
        best_eval_return=max(evals) if evals else None,
        output_dir=output_dir,
        wandb_run_id=run_id,
        frames=iterations * per_iter,
    )
