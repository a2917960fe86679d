"""Gradient inspection, bad-gradient handling and clipping for one network (ppo-spec 3.8).

Workbench difference (spec section 10): a bad gradient with ``fail_on_bad_grads``
off skips the optimizer step entirely (no Adam moment update) instead of zeroing
the gradients and stepping anyway.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

BAD_GRAD_NORM = 1e6


class BadGradientError(ValueError):
    pass


@dataclass
class GradStep:
    """What happened to one network's gradients in one optimisation step."""
    norm_before_clip: torch.Tensor
    norm_after_clip: torch.Tensor
    bad: bool
    layer_norms: dict[str, torch.Tensor]


def inspect_and_clip(module: nn.Module, clip_val: float, check_magnitude: bool,
                     fail_on_bad: bool, name: str,
                     named_params: list[tuple[str, nn.Parameter]] | None = None) -> GradStep:
    """Measure the total grad norm, decide if it is bad, clip it; the caller steps only if not bad.
    ``named_params``: the module's ``named_parameters()``, when the caller keeps them (walking the
    module tree every minibatch costs more than the norms of a small MLP)."""
    if named_params is None:
        named_params = list(module.named_parameters())
    grads = [(n, p.grad) for n, p in named_params if p.grad is not None]
    per_param = torch._foreach_norm([g for _, g in grads]) if grads else []
    total = torch.linalg.vector_norm(torch.stack(per_param)) if grads else torch.zeros(())
    total_value = float(total)
    bad = not torch.isfinite(total).item() or (check_magnitude and total_value > BAD_GRAD_NORM)
    if bad and fail_on_bad:
        flat = torch.cat([g.reshape(-1) for _, g in grads])
        finite = torch.isfinite(flat)
        raise BadGradientError(
            f"{name} gradients are bad: norm={total_value:.4g}, non-finite fraction="
            f"{1 - finite.float().mean().item():.4g}, |grad| min={flat[finite].abs().min().item() if finite.any() else float('nan'):.4g} "
            f"max={flat[finite].abs().max().item() if finite.any() else float('nan'):.4g} "
            f"(set fail_on_bad_grads=false to skip such steps instead)")
    after = total
    if not bad and clip_val > 0:
        coef = (clip_val / (total + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_([g for _, g in grads], coef)
        after = total * coef
    layers = {n: v for (n, _), v in zip(grads, per_param)} if check_magnitude else {}
    return GradStep(total.detach(), after.detach(), bad, layers)
