"""Packing samples into fixed-length windows (best-fit decreasing).

A window lists its samples with their offsets and lengths; every row also records the window
length and the pixel budget the samples were counted under, so the trainer reads them
instead of being told again. Samples keep their own positions:
the collator restarts text positions at 0 and computes each sample's M-RoPE positions on its
own, so no attention or position crosses a sample boundary.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from mmlong.store import atomic_write_table
from mmlong.tokens import DEFAULT_BUDGET, PixelBudget

PACKS_SCHEMA = pa.schema(
    [
        ("window", pa.int32()),
        ("sample_ids", pa.list_(pa.string())),
        ("offsets", pa.list_(pa.int64())),
        ("lengths", pa.list_(pa.int64())),
        ("used", pa.int64()),
        ("max_length", pa.int64()),
        ("min_pixels", pa.int64()),
        ("max_pixels", pa.int64()),
    ]
)


@dataclass
class Packed:
    max_length: int
    budget: PixelBudget = DEFAULT_BUDGET
    windows: list[list[tuple[str, int]]] = field(default_factory=list)
    """(sample_id, length) per window, in order."""

    @property
    def tokens(self) -> int:
        return sum(n for w in self.windows for _, n in w)

    @property
    def efficiency(self) -> float:
        """Tokens used / window capacity."""
        return self.tokens / (len(self.windows) * self.max_length) if self.windows else 0.0

    def summary(self) -> dict:
        return {"max_length": self.max_length, "windows": len(self.windows), "samples": sum(map(len, self.windows)),
                "tokens": self.tokens, "efficiency": round(self.efficiency, 4)}

    def write(self, path: Path) -> None:
        rows = []
        for i, window in enumerate(self.windows):
            lengths = [n for _, n in window]
            offsets = [sum(lengths[:k]) for k in range(len(lengths))]
            rows.append({"window": i, "sample_ids": [s for s, _ in window], "offsets": offsets, "lengths": lengths,
                         "used": sum(lengths), "max_length": self.max_length, "min_pixels": self.budget.min_pixels,
                         "max_pixels": self.budget.max_pixels})
        atomic_write_table(pa.Table.from_pylist(rows, schema=PACKS_SCHEMA), path)


def pack(samples: list[tuple[str, int]], max_length: int, budget: PixelBudget = DEFAULT_BUDGET) -> Packed:
    """Best-fit decreasing: longest first, each into the fullest window that still holds it.
    A sample longer than the window is an error here, never a truncation at training time
    (which would cut into a vision span)."""
    packed = Packed(max_length, budget)
    free: list[tuple[int, int]] = []  # (free tokens, window index), sorted
    for sample_id, n in sorted(samples, key=lambda s: (-s[1], s[0])):
        if n > max_length:
            raise ValueError(f"sample {sample_id} has {n} tokens, more than the window of {max_length}")
        i = bisect.bisect_left(free, (n, -1))
        if i == len(free):
            packed.windows.append([(sample_id, n)])
            bisect.insort(free, (max_length - n, len(packed.windows) - 1))
        else:
            room, w = free.pop(i)
            packed.windows[w].append((sample_id, n))
            bisect.insort(free, (room - n, w))
    return packed
