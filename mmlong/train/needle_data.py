"""Needle-retrieval training data: the needle generator's samples over haystack datasets, packed
into windows, in curriculum stages, with held-out needles (other haystack text, other seed) to
validate on.

The samples are generated once, in a process pool, into a cache folder (by default the run's
`needles/`) laid out as mixture folders (`train/` and `val/`: mix.parquet + packs.parquet), so
training reads them as any packed mixture and a resumed run finds the very same windows.
Generation is deterministic: row r of stage s draws from its own seeded stream.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L

from mmlong import tokens as tk
from mmlong.mixtures.packing import Packed
from mmlong.samples import write_samples
from mmlong.schema import FIGURE, TEXT
from mmlong.store import atomic_write_text, is_dataset, iter_documents
from mmlong.synthesis.needles import Haystack, NeedleSpec, needle_sample, pool
from mmlong.train.collate import Collator
from mmlong.train.data import ResumableLoader, ShardedBatches, Windows, windows_from_mixture
from mmlong.train.processor import build_processor


@dataclass
class Stage:
    """A stretch of the curriculum: `steps` micro-batches of rows of `row_length` tokens (default:
    the longest of `lengths`) packed with needle samples whose target lengths are drawn from
    `lengths`, needles at depths drawn uniformly from `depths`. Short rows for short samples
    keep attention cheap: a packed row costs attention over its whole length."""

    steps: int
    lengths: list[int]
    row_length: int | None = None
    depths: tuple[float, float] = (0.0, 1.0)
    digits: int | list[int] = 7
    """Digits of the magic numbers, or several (drawn per sample): short values first are the
    curriculum that lets a tiny model find the copy circuit (validation: `val_digits`)."""
    distinct: bool = False
    """Magic numbers without repeated digits (see NeedleSpec.distinct)."""

    def __post_init__(self) -> None:
        if self.steps < 1 or not self.lengths or min(self.lengths) < 64:
            raise ValueError(f"stage: need steps >= 1 and lengths >= 64, got {self}")
        if not 0 <= self.depths[0] <= self.depths[1] <= 1:
            raise ValueError(f"stage: depths must lie in [0, 1] and increase, got {self.depths}")
        self.depths = tuple(self.depths)
        self.digits = [self.digits] if isinstance(self.digits, int) else list(self.digits)
        self.row_length = self.row_length or max(self.lengths)
        if max(self.lengths) > self.row_length:
            raise ValueError(f"stage: a length of {self.lengths} exceeds the row length {self.row_length}")


@dataclass
class NeedleSettings:
    """What the needles look like (shared by training and validation)."""

    variant: str = "single"
    modality: str = "text"
    """text: RULER sentences; image: the value shown on a card among the haystack's images and
    text (the haystack keeps its figures then)."""
    count: int = 4
    strip_digits: bool = True
    """Remove digits from the haystack (a number in it could pass for a needle)."""
    unit: str = "sentence"

    def __post_init__(self) -> None:
        if self.modality not in ("text", "image"):
            raise ValueError(f"needle.modality must be text or image, got {self.modality!r}")


def haystack_units(paths: list[str], cache: Path, strip_digits: bool, unit: str, images: bool = False) -> Haystack:
    """Text units (and figures, with `images`) of the haystack sources: mmlong datasets as they
    are, other inputs (PDFs as text, webpages with their figures) ingested first into `cache`."""
    from mmlong.ingest import IngestOptions, ingest
    from mmlong.ingest.pdf import PdfOptions

    docs = []
    for p in paths:
        root = Path(p)
        if not is_dataset(root):
            if not root.exists():
                raise ValueError(f"haystack {p}: no such file, folder or dataset")
            root = cache / "haystack" / hashlib.sha256(str(Path(p).resolve()).encode()).hexdigest()[:12]
            report = ingest([p], root, options=IngestOptions(pdf=PdfOptions(mode="text")), workers=1, progress=False)
            if report.failed:
                raise ValueError(f"haystack {p}: {report.failed}")
        docs += list(iter_documents(root, images=False))
    units = [u for u in pool(docs, unit, strip_digits) if u.kind == TEXT or (images and u.kind == FIGURE)]
    if not units:
        raise ValueError(f"haystack {paths}: no text")
    return Haystack(units)


_HAY: dict[str, Haystack] = {}
"""The haystacks of a generation, set once in each worker process (pool initializer)."""


def _set_haystack(key: str, hay: Haystack) -> None:
    _HAY[key] = hay


def _rows(key: str, stage: Stage, row_length: int, needle: NeedleSettings, first: int, count: int, seed: str,
          dataset: str, fill_rows: bool) -> list[list]:
    """Rows first..first+count-1 of a stage, each drawn from its own seeded stream: filled with
    samples of lengths drawn from the stage until none fits (`fill_rows`), else one sample."""
    tok = tk.load_tokenizer()
    hay = _HAY[key]
    out = []
    for r in range(first, first + count):
        rng = random.Random(f"{seed}:{r}")
        row, room = [], row_length
        while fits := [n for n in stage.lengths if n <= room]:
            spec = NeedleSpec(needle.variant, needle.modality, rng.uniform(*stage.depths), rng.choice(fits), needle.count,
                              rng.choice(stage.digits), stage.distinct)
            sample, _ = needle_sample(hay, spec, rng, dataset, tk.DEFAULT_BUDGET, tok)
            sample.sample_id = f"{seed}:{r}:{len(row)}"
            row.append(sample)
            room -= sample.total_tokens
            if not fill_rows:
                break
        out.append(row)
    return out


def generate(folder: Path, hay: Haystack, stages: list[Stage], rows: list[int], needle: NeedleSettings, seed: str,
             workers: int, fill_rows: bool = True) -> None:
    """Write `rows[s]` windows of every stage s into `folder`/stage-s as mixture folders
    (mix.parquet + packs.parquet), generated by `workers` processes."""
    from mmlong.pool import Pool

    key = f"{seed}:{folder}"
    _set_haystack(key, hay)
    chunk = 64
    tasks = [(s, first, min(chunk, rows[s] - first)) for s in range(len(stages)) for first in range(0, rows[s], chunk)]
    results: dict[tuple[int, int], list] = {}

    def collect(p: Pool) -> None:
        for done in p.wait():
            if done.error is not None:
                raise ValueError(f"needle generation: {done.error}") from done.error
            results[done.key] = done.result

    with Pool(workers, initializer=_set_haystack, initargs=(key, hay)) as p:
        for s, first, count in tasks:
            p.submit((s, first), _rows, key, stages[s], stages[s].row_length, needle, first, count, f"{seed}:{s}",
                     str(folder), fill_rows)
            while len(p) >= 2 * max(workers, 1):
                collect(p)
        while len(p):
            collect(p)
    for s, stage in enumerate(stages):
        windows = [row for k in sorted(results) if k[0] == s for row in results[k]]
        write_samples([x for row in windows for x in row], folder / f"stage-{s}" / "mix.parquet")
        Packed(stage.row_length, tk.DEFAULT_BUDGET, [[(x.sample_id, x.total_tokens) for x in row] for row in windows]
               ).write(folder / f"stage-{s}" / "packs.parquet")


class NeedleData(L.LightningDataModule):
    """Needle-retrieval training in curriculum stages, micro-batches of about `tokens_per_batch`
    tokens (rows of a stage's row length), and held-out validation needles at `val_lengths`
    (`val_per_length` each) over other haystack text with another seed."""

    validates = True

    def __init__(self, haystack: list[str], heldout: list[str], stages: list[Stage], tokens_per_batch: int = 8192,
                 val_lengths: list[int] = (128, 256, 512, 1024), val_per_length: int = 100,
                 needle: NeedleSettings | None = None, seed: int = 0, val_seed: int = 1, num_workers: int = 0,
                 workers: int = 0, cache: str | None = None, val_batch_size: int = 8, val_digits: int = 7) -> None:
        """`val_digits`: digits of the validation needles' magic numbers (training draws its
        own per stage)."""
        super().__init__()
        if not stages:
            raise ValueError("needle data: give at least one stage")
        too_long = [st.row_length for st in stages if st.row_length > tokens_per_batch]
        if too_long:
            raise ValueError(f"needle data: a row of {too_long[0]} tokens exceeds tokens_per_batch {tokens_per_batch}")
        self.haystack, self.heldout, self.stages, self.tokens = list(haystack), list(heldout), stages, tokens_per_batch
        self.val_lengths, self.val_per_length = list(val_lengths), val_per_length
        self.needle, self.seed, self.val_seed = needle or NeedleSettings(), seed, val_seed
        self.num_workers, self.workers, self.cache, self.val_batch_size = num_workers, workers, cache, val_batch_size
        self.val_digits = val_digits
        self.budget = tk.DEFAULT_BUDGET
        self.processor = None
        self.train_windows = self.val_windows = None

    def rows_per_batch(self, stage: Stage) -> int:
        return max(1, self.tokens // stage.row_length)

    @property
    def max_length(self) -> int:
        return max(st.row_length for st in self.stages)

    @property
    def tokens_per_batch(self) -> int:
        return self.tokens

    @property
    def steps(self) -> int:
        """Micro-batches of the whole curriculum."""
        return sum(st.steps for st in self.stages)

    def _folder(self) -> Path:
        if self.cache:
            return Path(self.cache)
        root = self.trainer.default_root_dir if self.trainer is not None else "."
        return Path(root) / "needles"

    def _settings(self) -> dict[str, Any]:
        return {"haystack": self.haystack, "heldout": self.heldout, "stages": [asdict(s) for s in self.stages],
                "tokens_per_batch": self.tokens, "val_lengths": self.val_lengths, "val_per_length": self.val_per_length,
                "needle": asdict(self.needle), "seed": self.seed, "val_seed": self.val_seed, "val_digits": self.val_digits,
                "format": 3}

    def prepare_data(self) -> None:
        """Generate (once) the training and validation windows into the cache folder."""
        import os

        folder = self._folder()
        stamp = folder / "settings.json"
        settings = json.dumps(self._settings(), sort_keys=True)
        if stamp.is_file() and stamp.read_text() == settings:
            return
        folder.mkdir(parents=True, exist_ok=True)
        workers = self.workers or len(os.sched_getaffinity(0))
        images = self.needle.modality == "image"
        train_hay = haystack_units(self.haystack, folder, self.needle.strip_digits, self.needle.unit, images)
        val_hay = haystack_units(self.heldout, folder, self.needle.strip_digits, self.needle.unit, images)
        generate(folder / "train", train_hay, self.stages, [st.steps * self.rows_per_batch(st) for st in self.stages],
                 self.needle, f"{self.seed}", workers)
        val_stages = [Stage(1, [n], digits=self.val_digits) for n in self.val_lengths]  # one sample per row
        generate(folder / "val", val_hay, val_stages, [self.val_per_length] * len(val_stages), self.needle,
                 f"val:{self.val_seed}", workers, fill_rows=False)
        atomic_write_text(stamp, settings)

    def setup(self, stage: str | None = None) -> None:
        if self.train_windows is not None:
            return
        self.prepare_data()
        folder = self._folder()
        self.train_windows = [windows_from_mixture(folder / "train" / f"stage-{s}")[0] for s in range(len(self.stages))]
        self.val_windows = [w for s in range(len(self.val_lengths)) for w in windows_from_mixture(folder / "val" / f"stage-{s}")[0]]
        self.processor = build_processor(self.budget)

    def train_dataloader(self) -> ResumableLoader:
        world = self.trainer.world_size if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        blocks = [(len(w), self.rows_per_batch(st)) for w, st in zip(self.train_windows, self.stages)]
        windows = [x for w in self.train_windows for x in w]
        sampler = ShardedBatches(len(windows), 1, self.seed, rank, world, blocks=blocks)
        return ResumableLoader(Windows(windows), batch_sampler=sampler, collate_fn=Collator(self.processor),
                               num_workers=self.num_workers)

    def val_dataloader(self) -> ResumableLoader:
        sampler = ShardedBatches(len(self.val_windows), self.val_batch_size, 0, 0, 1, shuffle=False, drop_last=False)
        return ResumableLoader(Windows(self.val_windows), batch_sampler=sampler, collate_fn=Collator(self.processor))
