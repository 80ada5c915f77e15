"""Mixtures (the MMProLong recipe as data): draw samples by task proportions and length bins,
trim what is too long without changing what the question refers to, and pack the result.

Length bins are decided by exact token counts. Modes: `balanced` (pool-native: the same share
for every bin) and `target-focused` (long-biased: each bin twice the weight of the one below),
or explicit `bin_weights`. A sample longer than `max_length` is trimmed by dropping whole
pages after its last evidence and segment page (page numbers in the question stay true, no
image is ever cut); one still too long is dropped and counted in the report.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mmlong import tokens as tk
from mmlong.presets import build
from mmlong.schema import Document
from mmlong.store import atomic_write_text, iter_documents
from mmlong.mixtures.packing import pack
from mmlong.messages import View, shown
from mmlong.samples import QA, Sample, Segment, build_sample, write_samples

MODES = ("balanced", "target-focused")


@dataclass
class MixtureSpec:
    """A training mixture (recipes in train/*.yaml)."""

    max_length: int = 131072
    samples: int = 1000
    """Samples to draw in all (fewer when the pool runs short; the report says where)."""
    tasks: dict[str, float] = field(default_factory=lambda: {"extract-single": 40, "extract-multi": 40, "reasoning": 20})
    """Task proportions (normalised)."""
    bins: list[int] = field(default_factory=lambda: [8192, 16384, 32768, 65536, 131072])
    """Upper edges of the length bins in tokens; bin i holds lengths in (bins[i-1], bins[i]]."""
    mode: str = "balanced"
    bin_weights: list[float] | None = None
    """Explicit weight per bin (overrides mode)."""
    trim: bool = True
    pack: bool = True
    seed: int = 0
    per_document: float = 2.0
    """Cap on the samples of one document, as a multiple of an even share (samples / documents
    in the pool, rounded up): a long document with many questions would otherwise fill whole
    bins. 0: no cap."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.bins != sorted(self.bins) or not self.bins:
            raise ValueError(f"bins must increase: {self.bins}")
        if self.bin_weights is not None and len(self.bin_weights) != len(self.bins):
            raise ValueError(f"bin_weights needs {len(self.bins)} values, got {self.bin_weights}")
        if self.bins[-1] > self.max_length:  # a shorter window than the recipe's: its bins end there
            keep = [b for b in self.bins if b < self.max_length]
            if self.bin_weights is not None:
                self.bin_weights = self.bin_weights[: len(keep) + 1]
            self.bins = keep + [self.max_length]
        if self.per_document < 0:
            raise ValueError(f"per_document must be >= 0, got {self.per_document}")
        if not self.tasks or min(self.tasks.values()) < 0 or sum(self.tasks.values()) <= 0:
            raise ValueError(f"task proportions must be non-negative and not all zero: {self.tasks}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MixtureSpec:
        return build(cls, data, "mixture")

    def weights(self) -> list[float]:
        w = self.bin_weights or ([1.0] * len(self.bins) if self.mode == "balanced" else [2.0**i for i in range(len(self.bins))])
        return [x / sum(w) for x in w]

    def bin_of(self, tokens: int) -> int | None:
        i = tk.length_bin(tokens, self.bins)
        return i if i < len(self.bins) else None

    def bin_label(self, i: int) -> str:
        return tk.bin_label(i, self.bins)


def _quotas(total: int, shares: list[float]) -> list[int]:
    """Integer quotas summing to `total`, by largest remainder."""
    raw = [total * s for s in shares]
    q = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - q[i], reverse=True)[: total - sum(q)]:
        q[i] += 1
    return q


def _matrix_quotas(total: int, bins: list[float], tasks: list[float]) -> list[list[int]]:
    """Integer quotas per (bin, task) whose bin and task totals both match their own largest-
    remainder quotas: floors first, then units to the largest fractions still needed."""
    rows, cols = _quotas(total, bins), _quotas(total, tasks)
    raw = [[total * b * t for t in tasks] for b in bins]
    q = [[int(x) for x in row] for row in raw]
    need_b = [rows[i] - sum(q[i]) for i in range(len(bins))]
    need_t = [cols[j] - sum(q[i][j] for i in range(len(bins))) for j in range(len(tasks))]
    cells = sorted(((raw[i][j] - q[i][j], i, j) for i in range(len(bins)) for j in range(len(tasks))), reverse=True)
    for _ in range(2):  # by fraction first, then wherever both still need a unit
        for _, i, j in cells:
            if need_b[i] > 0 and need_t[j] > 0:
                q[i][j] += 1
                need_b[i] -= 1
                need_t[j] -= 1
    return q


def trim_to_fit(doc: Document, sample: Sample, max_length: int, tokenizer=None) -> Sample | None:
    """The sample rebuilt on the document without its trailing pages, keeping as many as fit
    `max_length`; None if even the pages up to its evidence do not fit. The cut is estimated
    from the items' stored token counts, then checked exactly."""
    keep_last = max(sample.evidence_pages + [sample.segment[1]])  # 1-based
    qa = QA(sample.question, json.loads(sample.answer), sample.answer_format, sample.evidence_pages, sample.task,
            sample.kind, sample.anchor)
    segment = Segment(sample.segment[0] - 1, sample.segment[1])
    view = View.from_dict(sample.extra.get("view"))
    per_page = [0] * doc.num_pages
    for seq, page in shown(doc, view=view):
        if seq is not None and page is not None:
            per_page[page] += doc.items[seq].tokens
    overhead = sample.total_tokens - sum(per_page)  # template, question, answer
    pages = keep_last
    while pages < doc.num_pages and overhead + sum(per_page[: pages + 1]) <= max_length:
        pages += 1
    while pages >= keep_last:
        cut = replace(doc, items=[it for it in doc.items if it.page is None or it.page < pages], num_pages=pages)
        trimmed = build_sample(cut, qa, sample.dataset, sample.writer, segment, tokenizer, view=view)
        if trimmed.total_tokens <= max_length:
            return trimmed
        pages -= 1
    return None


@dataclass
class MixReport:
    spec: dict[str, Any]
    drawn: int
    tasks_spec: dict[str, float]
    tasks_realised: dict[str, float]
    bins: list[dict[str, Any]]
    trimmed: int
    dropped_too_long: int
    shortfall: dict[str, int]
    capped: int = 0
    """Samples left out by the per-document cap."""
    per_document_cap: int | None = None
    warnings: list[str] = field(default_factory=list)
    """Where the mixture differs from its spec (task shares, bin shares, size)."""
    packing: dict[str, Any] | None = None


def mix(samples: list[Sample], spec: MixtureSpec, tokenizer=None) -> tuple[list[Sample], MixReport]:
    """Draw a mixture from `samples` (a pool from `synth`), trimming long ones to fit."""
    rng = random.Random(spec.seed)
    tasks = {t: w / sum(spec.tasks.values()) for t, w in spec.tasks.items()}
    pool: dict[tuple[int, str], list[Sample]] = {}
    trimmed = dropped = 0
    too_long = [s for s in samples if s.total_tokens > spec.max_length and s.task in tasks]
    docs = {}
    if too_long and spec.trim:
        wanted = {(s.dataset, s.doc_id) for s in too_long}
        for dataset in {d for d, _ in wanted}:
            for doc in iter_documents(Path(dataset), images=False, doc_ids={i for d, i in wanted if d == dataset}):
                docs[(dataset, doc.doc_id)] = doc
    for s in samples:
        if s.task not in tasks:
            continue
        if s.total_tokens > spec.max_length:
            s = trim_to_fit(docs[(s.dataset, s.doc_id)], s, spec.max_length, tokenizer) if spec.trim else None
            if s is None:
                dropped += 1
                continue
            trimmed += 1
        pool.setdefault((spec.bin_of(s.total_tokens), s.task), []).append(s)
    chosen: list[Sample] = []
    shortfall: dict[str, int] = {}
    spare: dict[tuple[int, str], list[Sample]] = {}
    missing: Counter[str] = Counter()
    per_doc: Counter[tuple[str, str]] = Counter()
    documents = len({(s.dataset, s.doc_id) for s in samples})
    cap = math.ceil(spec.per_document * spec.samples / max(documents, 1)) if spec.per_document else len(samples) + 1
    capped: set[str] = set()

    def take(s: Sample) -> bool:
        if per_doc[(s.dataset, s.doc_id)] >= cap:
            capped.add(s.sample_id)
            return False
        per_doc[(s.dataset, s.doc_id)] += 1
        chosen.append(s)
        return True

    for b, row in enumerate(_matrix_quotas(spec.samples, spec.weights(), list(tasks.values()))):
        for task, quota in zip(tasks, row):
            cell = sorted(pool.get((b, task), []), key=lambda s: s.sample_id)
            rng.shuffle(cell)
            got = 0
            while cell and got < quota:
                got += take(cell.pop())
            spare[(b, task)] = cell
            missing[task] += quota - got
    # a short cell is made up from other bins of the same task: task shares stay exact
    per_bin = Counter(spec.bin_of(s.total_tokens) for s in chosen)
    for task, n in missing.items():
        for _ in range(n):
            while options := [b for b in range(len(spec.bins)) if spare[(b, task)]]:
                b = min(options, key=lambda b: per_bin[b] / max(spec.weights()[b], 1e-9))  # the bin furthest below its share
                if take(spare[(b, task)].pop()):
                    per_bin[b] += 1
                    break
            else:
                shortfall[task] = shortfall.get(task, 0) + 1
    rng.shuffle(chosen)
    counts = Counter(s.task for s in chosen)
    per_bin = Counter(spec.bin_of(s.total_tokens) for s in chosen)
    report = MixReport(
        spec=spec.__dict__,
        drawn=len(chosen),
        tasks_spec={t: round(w, 4) for t, w in tasks.items()},
        tasks_realised={t: round(counts[t] / len(chosen), 4) if chosen else 0.0 for t in tasks},
        bins=[{"bin": spec.bin_label(i), "max": edge, "spec": round(w, 4),
               "realised": round(per_bin[i] / len(chosen), 4) if chosen else 0.0, "samples": per_bin[i]}
              for i, (edge, w) in enumerate(zip(spec.bins, spec.weights()))],
        trimmed=trimmed,
        dropped_too_long=dropped,
        shortfall=shortfall,
        capped=len(capped),
        per_document_cap=cap if spec.per_document else None,
    )
    report.warnings = _deviations(report, spec)
    return chosen, report


def _deviations(report: MixReport, spec: MixtureSpec, tolerance: float = 0.02) -> list[str]:
    out = []
    if report.drawn < spec.samples:
        out.append(f"{report.drawn} samples drawn of {spec.samples} asked: the pool is too small (the cap of "
                   f"{report.per_document_cap} samples per document left out {report.capped})")
    for task, want in report.tasks_spec.items():
        got = report.tasks_realised.get(task, 0.0)
        if abs(got - want) > tolerance:
            out.append(f"task {task}: {got:.0%} of the mixture, {want:.0%} asked ({report.shortfall.get(task, 0)} missing)")
    for b in report.bins:
        if abs(b["realised"] - b["spec"]) > tolerance:
            out.append(f"length bin {b['bin']}: {b['realised']:.0%} of the mixture, {b['spec']:.0%} asked")
    return out


def plot_lengths(samples: list[Sample], spec: MixtureSpec, path: Path) -> None:
    """Histogram (PNG) of the realised lengths on the spec's bins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_bin = Counter(spec.bin_of(s.total_tokens) for s in samples)
    labels = [spec.bin_label(i) for i in range(len(spec.bins))]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.bar(labels, [per_bin[i] for i in range(len(spec.bins))], color="tab:blue", label="realised")
    ax.plot(labels, [w * len(samples) for w in spec.weights()], "o--", color="tab:red", label="spec")
    ax.set_xlabel("sample length (Qwen2.5-VL tokens)")
    ax.set_ylabel("samples")
    ax.set_title(f"{len(samples)} samples, mode {spec.mode}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_mix(samples: list[Sample], spec: MixtureSpec, out: str | Path) -> MixReport:
    """Mix, pack, and write out/mix.parquet, out/packs.parquet, out/report.json, out/lengths.png."""
    out = Path(out)
    chosen, report = mix(samples, spec)
    write_samples(chosen, out / "mix.parquet")
    if spec.pack and chosen:
        budgets = {s.budget for s in chosen}
        if len(budgets) > 1:
            raise ValueError(f"the samples were counted under different pixel budgets {sorted(map(str, budgets))}: "
                             "one mixture is trained with one processor, mix them separately")
        windows = pack([(s.sample_id, s.total_tokens) for s in chosen], spec.max_length, budgets.pop())
        windows.write(out / "packs.parquet")
        report.packing = windows.summary()
    plot_lengths(chosen, spec, out / "lengths.png")
    atomic_write_text(out / "report.json", json.dumps(report.__dict__, indent=2))
    return report
