"""Training samples: a document, a question and its answer as Qwen2.5-VL chat messages.

Images are not copied: a sample's messages refer to them as `mmlong://doc_id/seq` in the
source dataset (`mmlong.messages.resolve_images` loads them), so samples stay small and the
images exist once. Each sample stores its exact token count and the token span of the answer
([answer_start, answer_end): the assistant's text and its <|im_end|>) for answer-only loss.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmlong import tokens as tk
from mmlong.messages import conversation_tokens, item_ref, to_messages
from mmlong.schema import Document
from mmlong.store import atomic_write_table, atomic_write_text, iter_documents
from mmlong.train.qa import QA, Segment, TemplateWriter, Writer, sample_segment

SAMPLES_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("dataset", pa.string()),
        ("doc_id", pa.string()),
        ("source", pa.string()),
        ("task", pa.string()),
        ("kind", pa.string()),
        ("writer", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("answer_format", pa.string()),
        ("evidence_pages", pa.list_(pa.int32())),
        ("segment", pa.list_(pa.int32(), 2)),
        ("anchor", pa.string()),
        ("messages", pa.string()),
        ("total_tokens", pa.int64()),
        ("answer_start", pa.int64()),
        ("answer_end", pa.int64()),
        ("extra", pa.string()),
    ]
)


@dataclass
class Sample:
    """One row of a samples file (see SAMPLES_SCHEMA); `messages` is the chat as a list."""

    sample_id: str
    dataset: str
    doc_id: str
    source: str
    task: str
    kind: str
    writer: str
    question: str
    answer: str
    answer_format: str
    evidence_pages: list[int]
    segment: list[int]
    anchor: str
    messages: list[dict[str, Any]]
    total_tokens: int
    answer_start: int
    answer_end: int
    extra: dict[str, Any] = field(default_factory=dict)
    """Task-specific facts (needle offsets and depths, ...)."""

    def row(self) -> dict[str, Any]:
        row = dict(self.__dict__)
        row["messages"] = json.dumps(self.messages, ensure_ascii=False)
        row["extra"] = json.dumps(self.extra, ensure_ascii=False)
        return row


def image_tokens(doc: Document) -> dict[str, int]:
    """Stored token counts of the document's referenced images, keyed by their references."""
    refs = {seq: item_ref(doc, seq) for seq, it in enumerate(doc.items) if it.is_image}
    return {ref: doc.items[seq].tokens for seq, ref in refs.items() if ref is not None}


def build_sample(doc: Document, qa: QA, dataset: str, writer: str, segment: Segment, tokenizer=None) -> Sample:
    """The full document, the question, and the answer as the assistant turn."""
    tok = tokenizer if tokenizer is not None else tk.load_tokenizer()
    # the pixel bounds the stored image token counts were computed under
    bounds = doc.options.get("tokens", {})
    messages = to_messages(doc, question=qa.question, answer=qa.answer_text, image_as="ref",
                           min_pixels=bounds.get("min_pixels", tk.IMAGE_MIN_PIXELS),
                           max_pixels=bounds.get("max_pixels", tk.IMAGE_MAX_PIXELS))
    counts = image_tokens(doc)
    total = conversation_tokens(messages, tok, image_tokens=counts)
    prompt = conversation_tokens(messages[:-1], tok, add_generation_prompt=True, image_tokens=counts)
    key = json.dumps([dataset, doc.doc_id, qa.question, qa.answer_text], ensure_ascii=False)
    return Sample(
        sample_id=hashlib.sha256(key.encode()).hexdigest()[:16],
        dataset=dataset,
        doc_id=doc.doc_id,
        source=doc.source,
        task=qa.task,
        kind=qa.kind,
        writer=writer,
        question=qa.question,
        answer=json.dumps(qa.answer, ensure_ascii=False),
        answer_format=qa.answer_format,
        evidence_pages=qa.evidence_pages,
        segment=[segment.start + 1, segment.stop],
        anchor=qa.anchor,
        messages=messages,
        total_tokens=total,
        answer_start=prompt,
        answer_end=total - 1,  # the template's closing "\n" after <|im_end|> carries no loss
    )


def write_samples(samples: list[Sample], path: Path) -> Path:
    """Write samples to one Parquet file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_table(pa.Table.from_pylist([s.row() for s in samples], schema=SAMPLES_SCHEMA), path)
    return path


def read_samples(path: str | Path) -> list[Sample]:
    """Samples from a Parquet file or a folder of them."""
    rows = pq.read_table(path).to_pylist()
    return [Sample(**{**r, "messages": json.loads(r["messages"]), "extra": json.loads(r.get("extra") or "{}")}) for r in rows]


def _rng(seed: int, doc_id: str) -> random.Random:
    return random.Random(int(hashlib.sha256(f"{seed}:{doc_id}".encode()).hexdigest()[:16], 16))


def synth(
    dataset: str | Path,
    out: str | Path,
    writer: Writer | None = None,
    segments: int = 1,
    seed: int = 0,
    min_pages: int = 8,
    max_pages: int = 15,
) -> dict[str, Any]:
    """Write QA samples for every document of `dataset` into out/samples.parquet (and a summary
    in out/synth.json). Deterministic for a seed: each document draws from its own stream."""
    writer = writer or TemplateWriter()
    dataset = str(Path(dataset).resolve())
    tok = tk.load_tokenizer()
    samples: list[Sample] = []
    seen: set[str] = set()
    for doc in iter_documents(Path(dataset), images=getattr(writer, "needs_images", False)):
        rng = _rng(seed, doc.doc_id)
        for _ in range(segments):
            segment = sample_segment(doc, rng, min_pages, max_pages)
            for qa in writer.write(doc, segment, rng):
                sample = build_sample(doc, qa, dataset, writer.name, segment, tok)
                if sample.sample_id not in seen:
                    seen.add(sample.sample_id)
                    samples.append(sample)
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
    }
    atomic_write_text(out / "synth.json", json.dumps(summary, indent=2))
    return summary
