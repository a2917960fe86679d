"""Minibatches of the flattened rollout: one row gather for all float32 fields.

A minibatch used to be one index op per field (a dozen); with the fields side by side in
one [size, D] tensor it is one gather, split into per-field views. Same values, fewer and
better-shaped copies (the gather reads whole rows).
"""
from __future__ import annotations

import math

import torch


class PackedRollout:
    def __init__(self, data: dict[str, torch.Tensor]):
        self.keys = list(data)
        size = next(iter(data.values())).shape[0]
        self.packed_keys = [k for k, v in data.items() if v.dtype == torch.float32]
        self.shapes = {k: data[k].shape[1:] for k in self.packed_keys}
        self.widths = [math.prod(self.shapes[k]) for k in self.packed_keys]
        self.packed = (torch.cat([data[k].reshape(size, -1) for k in self.packed_keys], dim=1)
                       if self.packed_keys else None)
        self.others = {k: v for k, v in data.items() if k not in self.shapes}  # bool, int, float64

    def gather(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rows ``idx`` of every field, in the fields' original order."""
        out: dict[str, torch.Tensor] = {}
        if self.packed is not None:
            rows = self.packed.index_select(0, idx)
            for key, part in zip(self.packed_keys, rows.split(self.widths, dim=1)):
                out[key] = part.reshape(len(idx), *self.shapes[key])
        for key, value in self.others.items():
            out[key] = value.index_select(0, idx)
        return {k: out[k] for k in self.keys}
