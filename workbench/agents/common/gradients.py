"""Gradient inspection, bad-gradient handling and clipping, per member, for one network.

Per member p: the total L2 norm of its gradient; it is bad if not finite, or (with
``check_grad_mag``) above 1e6. A bad member is not clipped and the caller skips its optimizer
step (workbench difference from the reference, which zeroes the grads and steps anyway, so
Adam's moments still move). Clipping scales member p's gradient to at most ``clip_val[p]``
(0 = off). Members are independent: one member's bad gradient never touches another's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.agents.common.flat_params import FlatParameters

BAD_GRAD_NORM = 1e6


class BadGradientError(ValueError):
    pass


@dataclass
class GradStep:
    """What happened to one network's gradients in one optimisation step, per member ([P])."""
    norm_before_clip: torch.Tensor
    norm_after_clip: torch.Tensor
    bad: torch.Tensor  # bool
    layer_names: list[str]
    layer_block: torch.Tensor | None  # [P, num_params] per-parameter norms (with check_grad_mag)

    @property
    def layer_norms(self) -> dict[str, torch.Tensor]:
        if self.layer_block is None:
            return {}
        return {name: self.layer_block[:, i] for i, name in enumerate(self.layer_names)}


def inspect_and_clip(flat: FlatParameters, clip_val: torch.Tensor, check_magnitude: bool, fail_on_bad: bool,
                     name: str, members: torch.Tensor) -> GradStep:
    """Measure, judge and clip the gradients of the members where ``members`` ([P] bool) is set."""
    per_param = flat.per_param_norms()  # [P, num_params]
    total = torch.linalg.vector_norm(per_param, dim=1)  # the norm of the norms, as clip_grad_norm_
    bad = ~torch.isfinite(total)
    if check_magnitude:
        bad |= total > BAD_GRAD_NORM
    bad &= members
    if fail_on_bad and bool(bad.any()):
        raise BadGradientError(_describe_bad(flat, name, bad, total))
    clip = clip_val.to(total.dtype)
    coef = torch.where((clip > 0) & ~bad, (clip / (total + 1e-6)).clamp(max=1.0), torch.ones_like(total))
    if bool((coef < 1.0).any()):
        flat.grad.mul_(coef.unsqueeze(1))
    after = total * coef
    return GradStep(total, after, bad, flat.names, per_param if check_magnitude else None)


def _describe_bad(flat: FlatParameters, name: str, bad: torch.Tensor, total: torch.Tensor) -> str:
    member = int(bad.nonzero()[0])
    g = flat.grad[member]
    finite = torch.isfinite(g)
    low = g[finite].abs().min().item() if finite.any() else float("nan")
    high = g[finite].abs().max().item() if finite.any() else float("nan")
    who = f" (member {member})" if flat.num_members > 1 else ""
    return (f"{name} gradients are bad{who}: norm={total[member].item():.4g}, non-finite fraction="
            f"{1 - finite.float().mean().item():.4g}, |grad| min={low:.4g} max={high:.4g} "
            f"(set fail_on_bad_grads=false to skip such steps instead)")
