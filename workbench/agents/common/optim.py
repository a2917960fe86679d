"""Optimizers from configs: every non-underscore field becomes a keyword argument."""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable

import torch


def build_optimizer(config, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    module, _, name = config._target_.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    kwargs = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if not f.name.startswith("_")}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    if cls in (torch.optim.Adam, torch.optim.AdamW) and kwargs.get("foreach") is None and kwargs.get("fused") is None:
        # one fused kernel for all parameters: on CPU torch's default is a per-tensor loop, and
        # even foreach costs ~160 us a step on a 64x64 MLP (fused: ~60 us)
        kwargs["fused"] = True
    # A frozen logstd is included, as in the reference; it simply never gets a gradient.
    return cls(list(params), **kwargs)


class MuonWithAuxAdam(torch.optim.Optimizer):
    """Muon (orthogonalised momentum, Newton-Schulz) for 2-D weights, Adam for everything else."""

    def __init__(self, params, lr=1e-3, weight_decay=0.01, momentum=0.95, adam_lr=2e-4,
                 adam_betas=(0.9, 0.95), adam_eps=1e-10):
        params = list(params)
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, adam_lr=adam_lr,
                                      adam_betas=tuple(adam_betas), adam_eps=adam_eps))

    @staticmethod
    def _orthogonalise(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
        a, b, c = 3.4445, -4.7750, 2.0315  # quintic Newton-Schulz coefficients (Jordan et al.)
        x = g / (g.norm() + 1e-7)
        transposed = x.shape[0] > x.shape[1]
        if transposed:
            x = x.T
        for _ in range(steps):
            s = x @ x.T
            x = a * x + (b * s + c * s @ s) @ x
        return x.T if transposed else x

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if p.ndim == 2:
                    buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
                    buf.mul_(group["momentum"]).add_(p.grad)
                    update = self._orthogonalise(p.grad + group["momentum"] * buf)
                    scale = max(1.0, p.shape[0] / p.shape[1]) ** 0.5
                    p.mul_(1 - group["lr"] * group["weight_decay"]).add_(update, alpha=-group["lr"] * scale)
                else:
                    b1, b2 = group["adam_betas"]
                    step = state["step"] = state.get("step", 0) + 1
                    m = state.setdefault("exp_avg", torch.zeros_like(p))
                    v = state.setdefault("exp_avg_sq", torch.zeros_like(p))
                    m.lerp_(p.grad, 1 - b1)
                    v.lerp_(p.grad.square(), 1 - b2)
                    denom = (v / (1 - b2**step)).sqrt().add_(group["adam_eps"])
                    p.addcdiv_(m / (1 - b1**step), denom, value=-group["adam_lr"])
        return None
