"""Per-iteration metric aggregation without a device sync per minibatch."""
from __future__ import annotations

from collections import defaultdict

import torch


class MeanAccumulator:
    """Averages each key over the minibatches in which it appeared (ppo-spec 3.10)."""

    def __init__(self):
        # per minibatch: the tensor keys with their values stacked in one tensor, and the
        # plain-number keys as they are (a torch.tensor() per number costs more than the maths)
        self._rows: list[tuple[tuple[str, ...], torch.Tensor | None, dict[str, float]]] = []

    @torch.no_grad()
    def add(self, values: dict[str, torch.Tensor | float]) -> None:
        keys, tensors, numbers = [], [], {}
        for key, value in values.items():
            if torch.is_tensor(value):
                keys.append(key)
                tensors.append(value if value.dim() == 0 else value.reshape(()))
            else:
                numbers[key] = float(value)
        stacked = torch.stack(tensors).float() if tensors else None
        self._rows.append((tuple(keys), stacked, numbers))

    def means(self) -> dict[str, float]:
        sums: dict[str, list[float]] = defaultdict(list)
        for keys, stacked, numbers in self._rows:
            if stacked is not None:
                for key, value in zip(keys, stacked.double().cpu().tolist()):
                    sums[key].append(value)
            for key, value in numbers.items():
                sums[key].append(value)
        return {key: sum(vals) / len(vals) for key, vals in sums.items()}
