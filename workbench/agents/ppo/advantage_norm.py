"""Advantage normalisation: EMA statistics, or per-batch statistics, per member.

With ``use_ema`` the advantages are scaled by the *previous* iteration's EMA statistics,
clamped, and the EMA then moves toward the clamped advantages; training uses the clamped
z-scores. Early on (EMA mean 0, std 1) that is a clamp of the raw advantages to +-clamp_range,
until the EMA adapts (time constant 1/ema_alpha iterations). Without ``use_ema``: the batch
mean and unbiased std. ``enabled=false`` keeps the advantages.

Every knob may differ per member (``MemberHyperparams``): all three branches are computed for
the whole population and each member takes its own (booleans are masks). The EMA state is
``[P]`` and checkpointed with the agent.
"""
from __future__ import annotations

import torch
from torch import nn

from workbench.agents.ppo.population import MemberHyperparams


class AdvantageNormalizer(nn.Module):
    def __init__(self, hp: MemberHyperparams):
        super().__init__()
        self.hp = hp
        P = len(hp.configs)
        self.register_buffer("mean_ema", torch.zeros(P, dtype=torch.float32))
        self.register_buffer("std_ema", torch.ones(P, dtype=torch.float32))

    @torch.no_grad()
    def forward(self, adv: torch.Tensor, members: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``adv``: [P, M] (each member's whole rollout). Returns the normalised advantages, the
        logs every member has ([P] each) and the EMA logs, for members that use the EMA only.
        ``members``: the slots whose EMA may move (an empty slot's must not)."""
        hp = self.hp
        logs = {"adv_norm/raw_mean": adv.mean(1), "adv_norm/raw_std": adv.std(1),
                "adv_norm/raw_min": adv.amin(1), "adv_norm/raw_max": adv.amax(1)}
        shift = hp.adv_shift_mean.unsqueeze(1)

        # batch statistics
        centred = torch.where(shift, adv - adv.mean(1, keepdim=True), adv)
        batch_normed = centred / (adv.std(1, keepdim=True) + 1e-8)

        # EMA statistics of earlier iterations
        mean_ema, std_ema = self.mean_ema.unsqueeze(1), self.std_ema.unsqueeze(1)
        std_safe = torch.maximum(std_ema, hp.column("adv_min_std"))
        z = torch.where(shift, adv - mean_ema, adv) / std_safe
        clamp = hp.column("adv_clamp_range")
        z_clamped = torch.maximum(torch.minimum(z, clamp), -clamp)
        restored = z_clamped * std_safe
        restored = torch.where(shift, restored + mean_ema, restored)
        # 1 - alpha in float64, as a Python float alpha would be
        alpha, keep = hp.adv_ema_alpha.to(torch.float32), (1 - hp.adv_ema_alpha).to(torch.float32)
        new_mean = self.mean_ema * keep + alpha * restored.mean(1)
        new_std = self.std_ema * keep + alpha * (restored.std(1) + 1e-8)
        uses_ema = hp.adv_enabled & hp.adv_use_ema
        moves = uses_ema if members is None else uses_ema & members
        self.mean_ema.copy_(torch.where(moves, new_mean, self.mean_ema))
        self.std_ema.copy_(torch.where(moves, new_std, self.std_ema))
        ema_logs = {"adv_norm/clamp_frac": (z.abs() > clamp).float().mean(1),
                    "adv_norm/mean_ema": self.mean_ema.clone(), "adv_norm/std_ema": self.std_ema.clone()}

        use_ema = hp.adv_use_ema.unsqueeze(1)
        normed = torch.where(use_ema, z_clamped, batch_normed)
        out = torch.where(hp.adv_enabled.unsqueeze(1), normed, adv)
        return out, logs, ema_logs
