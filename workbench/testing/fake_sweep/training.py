"""Synthetic training with the real ``run_training`` interface."""
from __future__ import annotations

import copy
import json
import math
import os
import random
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict


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



class _Curve:
    """One fake run's iterations: yields (iteration, metrics); keeps the evaluations it made.

    Its state (iteration, RNG, evaluations) is its checkpoint: ``save``/``load`` a JSON
    ``last.ckpt``, as the real agent's, so a resumed fake run goes on exactly where it stopped."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg, self.fake = cfg, cfg.get("fake") or {}
        self.per_iter = int(cfg.env.num_envs) * int(cfg.agent.num_steps)
        self.iterations = max(1, int(cfg.agent.training_max_steps) // self.per_iter)
        self.rng = random.Random(int(cfg.seed) * 7919 + hash(round(quality(cfg), 6)) % 1000)
        self.history: list = []
        self.evals: list = []
        self.done = 0  # iterations trained (a resumed run starts after them)
        self.resumed = False

    def save(self, path: Path) -> None:
        version, state, gauss = self.rng.getstate()
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({"iteration": self.done, "rng": [version, list(state), gauss],
                                   "evals": self.evals, "frames": self.done * self.per_iter}))
        os.replace(tmp, path)

    def load(self, path: Path) -> None:
        state = json.loads(Path(path).read_text())
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.done, self.evals, self.resumed = int(state["iteration"]), list(state["evals"]), True

    def __iter__(self):
        fake, top = self.fake, quality(self.cfg)
        eval_every = int(self.cfg.agent.evaluator.eval_metrics_every)
        for it in range(self.done + 1, self.iterations + 1):
            if fake.get("iteration_seconds"):
                (_burn if fake.get("busy") else time.sleep)(float(fake["iteration_seconds"]))
            if fake.get("raise_at_iteration") == it:
                raise RuntimeError(f"fake training exploded at iteration {it}")
            if fake.get("signal_at_iteration") == it and not self.resumed:  # a SLURM time limit, say
                os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")))
            progress = 1.0 - math.exp(-it / max(1.0, self.iterations / 4))
            metrics = {
                "info/frames": float(it * self.per_iter),
                "info/episode_reward": top * progress + self.rng.gauss(0, 2.0),
            }
            if it % eval_every == 0:
                value = top * progress + self.rng.gauss(0, 0.5)
                if (fake.get("nan_at_iteration") is not None and it >= int(fake["nan_at_iteration"])
                        and float(self.cfg.agent.e_clip) > float(fake.get("nan_above_e_clip") or -math.inf)):
                    value = float("nan")
                metrics["eval/episode_reward"] = value
                self.evals.append(value)
            self.history.append(metrics)
            self.done = it
            yield it, metrics

    def result(self, output_dir: Path, run_id: str) -> FakeTrainResult:
        evals = self.evals
        return FakeTrainResult(history=self.history, final_eval_return=evals[-1] if evals else None,
                               best_eval_return=max(evals) if evals else None, output_dir=output_dir,
                               wandb_run_id=run_id, frames=self.done * self.per_iter)


def run_training(cfg: DictConfig, output_dir: Path, callbacks: Any = None) -> FakeTrainResult:
    """As workbench.train.run_training: resumes from ``cfg.checkpoint`` or ``<output_dir>/last.ckpt``,
    writes ``last.ckpt`` after every iteration (the real agent: every few, and when an iteration's
    callback raises). ``<output_dir>/fake_iterations.log`` gets "<pid> <iteration>" per iteration."""
    output_dir = Path(output_dir)
    _record_device(cfg, output_dir)
    curve = _Curve(cfg)
    last = output_dir / "last.ckpt"
    resume_from = cfg.get("checkpoint") or (last if last.exists() else None)
    if resume_from:
        curve.load(Path(resume_from))
    run_id = f"fake-{uuid.uuid4().hex[:8]}"
    if callbacks is not None and callbacks.on_start is not None:
        callbacks.on_start({"wandb_run_id": run_id, "wandb_run_dir": None, "output_dir": str(output_dir)})
    stopped_by = None
    try:
        with open(output_dir / "fake_iterations.log", "a") as ran:
            for it, metrics in curve:
                ran.write(f"{os.getpid()} {it}\n")
                ran.flush()
                curve.save(last)
                if callbacks is not None and callbacks.on_iteration is not None:
                    callbacks.on_iteration(it, metrics)
    except BaseException as exc:
        stopped_by = exc
        raise
    finally:  # as the real training: the run's last word (W&B summary, exit code)
        if getattr(callbacks, "on_end", None) is not None:
            callbacks.on_end(stopped_by)
    return curve.result(output_dir, run_id)


def member_configs(cfg: DictConfig) -> list[DictConfig]:
    """As workbench.train_population.member_configs: one config per seed, with its overrides."""
    pop = cfg.population
    seeds = [int(s) for s in pop.seeds]
    overrides = list(pop.get("members") or []) or [{}] * len(seeds)
    members = []
    for seed, extra in zip(seeds, overrides):
        member = copy.deepcopy(cfg)
        with open_dict(member):
            member.seed = seed
        for key, value in dict(extra).items():
            OmegaConf.update(member, str(key), value, merge=False)
        members.append(member)
    return members


def run_population(cfg: DictConfig, output_dir: Path, callbacks: Any = None) -> list[FakeTrainResult]:
    """As workbench.train_population.run_population: the members step in lockstep, each
    reporting through ``callbacks`` (MemberCallbacks) with its index first."""
    members = member_configs(cfg)
    curves = [_Curve(member) for member in members]
    dirs = [Path(output_dir) / f"member_{i}" for i in range(len(members))]
    run_ids = [f"fake-{uuid.uuid4().hex[:8]}" for _ in members]
    for i, run_id in enumerate(run_ids):
        if callbacks is not None and callbacks.on_start is not None:
            callbacks.on_start(i, {"wandb_run_id": run_id, "wandb_run_dir": None, "output_dir": str(dirs[i])})
    stopped_by = None
    try:
        for steps in zip(*curves):
            for i, (it, metrics) in enumerate(steps):
                if callbacks is not None and callbacks.on_iteration is not None:
                    callbacks.on_iteration(i, it, metrics)
    except BaseException as exc:
        stopped_by = exc
        raise
    finally:
        for i in range(len(members)):
            if getattr(callbacks, "on_end", None) is not None:
                callbacks.on_end(i, stopped_by)
    return [curve.result(d, r) for curve, d, r in zip(curves, dirs, run_ids)]


class FakePopulationRun:
    """As workbench.train_population.PopulationRun: members in slots, stepped together (one
    iteration's time for all of them, as a batched population costs), closed one at a time."""

    def __init__(self, member_cfgs: list[DictConfig], dirs: list[Path], group: str,
                 labels: list[str] | None = None, on_start: Any = None,
                 checkpoints: list[Path | None] | None = None) -> None:
        self.on_start = on_start
        self.fake = member_cfgs[0].get("fake") or {}
        self._slots: list[dict | None] = [None] * len(member_cfgs)
        for slot, (cfg, directory) in enumerate(zip(member_cfgs, dirs)):
            self.insert(slot, cfg, directory, checkpoint=(checkpoints or [None] * len(dirs))[slot])

    def insert(self, slot: int, cfg: DictConfig, output_dir: Path, label: str = "",
               checkpoint: Path | None = None) -> None:
        output_dir = Path(output_dir)
        _record_device(cfg, output_dir)
        curve = _Curve(cfg)
        if checkpoint is not None:
            curve.load(Path(checkpoint))
        # the population pays the iteration time once per step, not each member
        curve.fake = {k: v for k, v in curve.fake.items() if k != "iteration_seconds"}
        self._slots[slot] = {"curve": curve, "steps": iter(curve), "dir": output_dir,
                             "run_id": f"fake-{uuid.uuid4().hex[:8]}", "cfg": cfg}
        if self.on_start is not None:
            self.on_start(slot, {"wandb_run_id": self._slots[slot]["run_id"], "wandb_run_dir": None,
                                 "output_dir": str(output_dir)})

    @property
    def open_slots(self) -> list[int]:
        return [i for i, s in enumerate(self._slots) if s is not None]

    def step(self) -> list[tuple[int, int, dict, bool]]:
        if self.fake.get("iteration_seconds"):
            (_burn if self.fake.get("busy") else time.sleep)(float(self.fake.iteration_seconds))
        out = []
        for slot in self.open_slots:
            state = self._slots[slot]
            it, metrics = next(state["steps"])
            state["curve"].save(state["dir"] / "last.ckpt")  # as the fake run: after every iteration
            with open(state["dir"] / "fake_iterations.log", "a") as ran:
                ran.write(f"{os.getpid()} {it}\n")
            out.append((slot, it, metrics, it >= state["curve"].iterations))
        return out

    def checkpoint(self) -> None:
        for slot in self.open_slots:
            self._slots[slot]["curve"].save(self._slots[slot]["dir"] / "last.ckpt")

    def close(self, slot: int, summary: dict | None = None, exit_code: int = 0) -> FakeTrainResult:
        state = self._slots[slot]
        self._slots[slot] = None
        (state["dir"] / "fake_summary.json").write_text(json.dumps({**(summary or {}), "exit_code": exit_code}))
        return state["curve"].result(state["dir"], state["run_id"])
