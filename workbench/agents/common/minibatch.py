"""Minibatches of the flattened rollout: one row gather for all float32 fields.

A minibatch used to be one index op per field (a dozen); with the fields side by side in
one [size, D] tensor it is one gather, split into per-field views. Same values, fewer and
better-shaped copies (the gather reads whole rows).
"""
from __future__ import annotations

import math

import torch


class PackedRollout:
    """A population's flattened rollout: every field ``[P, size, ...]``; member p's minibatch
    rows come from member p's own data."""

    def __init__(self, data: dict[str, torch.Tensor]):
        self.keys = list(data)
        first = next(iter(data.values()))
        P, size = first.shape[:2]
        self.packed_keys = [k for k, v in data.items() if v.dtype == torch.float32]
        self.shapes = {k: data[k].shape[2:] for k in self.packed_keys}
        self.widths = [math.prod(self.shapes[k]) for k in self.packed_keys]
        self.packed = (torch.cat([data[k].reshape(P, size, -1) for k in self.packed_keys], dim=2)
                       if self.packed_keys else None)
        self.others = {k: v for k, v in data.items() if k not in self.shapes}  # bool, int, float64
        self.size = size
        self.row_offsets = torch.arange(P, device=first.device).unsqueeze(1) * size

    def gather(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows ``idx[p]`` of member p ([P, B] indices) of every field, in the fields' original order."""
        P, B = idx.shape
        out: dict[str, torch.Tensor] = {}
        # member p's rows are rows p * size + idx[p] of the [P * size, ...] flattening: one
        # index_select of whole rows (advanced indexing [members, idx] is several times slower)
        flat_idx = idx[0] if P == 1 else (idx + self.row_offsets).reshape(-1)

        def take(v: torch.Tensor) -> torch.Tensor:
            return v.reshape(P * self.size, *v.shape[2:]).index_select(0, flat_idx).view(P, B, *v.shape[2:])

        if self.packed is not None:
            rows = take(self.packed)
            for key, part in zip(self.packed_keys, rows.split(self.widths, dim=2)):
                out[key] = part.reshape(P, B, *self.shapes[key])
        for key, value in self.others.items():
            out[key] = take(value)
        return {k: out[k] for k in self.keys}
