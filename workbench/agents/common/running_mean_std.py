"""Running moments for observation and reward normalisation (float64 buffers)."""
from __future__ import annotations

import torch
from torch import nn

EPS = 1e-5


def batch_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean and population variance over dim 0."""
    x = x.double()
    return x.mean(0), x.var(0, unbiased=False), x.shape[0]


class RunningMeanStd(nn.Module):
    """Moments of a stream, updated by Welford's pairwise combination or by EMA.

    ``norm(x) = clamp((x - mean) / sqrt(var + 1e-5), +-clamp)``; ``unnorm`` inverts it.
    """

    def __init__(self, shape: tuple[int, ...], clamp_value: float = 5.0, ema_decay: float | None = None,
                 shift_mean: bool = True):
        super().__init__()
        self.clamp_value = clamp_value
        self.ema_decay = ema_decay
        self.shift_mean = shift_mean
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.ones((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        mean_b, var_b, n_b = batch_moments(x)
        if self.ema_decay is not None:
            d = self.ema_decay
            self.mean.mul_(d).add_((1 - d) * mean_b)
            self.var.mul_(d).add_((1 - d) * var_b)
            self.count.add_(n_b)
            return
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.var.copy_((self.var * n_a + var_b * n_b + delta.square() * n_a * n_b / n) / n)
        self.mean.add_(delta * n_b / n)
        self.count.copy_(n)

    def _moments(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and sqrt(var + eps) in ``dtype``, recomputed only after the float64 buffers change."""
        key = (dtype, self.mean.device, self.mean._version, self.var._version, id(self.mean), id(self.var))
        cached = getattr(self, "_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, self.mean.to(dtype), (self.var + EPS).sqrt().to(dtype))
            self._cache = cached
        return cached[1], cached[2]

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._moments(x.dtype)
        centred = x - mean if self.shift_mean else x
        return (centred / std).clamp(-self.clamp_value, self.clamp_value)

    def unnorm(self, y: torch.Tensor) -> torch.Tensor:
        mean, std = self._moments(y.dtype)
        x = y.clamp(-self.clamp_value, self.clamp_value) * std
        return x + mean if self.shift_mean else x


class RewardNormalizer(RunningMeanStd):
    """Scales rewards by the std of the per-env discounted return (no mean shift).

    The return ``G <- gamma * G * (1 - terminated) + r`` resets only on termination,
    as in the reference. Unlike the reference, G is checkpointed so a resumed run
    continues bit-for-bit.
    """

    def __init__(self, num_envs: int, gamma: float, clamp_value: float = 5.0, ema_decay: float | None = None,
                 device: torch.device | str = "cpu"):
        super().__init__((1,), clamp_value=clamp_value, ema_decay=ema_decay, shift_mean=False)
        self.gamma = gamma
        self.register_buffer("discounted_return", torch.zeros(num_envs, device=device))
        self.to(device)

    @torch.no_grad()
    def record_reward(self, reward: torch.Tensor, terminated: torch.Tensor) -> None:
        g = self.discounted_return
        g.mul_(self.gamma * (~terminated)).add_(reward)
        self.update(g.unsqueeze(-1))

    @torch.no_grad()
    def record_rollout(self, rewards: torch.Tensor, terminated: torch.Tensor) -> None:
        """``record_reward`` for every step of a [T, N] rollout, with one statistics update.

        Welford's pooled moments of all T x N returns equal the step-by-step combination (up to
        rounding), and the reference reads the statistics only after the rollout. EMA statistics
        depend on the order, so they are still updated step by step.
        """
        returns = torch.empty_like(rewards)
        g = self.discounted_return
        for t in range(rewards.shape[0]):
            g.mul_(self.gamma * (~terminated[t])).add_(rewards[t])
            returns[t] = g
            if self.ema_decay is not None:
                self.update(g.unsqueeze(-1))
        if self.ema_decay is None:
            self.update(returns.reshape(-1, 1))
