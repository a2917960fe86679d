"""Per-iteration metric aggregation without a device sync per minibatch."""
from __future__ import annotations

from collections import defaultdict

import torch


class MeanAccumulator:
    """Averages each key over the minibatches in which it appeared (ppo-spec 3.10)."""

    def __init__(self):
        self._sums: dict[str, list[torch.Tensor]] = defaultdict(list)

    def add(self, values: dict[str, torch.Tensor | float]) -> None:
        for key, value in values.items():
            self._sums[key].append(torch.as_tensor(value).detach().float().reshape(()))

    def means(self) -> dict[str, float]:
        if not self._sums:
            return {}
        keys = list(self._sums)
        stacked = torch.stack([torch.stack(self._sums[k]).mean().cpu() for k in keys])
        return dict(zip(keys, stacked.tolist()))
