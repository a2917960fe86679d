"""Compact in-memory copy of every logged row, so a fallback run can replay them."""
from __future__ import annotations

from array import array
from typing import Any, Dict, Iterator, List, Mapping, Tuple


class RowStore:
    """Rows of float metrics stored as packed doubles.

    Consecutive iterations log the same keys, so each distinct key tuple is
    stored once and a row costs 8 bytes a value: hours of training stay in a
    few tens of MB. Rows with non-float values are kept as plain dicts.
    """

    def __init__(self) -> None:
        self._layouts: List[Tuple[str, ...]] = []
        self._layout_index: Dict[Tuple[str, ...], int] = {}
        self._rows: List[Tuple[int, Any]] = []

    def append(self, metrics: Mapping[str, Any]) -> None:
        keys = tuple(metrics)
        try:
            values = array("d", (float(metrics[k]) for k in keys))
        except (TypeError, ValueError):
            self._rows.append((-1, dict(metrics)))
            return
        if any(type(metrics[k]) is not float for k in keys):  # ints/bools: keep exact types
            self._rows.append((-1, dict(metrics)))
            return
        layout = self._layout_index.get(keys)
        if layout is None:
            layout = self._layout_index[keys] = len(self._layouts)
            self._layouts.append(keys)
        self._rows.append((layout, values))

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        for layout, values in self._rows:
            if layout < 0:
                yield dict(values)
            else:
                yield dict(zip(self._layouts[layout], values))
