"""Per-iteration metric aggregation, per member, without a device sync per minibatch."""
from __future__ import annotations

from collections import defaultdict

import torch


class MeanAccumulator:
    """Averages each key over the minibatches in which it appeared, per member: after a clip-fraction skip
    the critic and gradient keys come only from the minibatches that updated, not diluted by the skipped ones.

    Values are ``[P]`` tensors (or scalars: the same for every member). A tuple of keys may carry
    a ``[P, len(keys)]`` block (per-layer gradient norms: one tensor, not one per layer).
    ``members`` ([P] bool) says which members had this row at all, so a member whose update was
    skipped contributes no critic or gradient values, exactly as a single run that skipped would not.
    """

    def __init__(self, num_members: int = 1):
        self.num_members = num_members
        # per row: its keys, the values as one [K, P] tensor (one stack per minibatch), the member mask
        self._rows: list[tuple[tuple[str, ...], torch.Tensor, torch.Tensor | None]] = []

    @torch.no_grad()
    def add(self, values: dict[str | tuple[str, ...], torch.Tensor | float],
            members: torch.Tensor | None = None) -> None:
        if not values:
            return
        P = self.num_members
        device = members.device if members is not None else None
        keys: list[str] = []
        parts: list[torch.Tensor] = []  # [P] each: one stack, no reshape of the values already [P]
        for key, value in values.items():
            if isinstance(key, tuple):  # a block: [P, len(key)]
                keys.extend(key)
                parts.extend(value.reshape(P, len(key)).unbind(1))
                continue
            keys.append(key)
            if not torch.is_tensor(value):
                value = torch.tensor(float(value), device=device)
            parts.append(value if value.shape == (P,) else value.reshape(-1).expand(P))
        self._rows.append((tuple(keys), torch.stack([p.float() if p.dtype != torch.float32 else p
                                                     for p in parts]), members))

    def means(self) -> list[dict[str, float]]:
        """One dict per member: each key's mean over the rows that member had."""
        groups: dict[tuple[str, ...], list[tuple[torch.Tensor, torch.Tensor | None]]] = defaultdict(list)
        for keys, stacked, members in self._rows:
            groups[keys].append((stacked, members))
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, torch.Tensor] = {}
        for keys, rows in groups.items():  # one reduction per distinct set of keys
            values = torch.stack([v for v, _ in rows]).double()  # [R, K, P]
            had = torch.stack([torch.ones(self.num_members, dtype=torch.bool, device=v.device) if m is None else m
                               for v, m in rows]).to(values.device)  # [R, P]
            weights = had.unsqueeze(1).double()
            total = torch.where(weights > 0, values, 0.0).sum(0).cpu()  # [K, P]
            count = weights.sum(0).expand(len(keys), -1).cpu()
            for i, key in enumerate(keys):
                sums[key] = sums[key] + total[i] if key in sums else total[i]
                counts[key] = counts[key] + count[i] if key in counts else count[i]
        out: list[dict[str, float]] = [{} for _ in range(self.num_members)]
        for key, total in sums.items():
            per_member = (total / counts[key].clamp(min=1)).tolist()
            present = (counts[key] > 0).tolist()
            for member in range(self.num_members):
                if present[member]:
                    out[member][key] = per_member[member]
        return out
