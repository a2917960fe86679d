"""Deterministic evaluation on an environment of its own (what it computes: docs/agent.md, "Evaluation").

Workbench differences, documented in README: evaluation runs on a separate env
instance (so it never disturbs the training rollout), always reports the
deterministic episode return (``eval/episode_reward``) even without components,
restarts from the same initial states each time (comparable across evaluations),
and consumes no global RNG (it runs the mean path of the actor only).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from workbench.agents.base.config import EvaluatorConfig
from workbench.metric_names import EVAL


class Evaluator:
    def __init__(self, config: EvaluatorConfig, env):
        self.config = config
        self.env = env
        self.eval_count = 0
        self.refresh_initial_state()

    def refresh_initial_state(self) -> None:
        """Every evaluation starts from the env's state now (call after replacing a member's envs)."""
        self._initial_state = copy.deepcopy(self.env.state_dict())

    def due(self, epoch: int) -> bool:
        every = self.config.eval_metrics_every
        return every is not None and epoch > 0 and epoch % every == 0

    def _component_thresholds(self) -> dict[str, tuple[float | None, bool]]:
        out = {}
        for name, comp in self.config.evaluation_components.items():
            params = (comp or {}).get("static_params", {}) or {}
            out[name] = (params.get("threshold"), bool(params.get("fail_above", True)))
        return out

    @torch.no_grad()
    def evaluate(self, actor, num_members: int = 1, members: Sequence[int] | None = None
                 ) -> dict[int, dict[str, float]]:
        """Run the mean policy for max_eval_steps; return eval/* metrics (floats) of each of
        ``members`` (default: all).

        The env holds ``num_members`` x n envs, member-major; member p acts on its own n envs.
        The other members' envs are skipped (``skip_members``): evaluating one member of a
        population costs one member's env steps where the env steps members one by one."""
        P = num_members
        members = list(range(P)) if members is None else sorted(set(members))
        env = self.env
        env.load_state_dict(copy.deepcopy(self._initial_state))
        skip = getattr(env, "skip_members", None)
        if skip is not None and P > 1:
            wanted = set(members)
            skip([p not in wanted for p in range(P)])
        try:
            return self._run(env, actor, P, members)
        finally:
            if skip is not None and P > 1:
                skip([False] * P)

    def _run(self, env, actor, P: int, members: list[int]) -> dict[int, dict[str, float]]:
        obs = env.reset()
        n = env.num_envs // P
        device = env.device
        ep_return = torch.zeros(P, n, device=device)
        ep_length = torch.zeros(P, n, device=device)
        done_return = torch.zeros(P, dtype=torch.float64, device=device)
        done_length = torch.zeros(P, dtype=torch.float64, device=device)
        done_count = torch.zeros(P, dtype=torch.float64, device=device)
        components = self._component_thresholds()
        failed = torch.zeros(P, n, dtype=torch.bool, device=device)
        failed_by = {name: torch.zeros(P, n, dtype=torch.bool, device=device) for name in components}
        stats: dict[str, list[torch.Tensor]] = {name: [] for name in components}

        was_training = actor.training
        actor.eval()
        done_ids = torch.empty(0, dtype=torch.long, device=device)
        for _ in range(self.config.max_eval_steps):
            obs = env.reset(done_ids)
            mu, _ = actor.distribution(obs.clone(False))  # the env's member-major [P * n] batch
            step = env.step(mu)
            ep_return += step.reward.view(P, n)
            ep_length += 1
            dones = step.dones.view(P, n)
            for name, (threshold, fail_above) in components.items():
                value = step.extras.get(name)
                if value is None:
                    continue
                value = value.float().view(P, n)
                stats[name].append(value.clone())  # an env may write its extras in place
                if threshold is not None:  # a failure is sticky for the rest of the evaluation
                    failed_by[name] |= value > threshold if fail_above else value < threshold
                    failed |= failed_by[name]
            if dones.any():
                done_return += (ep_return * dones).sum(1, dtype=torch.float64)
                done_length += (ep_length * dones).sum(1, dtype=torch.float64)
                done_count += dones.sum(1)
                ep_return.masked_fill_(dones, 0)
                ep_length.masked_fill_(dones, 0)
            done_ids = dones.reshape(-1).nonzero().squeeze(-1)
        actor.train(was_training)
        self.eval_count += 1

        # completed episodes only (partial ones would bias the mean); none completed: the partial ones
        finished = done_count > 0
        returns = torch.where(finished, done_return / done_count.clamp(min=1), ep_return.double().mean(1))
        lengths = torch.where(finished, done_length / done_count.clamp(min=1), ep_length.double().mean(1))
        episodes = torch.where(finished, done_count, torch.full_like(done_count, n))
        out = {}
        for p in members:
            metrics = {EVAL.episode_reward: returns[p].item(), EVAL.episode_length: lengths[p].item(),
                       EVAL.num_episodes: episodes[p].item(), EVAL.num_evaluated: float(n)}
            if any(t is not None for t, _ in components.values()):
                metrics[EVAL.success_rate] = 1.0 - failed[p].float().mean().item()
            for name, (threshold, _) in components.items():
                if threshold is not None:
                    metrics[f"eval/{name}/failure_rate"] = failed_by[name][p].float().mean().item()
            for name, values in stats.items():
                if values:
                    v = torch.stack([x[p] for x in values])
                    metrics.update({f"eval/{name}/mean": v.mean().item(), f"eval/{name}/max": v.max().item(),
                                    f"eval/{name}/min": v.min().item()})
            out[p] = metrics
        return out
