"""tanh for large CPU tensors, through the sigmoid: tanh(x) = 2 sigmoid(2x) - 1.

torch 2.13's CPU tanh kernel is slow next to its sigmoid: on an [8192, 64] float32 tensor,
one thread, 1.4 ms against 0.38 ms for the identity's four ops (this machine,
AVX-512). With the tanh MLPs of a batched env (8192-sample minibatches) the tanh forward
was the largest single cost of the update. The identity's result is within 2e-7 of
``torch.tanh`` (absolute; float32 rounding of the subtraction near 0). The backward is
tanh's own, ``grad * (1 - y^2)`` from the output. Small tensors (a policy step on a few
envs) and other devices keep ``torch.tanh``: there one kernel beats four.
"""
from __future__ import annotations

import torch

# below this many elements the identity's four op dispatches cost more than tanh's slowness
MIN_ELEMENTS = 16384


class _TanhThroughSigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = _forward(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def _forward(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x * 2).mul_(2).sub_(1)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """``torch.tanh``, computed through the sigmoid on large CPU tensors."""
    if x.device.type != "cpu" or x.numel() < MIN_ELEMENTS or not x.is_floating_point():
        return torch.tanh(x)
    if torch.is_grad_enabled() and x.requires_grad:
        return _TanhThroughSigmoid.apply(x)
    return _forward(x)
