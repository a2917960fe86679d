"""Advantage normalisation (ppo-spec 3.4): EMA statistics, or per-batch statistics."""
from __future__ import annotations

import torch
from torch import nn

from workbench.agents.ppo.config import AdvantageNormalizationConfig


class AdvantageNormalizer(nn.Module):
    """Normalises a rollout's advantages; the EMA state is checkpointed with the agent.

    With ``use_ema`` the advantages are scaled by the *previous* iteration's EMA
    statistics, clamped, and the EMA then moves toward the clamped advantages.
    Training uses the clamped z-scores.
    """

    def __init__(self, config: AdvantageNormalizationConfig):
        super().__init__()
        self.config = config
        self.register_buffer("mean_ema", torch.zeros((), dtype=torch.float32))
        self.register_buffer("std_ema", torch.ones((), dtype=torch.float32))

    @torch.no_grad()
    def forward(self, adv: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        logs = {"adv_norm/raw_mean": adv.mean(), "adv_norm/raw_std": adv.std(),
                "adv_norm/raw_min": adv.min(), "adv_norm/raw_max": adv.max()}
        if not c.enabled:
            return adv, logs
        if not c.use_ema:
            centred = adv - adv.mean() if c.shift_mean else adv
            return centred / (adv.std() + 1e-8), logs

        std_safe = self.std_ema.clamp(min=c.min_std)
        z = (adv - self.mean_ema) / std_safe if c.shift_mean else adv / std_safe
        z_clamped = z.clamp(-c.clamp_range, c.clamp_range)
        logs["adv_norm/clamp_frac"] = (z.abs() > c.clamp_range).float().mean()

        restored = z_clamped * std_safe + (self.mean_ema if c.shift_mean else 0.0)
        a = c.ema_alpha
        self.mean_ema.mul_(1 - a).add_(a * restored.mean())
        self.std_ema.mul_(1 - a).add_(a * (restored.std() + 1e-8))
        logs["adv_norm/mean_ema"] = self.mean_ema.clone()
        logs["adv_norm/std_ema"] = self.std_ema.clone()
        return z_clamped, logs
