"""One network's parameters as views of a single ``[P, n]`` buffer, gradients too.

A population's optimizer step, gradient norms and clipping are then a handful of ops on one
tensor, with per-member coefficients broadcast as ``[P, 1]``, instead of a loop over every
parameter tensor. Row p of the buffer is member p's whole network.

Each parameter keeps its module (names, shapes, state_dict) but its storage is a view of the
buffer; its ``.grad`` is a view of the gradient buffer, which autograd accumulates into in
place. Zero the gradients with ``zero_grad()`` (never ``set_to_none``: that would cut the views).
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def quiet_layout_warning() -> Iterator[None]:
    """The views are strided across members, so autograd's backward notes that grad and param
    are not dense; accumulation into them is still in place and correct."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
        yield


class FlatParameters:
    def __init__(self, named_params: list[tuple[str, nn.Parameter]], num_members: int):
        self.names = [name for name, _ in named_params]
        self.params = [p for _, p in named_params]
        self.num_members = P = num_members
        for name, p in named_params:
            if p.shape[0] != P:
                raise ValueError(f"parameter {name} has {p.shape[0]} members, expected {P}")
        self.member_shapes = [tuple(p.shape[1:]) for p in self.params]
        self.sizes = [p[0].numel() for p in self.params]
        n = sum(self.sizes)
        device = self.params[0].device if self.params else torch.device("cpu")
        dtype = self.params[0].dtype if self.params else torch.float32
        self.data = torch.empty(P, n, device=device, dtype=dtype)
        self.grad = torch.zeros(P, n, device=device, dtype=dtype)
        self.grad_slices: list[torch.Tensor] = []  # [P, size] per parameter, views of ``grad``
        offset = 0
        with torch.no_grad():
            for p, size in zip(self.params, self.sizes):
                view = self.data[:, offset:offset + size]
                view.copy_(p.detach().reshape(P, size))
                p.data = view.view(p.shape)
                p.grad = self.grad[:, offset:offset + size].view(p.shape)
                self.grad_slices.append(self.grad[:, offset:offset + size])
                offset += size

    def zero_grad(self) -> None:
        self.grad.zero_()

    def per_param_norms(self) -> torch.Tensor:
        """[P, num_params] L2 norms of each parameter's gradient, per member (clip_grad_norm_'s
        per-parameter norms; one reduction per parameter beats one index_add over the buffer,
        which scatters every element)."""
        if not self.grad_slices:
            return self.grad.new_zeros(self.num_members, 0)
        return torch.stack([torch.linalg.vector_norm(g, dim=1) for g in self.grad_slices], dim=1)

    def member_slices(self, member: int) -> list[torch.Tensor]:
        return [p.detach()[member] for p in self.params]
