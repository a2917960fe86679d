"""Per-iteration metric aggregation, per member, without a device sync per minibatch."""
from __future__ import annotations

import numpy as np
import torch


class MeanAccumulator:
    """Averages each key over the minibatches in which it appeared (ppo-spec 3.10), per member.

    Values are ``[P]`` tensors (or scalars: the same for every member); ``members`` ([P] bool)
    says which members had this row at all, so a member whose update was skipped contributes no
    critic or gradient values, exactly as a single run that skipped would not.
    """

    def __init__(self, num_members: int = 1):
        self.num_members = num_members
        # per row: its keys, the values stacked as [K, P] (one op per minibatch), the member mask
        self._rows: list[tuple[tuple[str, ...], torch.Tensor, torch.Tensor | None]] = []

    @torch.no_grad()
    def add(self, values: dict[str, torch.Tensor | float], members: torch.Tensor | None = None) -> None:
        if not values:
            return
        P = self.num_members
        device = members.device if members is not None else None
        parts = []
        for value in values.values():
            if not torch.is_tensor(value):
                value = torch.tensor(float(value), device=device)
            parts.append(value.reshape(-1).expand(P) if value.numel() == 1 else value.reshape(P))
        self._rows.append((tuple(values), torch.stack(parts).float(), members))

    def means(self) -> list[dict[str, float]]:
        """One dict per member: each key's mean over the rows that member had."""
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, np.ndarray] = {}
        for keys, stacked, members in self._rows:
            values = stacked.double().cpu().numpy()
            had = np.ones(self.num_members) if members is None else members.cpu().numpy().astype(np.float64)
            for key, row in zip(keys, values):
                if key not in sums:
                    sums[key], counts[key] = np.zeros(self.num_members), np.zeros(self.num_members)
                sums[key] += np.where(had > 0, row, 0.0)
                counts[key] += had
        out: list[dict[str, float]] = [{} for _ in range(self.num_members)]
        for key, total in sums.items():
            for member in range(self.num_members):
                if counts[key][member] > 0:
                    out[member][key] = float(total[member] / counts[key][member])
        return out
