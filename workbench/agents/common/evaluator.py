"""Deterministic evaluation on an environment of its own (ppo-spec 6.1).

Workbench differences, documented in README: evaluation runs on a separate env
instance (so it never disturbs the training rollout), always reports the
deterministic episode return (``eval/episode_reward``) even without components,
restarts from the same initial states each time (comparable across evaluations),
and consumes no global RNG (it runs the mean path of the actor only).
"""
from __future__ import annotations

import copy

import torch

from workbench.agents.base.config import EvaluatorConfig


class Evaluator:
    def __init__(self, config: EvaluatorConfig, env):
        self.config = config
        self.env = env
        self.eval_count = 0
        self._initial_state = copy.deepcopy(env.state_dict())

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
    def evaluate(self, actor) -> dict[str, float]:
        """Run the mean policy for max_eval_steps; return eval/* metrics (floats)."""
        env = self.env
        env.load_state_dict(copy.deepcopy(self._initial_state))
        obs = env.reset()
        n = env.num_envs
        device = env.device
        ep_return = torch.zeros(n, device=device)
        ep_length = torch.zeros(n, device=device)
        done_returns, done_lengths = [], []
        components = self._component_thresholds()
        failed = torch.zeros(n, dtype=torch.bool, device=device)
        failed_by = {name: torch.zeros(n, dtype=torch.bool, device=device) for name in components}
        stats = {name: [] for name in components}

        was_training = actor.training
        actor.eval()
        done_ids = torch.empty(0, dtype=torch.long, device=device)
        for _ in range(self.config.max_eval_steps):
            obs = env.reset(done_ids)
            mu, _ = actor.distribution(obs.clone(False))
            step = env.step(mu)
            ep_return += step.reward
            ep_length += 1
            dones = step.dones
            for name, (threshold, fail_above) in components.items():
                value = step.extras.get(name)
                if value is None:
                    continue
                stats[name].append(value.float())
                if threshold is not None:  # a failure is sticky for the rest of the evaluation
                    failed_by[name] |= value > threshold if fail_above else value < threshold
                    failed |= failed_by[name]
            if dones.any():
                done_returns.append(ep_return[dones].clone())
                done_lengths.append(ep_length[dones].clone())
                ep_return[dones] = 0
                ep_length[dones] = 0
            done_ids = dones.nonzero().squeeze(-1)
        actor.train(was_training)
        self.eval_count += 1

        if done_returns:  # completed episodes only; partial ones would bias the mean
            returns, lengths = torch.cat(done_returns), torch.cat(done_lengths)
        else:
            returns, lengths = ep_return, ep_length
        metrics = {"eval/episode_reward": returns.mean().item(), "eval/episode_length": lengths.mean().item(),
                   "eval/num_episodes": float(returns.numel()), "eval/num_evaluated": float(n)}
        if any(t is not None for t, _ in components.values()):
            metrics["eval/success_rate"] = 1.0 - failed.float().mean().item()
        for name, (threshold, _) in components.items():
            if threshold is not None:
                metrics[f"eval/{name}/failure_rate"] = failed_by[name].float().mean().item()
        for name, values in stats.items():
            if values:
                v = torch.stack(values)
                metrics.update({f"eval/{name}/mean": v.mean().item(), f"eval/{name}/max": v.max().item(),
                                f"eval/{name}/min": v.min().item()})
        return metrics
