"""`mmlong synth`: QA samples for every document of a dataset, written by a `Writer` (the
template writer, or a model behind an OpenAI-compatible server)."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict
from collections import Counter
from pathlib import Path
from typing import Any, Protocol

from mmlong import tokens as tk
from mmlong.messages import View
from mmlong.samples import QA, Sample, Segment, build_sample, write_samples
from mmlong.schema import TEXT, Document
from mmlong.errors import DatasetError
from mmlong.store import atomic_write_text, is_dataset, iter_documents, read_manifest
from mmlong.render.ocr import OcrUnavailable
from mmlong.synthesis.ocr_text import ocr_pages, scanned_pages, with_ocr_text
from mmlong.synthesis.segments import sample_segment
from mmlong.synthesis.template import TemplateWriter


class Writer(Protocol):
    """Writes QA pairs about one segment of a document."""

    name: str

    def write(self, doc: Document, segment: Segment, rng: random.Random) -> list[QA]: ...


def _rng(seed: int, doc_id: str) -> random.Random:
    return random.Random(int(hashlib.sha256(f"{seed}:{doc_id}".encode()).hexdigest()[:16], 16))


def _why_none(doc: Document, unread: str | None) -> str:
    text = sum(len(it.text or "") for it in doc.items if it.kind == TEXT)
    if text == 0:
        return f"no text to write questions from (scanned pages not read: {unread})" if unread else "no text"
    ocr = " (OCR text)" if any((it.meta or {}).get("ocr") for it in doc.items) else ""
    return f"no question could be written from its {text} characters of text{ocr}: no outline, captions, unique lines or sentences"


def progress(docs, what: str):
    """Documents with a rich progress bar on stderr when it is a terminal."""
    from rich.console import Console
    from rich.progress import track

    console = Console(stderr=True)
    if not console.is_terminal:
        yield from docs
        return
    yield from track(docs, description=what, console=console, total=len(docs) if isinstance(docs, list) else None)


def synth(
    dataset: str | Path,
    out: str | Path,
    writer: Writer | None = None,
    segments: int = 1,
    seed: int = 0,
    min_pages: int = 8,
    max_pages: int = 15,
    view: View = View("images", page_markers=True),
    ocr: str | None = "auto",
) -> dict[str, Any]:
    """Write QA samples for every document of `dataset` into out/samples.parquet (and a summary
    in out/synth.json). Deterministic for a seed: each document draws from its own stream.

    Samples show what `view` keeps: by default the page images only (the MMProLong setting:
    the text layer writes the questions, the model reads the pages) with a "Page N" marker
    before each page, so every page answer (a 1-based file position) is in the input. A
    document without images is shown as text (with the same markers); the summary lists those
    and every document that yields no sample, with the reason. Scanned pages (an image, no
    text layer) are read with OCR (`ocr`: an engine of `mmlong.render.ocr`, None: never) to
    write questions from, cached in DATASET/ocr/."""
    writer = writer or TemplateWriter()
    read_manifest(Path(dataset))  # a dataset, or a DatasetError that says it is not
    if is_dataset(Path(out)) or Path(out).resolve() == Path(dataset).resolve():
        raise DatasetError(f"{out}: is a dataset; write samples to a folder of their own")
    dataset = str(Path(dataset).resolve())
    tok = tk.load_tokenizer()
    samples: list[Sample] = []
    seen: set[str] = set()
    as_text: list[str] = []
    without: dict[str, str] = {}
    read = {"documents": 0, "pages": 0}
    docs = list(iter_documents(Path(dataset), images=False)) if not getattr(writer, "needs_images", False) else None
    for doc in progress(docs if docs is not None else iter_documents(Path(dataset), images=True), "writing questions"):
        rng = _rng(seed, doc.doc_id)
        texts, unread = {}, None
        if ocr and scanned_pages(doc):
            try:
                texts = ocr_pages(Path(dataset), doc, ocr)
                read["documents"] += 1
                read["pages"] += len(texts)
            except OcrUnavailable as e:
                unread = str(e)
        source = with_ocr_text(doc, texts)
        doc_view = view
        if view.items == "images" and not any(it.is_image for it in doc.items):
            doc_view = View("all", view.page_markers)
            as_text.append(doc.source)
        before = len(samples)
        for _ in range(segments):
            segment = sample_segment(doc, rng, min_pages, max_pages)
            for qa in writer.write(source, segment, rng):
                sample = build_sample(doc, qa, dataset, writer.name, segment, tok, view=doc_view)
                if sample.sample_id not in seen:
                    seen.add(sample.sample_id)
                    samples.append(sample)
        if len(samples) == before:
            without[doc.source] = _why_none(source, unread if ocr else "OCR is off")
    out = Path(out)
    write_samples(samples, out / "samples.parquet")
    summary = {
        "dataset": dataset,
        "writer": writer.name,
        "seed": seed,
        "samples": len(samples),
        "documents": len({s.doc_id for s in samples}),
        "tasks": dict(sorted(Counter(s.task for s in samples).items())),
        "kinds": dict(sorted(Counter(s.kind for s in samples).items())),
        "tokens": {"min": min((s.total_tokens for s in samples), default=0),
                   "max": max((s.total_tokens for s in samples), default=0)},
        "view": asdict(view),
        "shown_as_text": as_text,
        "ocr": read,
        "without_samples": without,
    }
    atomic_write_text(out / "synth.json", json.dumps(summary, indent=2))
    return summary
