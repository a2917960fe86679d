"""PPO's formulas as pure functions (ppo-spec sections 3.3, 3.6, 3.7).

Each takes tensors and returns tensors, so each is tested on its own against an
independent computation.
"""
from __future__ import annotations

import math

import torch

HALF_LOG_2PI_E = 0.5 + 0.5 * math.log(2 * math.pi)


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, dones: torch.Tensor,
                gamma: float, tau: float) -> torch.Tensor:
    """Advantages over a [T, N] rollout, backward from A_T = 0.

    ``next_values`` already holds 0 on terminations and V(final obs) on
    truncations, so one ``dones`` mask (termination or truncation) cuts the
    recursion while the bootstrap stays right for both.
    """
    advantages = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[0])
    not_done = 1.0 - dones.to(rewards.dtype)
    deltas = rewards + gamma * next_values - values
    for t in reversed(range(rewards.shape[0])):
        running = deltas[t] + gamma * tau * not_done[t] * running
        advantages[t] = running
    return advantages


def ppo_actor_loss(advantages: torch.Tensor, ratio: torch.Tensor, e_clip: float) -> torch.Tensor:
    """mean(max(-A * r, -A * clamp(r, 1 - e, 1 + e)))."""
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - e_clip, 1.0 + e_clip)
    return torch.maximum(unclipped, clipped).mean()


def clip_fraction(ratio: torch.Tensor, e_clip: float) -> torch.Tensor:
    """Share of samples whose ratio left [1 - e, 1 + e], whatever the advantage's sign."""
    return ((ratio - 1.0).abs() > e_clip).float().mean()


def bounds_loss(mu: torch.Tensor, coef: float) -> torch.Tensor:
    """Soft penalty on action means outside [-1, 1]: batch mean of the per-sample sum."""
    above = (mu - 1.0).clamp(min=0.0).square()
    below = (mu + 1.0).clamp(max=0.0).square()
    return ((above + below).sum(-1) * coef).mean()


def gaussian_entropy(logstd: torch.Tensor) -> torch.Tensor:
    """Entropy of a diagonal Gaussian per sample: sum_i (1/2 + log(2 pi)/2 + log sigma_i)."""
    return (HALF_LOG_2PI_E + logstd).sum(-1)


def approx_kl(ratio: torch.Tensor) -> torch.Tensor:
    """mean(r - 1 - log r): a non-negative estimate of KL(old || new)."""
    return (ratio - 1.0 - torch.log(ratio + 1e-8)).mean()


def critic_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, e_clip: float,
                clip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Value loss and the share of samples where the clipped term is the larger one."""
    unclipped = (values - returns).square()
    if not clip:
        return unclipped.mean(), torch.zeros((), device=values.device)
    clipped_values = old_values + (values - old_values).clamp(-e_clip, e_clip)
    clipped = (clipped_values - returns).square()
    return torch.maximum(unclipped, clipped).mean(), (clipped > unclipped).float().mean()


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """1 - Var(V - R) / Var(R), or 0 when the returns do not vary."""
    var_r = returns.var()
    ev = 1.0 - (values - returns).var() / (var_r + 1e-8)
    return torch.where(var_r > 1e-8, ev, torch.zeros_like(ev))


def gaussian_kl_same_std(mu_new: torch.Tensor, mu_old: torch.Tensor, logstd: torch.Tensor) -> torch.Tensor:
    """Batch mean of the analytic KL between Gaussians that share sigma: sum (dmu)^2 / (2 sigma^2)."""
    return ((mu_new - mu_old).square() / (2.0 * torch.exp(2.0 * logstd))).sum(-1).mean()
