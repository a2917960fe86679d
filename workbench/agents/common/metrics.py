"""Per-iteration metric aggregation without a device sync per minibatch."""
from __future__ import annotations

from collections import defaultdict

import torch


class MeanAccumulator:
    """Averages each key over the minibatches in which it appeared (ppo-spec 3.10)."""

    def __init__(self):
        self._rows: list[tuple[tuple[str, ...], torch.Tensor]] = []

    @torch.no_grad()
    def add(self, values: dict[str, torch.Tensor | float]) -> None:
        """Keep one minibatch's values as a single stacked tensor (no per-value conversions)."""
        keys = tuple(values)
        device = next((v.device for v in values.values() if torch.is_tensor(v)), None)
        row = torch.stack([v.reshape(()).float() if torch.is_tensor(v) else torch.tensor(float(v), device=device)
                           for v in values.values()])
        self._rows.append((keys, row))

    def means(self) -> dict[str, float]:
        sums: dict[str, list[torch.Tensor]] = defaultdict(list)
        for keys, row in self._rows:
            for key, value in zip(keys, row.cpu().unbind()):
                sums[key].append(value)
        return {key: torch.stack(vals).mean().item() for key, vals in sums.items()}
