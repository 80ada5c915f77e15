"""The LightningDataModule: packed windows of samples, streamed in a seeded order, sharded by
rank, collated (processor, positions, packing) in DataLoader workers, and resumable to the
exact batch.

Windows come from a mixture folder (`mmlong mix`: mix.parquet and packs.parquet, whose rows
record the window length and pixel budget), from samples files packed here (best-fit
decreasing into `max_length`), or from the needle generator (`needles.NeedleStream`). A
sample longer than the window is an error when the windows are made, never a truncation at
the forward pass (which would cut a vision span).

Resume: the loader's state (epoch, batches handed out) is saved in Lightning checkpoints
(its `state_dict`); on restore the batch sampler skips what the interrupted run consumed, and
the order of every epoch is a function of (seed, epoch), so the resumed run sees exactly the
batches the uninterrupted one would have.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset, Sampler

from mmlong import tokens as tk
from mmlong.errors import DatasetError
from mmlong.mixtures.packing import pack
from mmlong.samples import Sample, read_samples
from mmlong.train.collate import Collator
from mmlong.train.processor import build_processor


class Windows(Dataset):
    """Map-style dataset: window i is a list of samples."""

    def __init__(self, windows: list[list[Sample]]) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> list[Sample]:
        return self.windows[i]


class ShardedBatches(Sampler):
    """Batches of window indices for one rank: every epoch a permutation seeded by
    (seed, epoch), cut into batches of `batch_size`, batch k going to rank k % world. With
    `blocks` ((windows, batch size) of consecutive index ranges: curriculum stages) each block
    is permuted on its own, cut into its own batch size, and the blocks keep their order.
    `skip` batches are passed over once (a resumed epoch)."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1, shuffle: bool = True,
                 blocks: list[tuple[int, int]] | None = None, drop_last: bool = True) -> None:
        self.n, self.seed, self.rank, self.world, self.shuffle, self.drop_last = n, seed, rank, world, shuffle, drop_last
        self.blocks = [tuple(b) for b in blocks] if blocks else [(n, batch_size)]
        if sum(size for size, _ in self.blocks) != n:
            raise ValueError(f"blocks {self.blocks} do not add up to {n} windows")
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _counts(self) -> list[int]:
        return [size // bs if self.drop_last else -(-size // bs) for size, bs in self.blocks]

    def __len__(self) -> int:
        """Batches per rank: the same on every rank (none waits at the end); without
        `drop_last` a short last batch is kept (validation on one rank)."""
        return sum(self._counts()) // self.world

    def __iter__(self):
        rng = random.Random(f"{self.seed}:{self.epoch}")
        batches, start = [], 0
        for (size, bs), count in zip(self.blocks, self._counts()):
            block = list(range(start, start + size))
            if self.shuffle:
                rng.shuffle(block)
            batches += [block[k * bs : (k + 1) * bs] for k in range(count)]
            start += size
        mine = batches[: len(self) * self.world][self.rank :: self.world]
        skip, self.skip = self.skip, 0
        return iter(mine[skip:])


class ResumableLoader(DataLoader):
    """A DataLoader whose position Lightning saves in checkpoints: the epoch and the number of
    batches handed to the training loop."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.handed = 0
        self._resume = 0

    def __iter__(self):
        skip, self._resume = self._resume, 0
        self.batch_sampler.skip = skip
        self.handed = skip
        inner = super().__iter__()

        def counted():
            for batch in inner:
                self.handed += 1
                yield batch

        return counted()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.batch_sampler.epoch, "handed": self.handed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.epoch = state["epoch"]
        self._resume = state["handed"] if state["handed"] < len(self) else 0  # at an epoch's end: a fresh epoch


def windows_from_mixture(folder: Path) -> tuple[list[list[Sample]], int, tk.PixelBudget]:
    """The packed windows of an `mmlong mix` output folder, its window length and budget."""
    import pyarrow.parquet as pq

    packs, mix = folder / "packs.parquet", folder / "mix.parquet"
    if not packs.is_file() or not mix.is_file():
        raise DatasetError(f"{folder}: not a mixture folder (needs mix.parquet and packs.parquet from `mmlong mix`)")
    samples = {s.sample_id: s for s in read_samples(mix)}
    rows = pq.read_table(packs).to_pylist()
    if not rows:
        raise DatasetError(f"{packs}: no windows")
    missing = [i for r in rows for i in r["sample_ids"] if i not in samples]
    if missing:
        raise DatasetError(f"{packs}: windows name samples that {mix} lacks ({missing[:3]} ...)")
    return ([[samples[i] for i in r["sample_ids"]] for r in rows], rows[0]["max_length"],
            tk.PixelBudget(rows[0]["min_pixels"], rows[0]["max_pixels"]))


def windows_from_samples(paths: list[str], max_length: int) -> tuple[list[list[Sample]], tk.PixelBudget]:
    """Samples files packed into windows of `max_length` (best-fit decreasing)."""
    samples = [s for p in paths for s in read_samples(p)]
    if not samples:
        raise DatasetError(f"{paths}: no samples")
    budgets = {s.budget for s in samples}
    if len(budgets) > 1:
        raise DatasetError(f"{paths}: samples counted under different pixel budgets {sorted(map(str, budgets))}")
    by_id = {s.sample_id: s for s in samples}
    packed = pack([(s.sample_id, s.total_tokens) for s in samples], max_length)
    return [[by_id[i] for i, _ in w] for w in packed.windows], budgets.pop()


class PackedData(L.LightningDataModule):
    """Training windows of packed samples, `batch_size` windows (rows) per micro-batch."""

    def __init__(self, mixture: str | None = None, samples: list[str] | None = None, max_length: int | None = None,
                 batch_size: int = 1, num_workers: int = 0, seed: int = 0, tokenizer: str | None = None,
                 spatial_merge_size: int = 2, tokens_per_second: float = 2) -> None:
        super().__init__()
        if (mixture is None) == (samples is None):
            raise ValueError("data: give exactly one of mixture (an `mmlong mix` folder) and samples (samples files)")
        if samples is not None and not max_length:
            raise ValueError("data: samples are packed here, so max_length (the window) is needed")
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"data: need batch_size >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        self.mixture, self.samples, self.max_length = mixture, samples, max_length
        self.batch_size, self.num_workers, self.seed, self.tokenizer = batch_size, num_workers, seed, tokenizer
        self.spatial_merge_size, self.tokens_per_second = spatial_merge_size, tokens_per_second
        self.windows: list[list[Sample]] | None = None
        self.budget: tk.PixelBudget | None = None
        self.processor = None

    def setup(self, stage: str | None = None) -> None:
        if self.windows is not None:
            return
        if self.mixture is not None:
            self.windows, length, self.budget = windows_from_mixture(Path(self.mixture))
            if self.max_length and self.max_length != length:
                raise ValueError(f"data: the mixture was packed into {length}-token windows, not max_length {self.max_length}")
            self.max_length = length
        else:
            self.windows, self.budget = windows_from_samples(self.samples, self.max_length)
        self.processor = build_processor(self.budget, self.tokenizer)
        if len(self.windows) < self.batch_size * self.world:
            raise ValueError(f"data: {len(self.windows)} windows cannot make one batch of {self.batch_size} on {self.world} rank(s)")

    @property
    def world(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1

    @property
    def tokens_per_batch(self) -> int:
        """Window capacity of one micro-batch on one rank."""
        return self.batch_size * (self.max_length or 0)

    def collator(self) -> Collator:
        return Collator(self.processor, self.spatial_merge_size, self.tokens_per_second)

    def train_dataloader(self) -> ResumableLoader:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        sampler = ShardedBatches(len(self.windows), self.batch_size, self.seed, rank, self.world)
        return ResumableLoader(Windows(self.windows), batch_sampler=sampler, collate_fn=self.collator(),
                               num_workers=self.num_workers, persistent_workers=False)

    def epochs_for(self, steps: int, accumulate: int) -> int:
        """Epochs that `steps` optimizer steps of `accumulate` micro-batches take."""
        per_epoch = max(1, (len(self.windows) // self.batch_size) // self.world)
        return math.ceil(steps * accumulate / per_epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "windows": len(self.windows or [])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.windows is not None and state.get("windows") not in (None, len(self.windows)):
            raise ValueError(f"data: the checkpoint was trained on {state['windows']} windows, these are {len(self.windows)}")
