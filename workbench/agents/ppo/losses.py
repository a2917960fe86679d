"""PPO's formulas as pure functions (written out in docs/agent.md, "The algorithm, step by step").

Each takes tensors and returns tensors, so each is tested on its own against an
independent computation. Batch means run over the last sample dimension, so a population's
``[P, B]`` inputs give one value per member (``[P]``) and a single ``[B]`` batch gives a scalar.
Hyperparameters are floats or tensors that broadcast against the samples (``[P, 1]``).
"""
from __future__ import annotations

import math

import torch

HALF_LOG_2PI_E = 0.5 + 0.5 * math.log(2 * math.pi)


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, dones: torch.Tensor,
                gamma: float | torch.Tensor, tau: float | torch.Tensor, time_dim: int = 0) -> torch.Tensor:
    """Advantages over a rollout ([T, N], or [P, T, N] with ``time_dim=1``), backward from A_T = 0.

    ``next_values`` already holds 0 on terminations and V(final obs) on
    truncations, so one ``dones`` mask (termination or truncation) cuts the
    recursion while the bootstrap stays right for both. Tensor ``gamma``/``tau`` broadcast
    against one time step's slice (``[P, 1]`` for a population).
    """
    gamma_step = _as_dtype(gamma, rewards.dtype)
    gamma_all = gamma_step.unsqueeze(time_dim) if torch.is_tensor(gamma_step) and time_dim else gamma_step
    deltas = (rewards + gamma_all * next_values - values).movedim(time_dim, 0)
    not_done = (1.0 - dones.to(rewards.dtype)).movedim(time_dim, 0)
    gamma_tau = _product(gamma, tau, rewards.dtype)
    advantages = torch.empty_like(rewards)
    out = advantages.movedim(time_dim, 0)  # a view: writing a time step writes advantages
    running = torch.zeros_like(deltas[0])
    for t in reversed(range(deltas.shape[0])):
        running = deltas[t] + gamma_tau * not_done[t] * running
        out[t] = running
    return advantages


def _product(a: float | torch.Tensor, b: float | torch.Tensor, dtype: torch.dtype) -> float | torch.Tensor:
    """a * b in float64, then in ``dtype``: what Python's float product gives a float32 op."""
    if not torch.is_tensor(a) and not torch.is_tensor(b):
        return a * b
    return (torch.as_tensor(a, dtype=torch.float64) * torch.as_tensor(b, dtype=torch.float64)).to(dtype)


def _as_dtype(x: float | torch.Tensor, dtype: torch.dtype) -> float | torch.Tensor:
    return x.to(dtype) if torch.is_tensor(x) else x


def _clamp(x: torch.Tensor, low, high) -> torch.Tensor:
    if torch.is_tensor(low):
        return torch.maximum(torch.minimum(x, high), low)
    return x.clamp(low, high)


def ratio_bounds(e_clip: float | torch.Tensor, dtype: torch.dtype = torch.float32):
    """1 - e and 1 + e, computed in float64 as Python does for a float e."""
    if not torch.is_tensor(e_clip):
        return 1.0 - e_clip, 1.0 + e_clip
    e = e_clip.to(torch.float64)
    return (1.0 - e).to(dtype), (1.0 + e).to(dtype)


def ppo_actor_loss(advantages: torch.Tensor, ratio: torch.Tensor, e_clip: float | torch.Tensor) -> torch.Tensor:
    """mean(max(-A * r, -A * clamp(r, 1 - e, 1 + e)))."""
    low, high = ratio_bounds(e_clip, ratio.dtype)
    unclipped = -advantages * ratio
    clipped = -advantages * _clamp(ratio, low, high)
    return torch.maximum(unclipped, clipped).mean(-1)


def clip_fraction(ratio: torch.Tensor, e_clip: float | torch.Tensor) -> torch.Tensor:
    """Share of samples whose ratio left [1 - e, 1 + e], whatever the advantage's sign."""
    return ((ratio - 1.0).abs() > _as_dtype(e_clip, ratio.dtype)).float().mean(-1)


def bounds_loss(mu: torch.Tensor, coef: float | torch.Tensor) -> torch.Tensor:
    """Soft penalty on action means outside [-1, 1]: batch mean of the per-sample sum."""
    above = (mu - 1.0).clamp(min=0.0).square()
    below = (mu + 1.0).clamp(max=0.0).square()
    return ((above + below).sum(-1) * _as_dtype(coef, mu.dtype)).mean(-1)


def gaussian_entropy(logstd: torch.Tensor) -> torch.Tensor:
    """Entropy of a diagonal Gaussian per sample: sum_i (1/2 + log(2 pi)/2 + log sigma_i)."""
    return (HALF_LOG_2PI_E + logstd).sum(-1)


def approx_kl(ratio: torch.Tensor) -> torch.Tensor:
    """mean(r - 1 - log r): a non-negative estimate of KL(old || new)."""
    return (ratio - 1.0 - torch.log(ratio + 1e-8)).mean(-1)


def critic_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, e_clip: float | torch.Tensor,
                clip: bool | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Value loss and the share of samples where the clipped term is the larger one.

    Inputs are [..., B] value samples; ``clip`` may be a per-member bool tensor ([P, 1])."""
    unclipped = (values - returns).square()
    if clip is False:
        return unclipped.mean(-1), torch.zeros(unclipped.shape[:-1], device=values.device)
    e = _as_dtype(e_clip, values.dtype)
    clipped_values = old_values + _clamp(values - old_values, -e, e)
    clipped = (clipped_values - returns).square()
    loss, frac = torch.maximum(unclipped, clipped).mean(-1), (clipped > unclipped).float().mean(-1)
    if clip is True:
        return loss, frac
    clip = clip.reshape(loss.shape)
    return torch.where(clip, loss, unclipped.mean(-1)), torch.where(clip, frac, torch.zeros_like(frac))


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """1 - Var(V - R) / Var(R), or 0 when the returns do not vary."""
    var_r = returns.var(-1)
    ev = 1.0 - (values - returns).var(-1) / (var_r + 1e-8)
    return torch.where(var_r > 1e-8, ev, torch.zeros_like(ev))


def gaussian_kl_same_std(mu_new: torch.Tensor, mu_old: torch.Tensor, logstd: torch.Tensor) -> torch.Tensor:
    """Batch mean of the analytic KL between Gaussians that share sigma: sum (dmu)^2 / (2 sigma^2)."""
    return ((mu_new - mu_old).square() / (2.0 * torch.exp(2.0 * logstd))).sum(-1).mean(-1)
