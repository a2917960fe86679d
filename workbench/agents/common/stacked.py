"""Layers with a leading member dimension: P networks of one shape, run as batched matmuls.

A population of P agents keeps every weight as a stack, ``[P, out, in]``, and every activation
as ``[P, batch, features]``; one ``baddbmm`` then runs all P linear layers at once, so the
per-call overhead of a small network is paid once for the population instead of P times.
A population of one is the single agent: the stack has length 1, and its activations are plain
``[batch, features]`` run through torch's own ``linear`` (on small matrices batched matmul takes
another kernel, whose rounding differs in the last bit, and a single run must stay what it was).

Initialisation matches ``nn.LazyLinear``'s (PyTorch's default: weights and biases uniform in
+-1/sqrt(fan_in)), drawn per member from that member's generator, in the order the layers first
run. So member i's weights equal those of a single run seeded with seed_i, whatever P is.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

# Generators the lazy layers draw their initial weights from, one per member, set by the agent
# around the first forward (``initialising``). None: the global generator (a plain module).
_init_generators: Sequence[torch.Generator] | None = None


@contextlib.contextmanager
def initialising(generators: Sequence[torch.Generator]) -> Iterator[None]:
    """Lazy layers materialised inside draw member i's weights from ``generators[i]``."""
    global _init_generators
    previous, _init_generators = _init_generators, generators
    try:
        yield
    finally:
        _init_generators = previous


def _uniform_(t: torch.Tensor, bound: float, generator: torch.Generator | None) -> None:
    with torch.no_grad():
        if generator is None or generator.device == t.device:
            t.uniform_(-bound, bound, generator=generator)
        else:  # a CPU generator for a CUDA tensor: draw on the CPU, then move
            t.copy_(torch.empty(t.shape).uniform_(-bound, bound, generator=generator))


def parameter_views(module: nn.Module, kind: str, names: Sequence[str],
                    make: Callable[..., tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """``make(*params)`` for ``module``'s parameters ``names``. With autograd on they are made
    each call (the graph needs them fresh); without it they are made once, detached, and cached (a
    rollout or an evaluation runs the network once a step, and each view op costs about as much as
    a small layer's arithmetic). The cached views alias the parameters, which the optimizer updates
    in place; a parameter replaced by a new tensor makes them again."""
    params = [getattr(module, name) for name in names]
    if torch.is_grad_enabled():
        return make(*params)
    key = (kind, *(p.data_ptr() for p in params))
    cached = module.__dict__.get("_parameter_views")
    if cached is None or cached[0] != key:
        cached = (key, make(*(p.detach() for p in params)))
        module.__dict__["_parameter_views"] = cached
    return cached[1]


def member_zero(module: nn.Module, *names: str) -> tuple[torch.Tensor, ...]:
    """Member 0's slices of ``module``'s parameters, for a population of one (``parameter_views``)."""
    return parameter_views(module, "member_zero", names, _without_member_dim)


def member_columns(module: nn.Module, *names: str) -> tuple[torch.Tensor, ...]:
    """``module``'s [P, features] parameters as [P, 1, features], to broadcast over each member's
    samples (``parameter_views``)."""
    return parameter_views(module, "columns", names, _as_columns)


def _without_member_dim(*params: torch.Tensor) -> tuple[torch.Tensor, ...]:
    # squeeze, not select: its backward is a view, no zero-filled copy
    return tuple(p.squeeze(0) for p in params)


def _as_columns(*params: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(p.unsqueeze(1) for p in params)


def _baddbmm_operands(bias: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return bias.unsqueeze(1), weight.transpose(1, 2)


class StackedLinear(nn.Module):
    """``P`` linear layers ``y_p = x_p W_p^T + b_p``; ``in_features`` is found on the first call."""

    def __init__(self, num_members: int, out_features: int):
        super().__init__()
        self.num_members = num_members
        self.out_features = out_features
        self.in_features: int | None = None
        self.weight = nn.UninitializedParameter()
        self.bias = nn.UninitializedParameter()

    def materialise(self, in_features: int, device: torch.device) -> None:
        self.in_features = in_features
        P, out = self.num_members, self.out_features
        self.weight.materialize((P, out, in_features), device=device)
        self.bias.materialize((P, out), device=device)
        generators = _init_generators or [None] * P
        for member in range(P):
            self.reset_member(member, generators[member])

    def reset_member(self, member: int, generator: torch.Generator | None) -> None:
        """nn.Linear's default init for one member: weight, then bias, as reset_parameters draws them."""
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features else 0.0
        _uniform_(self.weight[member], bound, generator)
        _uniform_(self.bias[member], bound, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: [P, B, in], or [B, in] for a population of one."""
        if self.in_features is None:
            self.materialise(x.shape[-1], x.device)
        return self.apply_to(x)

    def apply_to(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # one member: torch's own linear, bit for bit what a plain nn.Linear gives
            weight, bias = member_zero(self, "weight", "bias")
            return nn.functional.linear(x, weight, bias)
        bias, weight_t = parameter_views(self, "baddbmm", ("bias", "weight"), _baddbmm_operands)
        return torch.baddbmm(bias, x, weight_t)

    def extra_repr(self) -> str:
        return f"members={self.num_members}, in_features={self.in_features}, out_features={self.out_features}"


class StackedLayerNorm(nn.Module):
    """LayerNorm over the features with a per-member affine (weight 1, bias 0 at init)."""

    def __init__(self, num_members: int, features: int, eps: float = 1e-5):
        super().__init__()
        self.features = features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_members, features))
        self.bias = nn.Parameter(torch.zeros(num_members, features))

    def reset_member(self, member: int, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            self.weight[member].fill_(1.0)
            self.bias[member].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # one member
            weight, bias = member_zero(self, "weight", "bias")
            return nn.functional.layer_norm(x, (self.features,), weight, bias, self.eps)
        normed = nn.functional.layer_norm(x, (self.features,), eps=self.eps)
        bias, weight = member_columns(self, "bias", "weight")
        return torch.addcmul(bias, normed, weight)


def member_layers(module: nn.Module) -> list[nn.Module]:
    """The layers of ``module`` that own per-member parameters with an init of their own."""
    return [m for m in module.modules() if isinstance(m, (StackedLinear, StackedLayerNorm))]
