"""Candidate speed-ups for our PPO, measured against the unmodified agent in the same process.

    python -m bench.speedup_candidates [--workload halfcheetah_cleanrl] [--rounds 4] [--iterations 1]

The candidates live here as a subclass of ``PPO`` and patches (workbench/ is not changed); each is
described in BENCHMARKS.md's analysis with the file and function it would change:
  collect: (1) reuse the next step's value instead of a second critic forward per step, (2) env extras'
           mean/std once per rollout, (3) reward-normaliser moments once per rollout, (4) cached
           float32 moments in RunningMeanStd.norm
  all:     collect + (5) one backward for actor + critic losses, (6) Adam(foreach=True),
           (7) one torch.stack per minibatch in the metric accumulator
Variants run interleaved (rotating order) and are timed in process CPU time. ``--check`` also trains
the unmodified agent and the "all" variant from the same seed and reports the largest weight difference.
Writes bench/results/speedup_candidates_<workload>.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

import workbench.agents.ppo.agent as agent_module
from bench.machine import machine_info
from bench.peers.ours import Trainer
from bench.workloads import WORKLOADS
from workbench.agents.common.gradients import inspect_and_clip
from workbench.agents.common.running_mean_std import RunningMeanStd
from workbench.agents.ppo import losses
from workbench.agents.ppo.agent import MODEL_KEYS, PPO

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("base", "collect", "all")


class StackingAccumulator:
    """(7) one stack per minibatch instead of four small ops per metric."""

    def __init__(self):
        self.rows: list[tuple[tuple[str, ...], torch.Tensor]] = []

    def add(self, values: dict) -> None:
        with torch.no_grad():
            ts = [v if isinstance(v, torch.Tensor) else torch.tensor(float(v)) for v in values.values()]
            self.rows.append((tuple(values), torch.stack(ts).float()))

    def means(self) -> dict[str, float]:
        if not self.rows:
            return {}
        keys = self.rows[0][0]
        if all(k == keys for k, _ in self.rows):
            return dict(zip(keys, torch.stack([r for _, r in self.rows]).mean(0).tolist()))
        sums = defaultdict(list)
        for ks, row in self.rows:
            for k, v in zip(ks, row):
                sums[k].append(v)
        return {k: float(torch.stack(v).mean()) for k, v in sums.items()}


_update, _norm = RunningMeanStd.update, RunningMeanStd.norm


def versioned_update(self, x):
    _update(self, x)
    self._version = getattr(self, "_version", 0) + 1


def cached_norm(self, x):
    """(4) float32 mean/std recomputed only after an update."""
    key = (x.dtype, getattr(self, "_version", 0))
    cache = getattr(self, "_cache", None)
    if cache is None or cache[0] != key:
        cache = self._cache = (key, self.mean.to(x.dtype), (self.var + 1e-5).sqrt().to(x.dtype))
    centred = x - cache[1] if self.shift_mean else x
    return (centred / cache[2]).clamp(-self.clamp_value, self.clamp_value)


class LeanCollectPPO(PPO):
    """(1)-(3): PPO.collect_rollout with fewer torch calls per step; same buffer contents."""

    @torch.no_grad()
    def collect_rollout(self):
        T, N, dev = self.num_steps, self.num_envs, self.device
        self.model.eval()
        buf: dict[str, torch.Tensor] = {}
        finished_return, finished_length, finished_count = (torch.zeros((), device=dev) for _ in range(3))
        discounted = torch.empty(T, N, device=dev)
        extras: dict[str, torch.Tensor] = {}
        pending = None  # (t, ~terminated) whose next_value is the next step's value
        for t in range(T):
            obs = self.env.reset(self.done_ids)
            td = self.model(obs.clone(False))
            if pending is not None:
                buf["next_value"][pending[0]] = td.get("value") * pending[1]
            step = self.env.step(td.get("action"))
            dones = step.dones
            row = {**{k: td.get(k) for k in self.obs_keys + list(MODEL_KEYS)}, "rewards": step.reward, "dones": dones}
            if not buf:
                buf = {k: torch.empty((T, *v.shape), dtype=v.dtype, device=dev) for k, v in row.items()}
                buf["next_value"] = torch.empty((T, N, 1), device=dev)
            for k, v in row.items():
                buf[k][t] = v
            not_terminated = (~step.terminated).unsqueeze(-1)
            if t == T - 1 or dones.any():  # an env resets before the next forward: value its final obs now
                buf["next_value"][t] = self.model.critic(step.obs.clone(False)).get("value") * not_terminated
                pending = None
            else:
                pending = (t, not_terminated)
            g = self.reward_norm.discounted_return
            g.mul_(self.reward_norm.gamma * (~step.terminated)).add_(step.reward)
            discounted[t] = g
            self.episode_return += step.reward
            self.episode_length += 1
            finished_count += dones.sum()
            finished_return += (self.episode_return * dones).sum()
            finished_length += (self.episode_length * dones).sum()
            self.episode_return.mul_(~dones)
            self.episode_length.mul_(~dones)
            for key, value in step.extras.items():
                if not key.startswith("raw/"):
                    if key not in extras:
                        extras[key] = torch.empty(T, *value.shape, device=dev)
                    extras[key][t] = value
            self.done_ids = dones.nonzero().squeeze(-1)
        self.reward_norm.update(discounted.reshape(-1, 1))
        for key in MODEL_KEYS:
            if not torch.isfinite(buf[key]).all():
                raise FloatingPointError(f"non-finite {key!r} in the rollout at epoch {self.epoch}")
        self.step_count += T * N
        count = finished_count.item()
        if count > 0:
            self.last_episode_metrics = {"info/episode_reward": finished_return.item() / count,
                                         "info/episode_length": finished_length.item() / count}
        logs = dict(self.last_episode_metrics)
        logs["info/episodes_finished"] = count
        for key, v in extras.items():
            std = v.float().std(1).mean() if v.shape[1] > 1 else torch.zeros((), device=dev)
            mean, std = torch.stack((v.float().mean(1).mean(), std)).tolist()
            logs[f"env/{key}_mean"], logs[f"env/{key}_std"] = mean, std
        return buf, logs


class LeanPPO(LeanCollectPPO):
    """(5): one backward through both losses (the networks share no parameters: same gradients)."""

    def optimization_step(self, batch):
        c = self.config
        if c.adaptive_lr.enabled or c.actor_clip_frac_threshold is not None:
            return super().optimization_step(batch)
        loss, logs, _ = self.actor_loss(batch)
        logs["actor/update_skipped"] = 0.0
        old_values, returns = batch.get("value"), batch.get("returns")
        values = self.model.critic(batch).get("value")
        value_loss, value_clip_frac = losses.critic_loss(values, old_values, returns, c.e_clip, c.clip_critic_loss)
        self.actor_optimizer.zero_grad(set_to_none=True)
        self.critic_optimizer.zero_grad(set_to_none=True)
        (loss + value_loss).backward()
        for name, module, optimizer in (("actor", self.model.actor, self.actor_optimizer),
                                        ("critic", self.model.critic, self.critic_optimizer)):
            step = inspect_and_clip(module, c.gradient_clip_val, c.check_grad_mag, c.fail_on_bad_grads, name)
            if not step.bad:
                optimizer.step()
            logs.update({f"{name}/grad_norm_before_clip": step.norm_before_clip,
                         f"{name}/grad_norm_after_clip": step.norm_after_clip,
                         f"{name}/bad_grads_count": float(step.bad)})
            logs.update({f"grad_layers/{name}/{layer}": n for layer, n in step.layer_norms.items()})
        v, r = values.detach(), returns
        error = v - r
        logs.update({"losses/critic_loss": value_loss.detach(), "critic/model_loss": v.new_zeros(()),
                     "critic/value_clip_frac": value_clip_frac,
                     "critic/explained_variance": losses.explained_variance(v, r),
                     "critic/value_mean": v.mean(), "critic/value_std": v.std(),
                     "critic/return_mean": r.mean(), "critic/return_std": r.std(),
                     "critic/error_mean": error.mean(), "critic/error_std": error.std()})
        return logs


def build(variant: str, workload) -> Trainer:
    trainer = Trainer(workload)
    agent = trainer.agent
    if variant == "collect":
        agent.__class__ = LeanCollectPPO
    elif variant == "all":
        agent.__class__ = LeanPPO
        for name in ("actor_optimizer", "critic_optimizer"):  # (6)
            group = getattr(agent, name).param_groups[0]
            setattr(agent, name, torch.optim.Adam(group["params"], lr=group["lr"], eps=group["eps"],
                                                  betas=group["betas"], foreach=True))
    return trainer


def train(variant: str, trainer: Trainer, iterations: int) -> float:
    """Train ``iterations`` with the variant's patches in place; returns process CPU seconds."""
    patched = variant in ("collect", "all")
    if patched:
        RunningMeanStd.norm, RunningMeanStd.update = cached_norm, versioned_update
    if variant == "all":
        agent_module.MeanAccumulator = StackingAccumulator
    try:
        start = time.process_time()
        trainer.iterate(iterations)
        return time.process_time() - start
    finally:
        RunningMeanStd.norm, RunningMeanStd.update = _norm, _update
        agent_module.MeanAccumulator = _accumulator


_accumulator = agent_module.MeanAccumulator


def max_weight_difference(workload, iterations: int) -> float:
    runs = {}
    for variant in ("base", "all"):
        trainer = build(variant, workload)
        torch.manual_seed(5)
        train(variant, trainer, iterations)
        runs[variant] = dict(trainer.agent.model.named_parameters())
        trainer.close()
    return max((runs["base"][k] - runs["all"][k]).abs().max().item() for k in runs["base"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="halfcheetah_cleanrl", choices=list(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    w = WORKLOADS[args.workload]
    trainers = {v: build(v, w) for v in VARIANTS}
    for v in VARIANTS:
        train(v, trainers[v], 1)  # warm-up
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        for v in VARIANTS[r % 3:] + VARIANTS[:r % 3]:
            cpu[v].append(train(v, trainers[v], args.iterations))
    steps = w.steps_per_iteration * args.iterations
    result = {"workload": w.name, "rounds": args.rounds, "iterations_per_round": args.iterations, "variants": {}}
    for v in VARIANTS:
        result["variants"][v] = {
            "cpu_sps_median": statistics.median(steps / c for c in cpu[v]),
            "speedup_vs_base_median": statistics.median(b / c for b, c in zip(cpu["base"], cpu[v]))}
    if args.check:
        result["max_weight_difference_all_vs_base"] = max_weight_difference(w, 2)
    result["machine"] = machine_info()
    result["command"] = (f"python -m bench.speedup_candidates --workload {w.name} --rounds {args.rounds} "
                         f"--iterations {args.iterations}" + (" --check" if args.check else ""))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"speedup_candidates_{w.name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in result if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
