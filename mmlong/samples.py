"""Samples, the data model training, evaluation and retrieval heads share: a document, a
question and its answer as Qwen2.5-VL chat messages, with where everything sits in the tokens.

Images are not copied: a sample's messages refer to them as `mmlong://doc_id/seq` in the
source dataset (`mmlong.messages.resolve_images` loads them), so samples stay small and the
images exist once. A sample records the provenance of every element it shows (`items`), the
pixel budget its images were counted under, its exact token count and the token span of the
answer ([answer_start, answer_end): the assistant's text and its <|im_end|>) for answer-only
loss. `layout` expands it into the token range of every element, the question and the answer.

On disk (`write_samples`) the dataset path is stored relative to the samples file, so a
folder holding both can move.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmlong import tokens as tk
from mmlong.errors import DatasetError
from mmlong.messages import Element, View, element_spans, elements, page_marker, to_messages, video_input
from mmlong.schema import Document
from mmlong.store import atomic_write_table

TASKS = ("extract-single", "extract-multi", "reasoning", "ocr-full", "ocr-needle", "needle")
FORMATS = ("Int", "Float", "Str", "List", "None")
"""MMLongBench-Doc's answer formats; None is "Not answerable"."""
NOT_ANSWERABLE = "Not answerable"


@dataclass
class QA:
    """A question, its answer and the pages that hold the evidence."""

    question: str
    answer: Any
    answer_format: str
    """Int, Float, Str, List, or None for "Not answerable" (MMLongBench-Doc's formats)."""
    evidence_pages: list[int]
    """1-based pages, empty for unanswerable questions."""
    task: str
    kind: str
    """The generator that wrote it (section-start, caption-text, ...)."""
    anchor: str = ""
    """What makes the question unambiguous in the whole document: words of the question (each
    quoted part of it appears in the question)."""

    def __post_init__(self) -> None:
        if self.task not in TASKS or self.answer_format not in FORMATS:
            raise ValueError(f"task {self.task!r} / answer_format {self.answer_format!r} not among {TASKS} / {FORMATS}")

    @property
    def answer_text(self) -> str:
        """What the assistant says: lists as JSON (items may hold commas), as MMLongBench-Doc's
        List answers are written."""
        if isinstance(self.answer, list):
            return json.dumps(self.answer, ensure_ascii=False)
        return str(self.answer)


@dataclass(frozen=True)
class Segment:
    """Pages [start, stop) of a document, 0-based."""

    start: int
    stop: int

    @property
    def pages(self) -> range:
        return range(self.start, self.stop)

    def label(self) -> str:
        return f"pages {self.start + 1}-{self.stop}"


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
        ("items", pa.string()),
        ("min_pixels", pa.int64()),
        ("max_pixels", pa.int64()),
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
    """The source dataset its image references point into (absolute once read)."""
    doc_id: str
    source: str
    task: str
    kind: str
    writer: str
    question: str
    answer: str
    """The answer as JSON (a number, string or list)."""
    answer_format: str
    evidence_pages: list[int]
    """1-based pages."""
    segment: list[int]
    """[first, last] page (1-based) the question was written from."""
    anchor: str
    messages: list[dict[str, Any]]
    items: list[dict[str, Any]]
    """Provenance of each content element of the user turn before the question, in order:
    kind, doc_id, seq, page (0-based), timestamp, segment, tokens, needle."""
    budget: tk.PixelBudget
    """The pixel budget the image token counts assume: the processor must use the same."""
    total_tokens: int
    answer_start: int
    answer_end: int
    extra: dict[str, Any] = field(default_factory=dict)
    """Task-specific facts (needle depths, ...)."""

    def row(self, relative_to: Path | None = None) -> dict[str, Any]:
        row = {k: v for k, v in self.__dict__.items() if k != "budget"}
        if relative_to is not None and self.dataset:  # "" for samples that refer to no dataset
            row["dataset"] = os.path.relpath(self.dataset, relative_to)
        row["min_pixels"], row["max_pixels"] = self.budget.min_pixels, self.budget.max_pixels
        for key in ("messages", "items", "extra"):
            row[key] = json.dumps(row[key], ensure_ascii=False)
        return row

    @property
    def image_tokens(self) -> dict[str, int]:
        """Stored token counts of the sample's referenced images, keyed by reference."""
        refs = [e.get("image") for e in self.user_content()]
        return {r: it["tokens"] for r, it in zip(refs, self.items) if isinstance(r, str) and it["kind"] != "text"}

    def user_content(self) -> list[dict[str, Any]]:
        return next(m["content"] for m in self.messages if m["role"] == "user")


def provenance(doc: Document, seq: int, budget: tk.PixelBudget | None = None) -> dict[str, Any]:
    """Where item `seq` of `doc` comes from: its own document, or (for items gathered from
    other documents, such as haystacks) the document named by its `meta["ref"]`. A frame
    stored as video input but shown as an image costs an image's tokens under `budget`."""
    item = doc.items[seq]
    meta = item.meta or {}
    doc_id, origin = doc.doc_id, seq
    if "ref" in meta:
        doc_id, origin = meta["ref"].removeprefix("mmlong://").rsplit("/", 1)
        origin = int(origin)
    elif meta.get("generated"):
        doc_id, origin = None, None
    tokens = tk.image_tokens(item.height, item.width, budget or tk.DEFAULT_BUDGET) if video_input(item) else item.tokens
    return {"kind": item.kind, "doc_id": doc_id, "seq": origin, "page": item.page, "timestamp": item.timestamp,
            "segment": meta.get("segment"), "tokens": tokens, "needle": bool(meta.get("needle"))}


def video_provenance(doc: Document, seqs: list[int]) -> dict[str, Any]:
    """The record of a video element made of frames `seqs`: its tokens (two frames a grid)
    and each frame's own record (`frames`), in order."""
    frames = [provenance(doc, seq) for seq in seqs]
    first = doc.items[seqs[0]]
    return {**frames[0], "kind": "video", "tokens": tk.video_tokens(len(seqs), first.height, first.width),
            "needle": any(f["needle"] for f in frames), "frames": frames}


def element_provenance(doc: Document, element: Element, budget: tk.PixelBudget) -> dict[str, Any]:
    """The record of one content element (`messages.elements`)."""
    if not element.seqs:
        return marker_provenance(doc, element.page)
    return video_provenance(doc, list(element.seqs)) if element.video else provenance(doc, element.seqs[0], budget)


def marker_provenance(doc: Document, page: int) -> dict[str, Any]:
    """A page marker's record: a text element of `page` that is no item of the document."""
    return {"kind": "text", "doc_id": doc.doc_id, "seq": None, "page": page, "timestamp": None, "segment": None,
            "tokens": tk.text_tokens(page_marker(page)), "needle": False, "marker": True}


def build_sample(doc: Document, qa: QA, dataset: str, writer: str, segment: Segment, tokenizer=None,
                 budget: tk.PixelBudget | None = None, view: View = View()) -> Sample:
    """The full document (what `view` shows of it), the question, and the answer as the
    assistant turn; the budget is the one the document's image token counts were computed
    under. The view is recorded in `extra["view"]`."""
    return build_with_layout(doc, qa, dataset, writer, segment, tokenizer, budget, view)[0]


def build_with_layout(doc: Document, qa: QA, dataset: str, writer: str, segment: Segment, tokenizer=None,
                      budget: tk.PixelBudget | None = None, view: View = View()) -> tuple[Sample, Layout]:
    """`build_sample`, and the layout its counts come from."""
    budget = budget or tk.PixelBudget.from_options(doc.options)
    shown = elements(doc, view=view)
    if not shown:
        raise ValueError(f"document {doc.doc_id} ({doc.source}): nothing to show in a {view.items!r} view")
    messages = to_messages(doc, question=qa.question, answer=qa.answer_text, image_as="ref", budget=budget, view=view)
    key = json.dumps([dataset, doc.doc_id, qa.question, qa.answer_text], ensure_ascii=False)
    sample = Sample(
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
        items=[element_provenance(doc, e, budget) for e in shown],
        budget=budget,
        total_tokens=0,
        answer_start=0,
        answer_end=0,
    )
    lay = layout(sample, tokenizer)
    if view != View():
        sample.extra["view"] = asdict(view)
    sample.total_tokens = lay.length
    sample.answer_start, sample.answer_end = lay.answer.start, lay.answer.end
    return sample, lay


@dataclass(frozen=True)
class Span:
    """Where one element of a sample sits in the model's `input_ids`: tokens [start, end).
    An image's span runs from its <|vision_start|> to its <|vision_end|> inclusive."""

    start: int
    end: int
    kind: str
    """The item kind (text, page-image, figure, video-frame, ...), or question / answer."""
    doc_id: str | None = None
    seq: int | None = None
    page: int | None = None
    """0-based page of the source document."""
    timestamp: float | None = None
    segment: int | None = None
    """Video scene segment."""
    needle: bool = False
    marker: bool = False
    """A page marker ("Page N"), not content of the page."""
    part: int = 0
    """Pair k of a video element (its frames' tokens); the first pair's span opens with the
    element's <|vision_start|>, the last one's closes with its <|vision_end|>."""


@dataclass
class Layout:
    """The expanded token layout of a sample (what the processor's `input_ids` hold)."""

    items: list[Span]
    question: Span | None
    answer: Span | None
    """The answer text and its <|im_end|>: the tokens answer-only loss is computed on."""
    length: int

    def pages(self) -> dict[int, tuple[int, int]]:
        """Per 0-based page: from the first token of its first item to the end of its last."""
        out: dict[int, tuple[int, int]] = {}
        for s in self.items:
            if s.page is not None:
                lo, hi = out.get(s.page, (s.start, s.end))
                out[s.page] = (min(lo, s.start), max(hi, s.end))
        return out

    def needles(self) -> list[Span]:
        return [s for s in self.items if s.needle]


def layout(sample: Sample, tokenizer=None) -> Layout:
    """Every element of `sample` with its token range in the model input, plus the question
    and the answer. The prompt is tokenized once, as the processor does; an image's single
    <|image_pad|> expands to its stored token count. A token that straddles two elements
    (BPE may merge across them) belongs to the element it starts in."""
    tok = tokenizer if tokenizer is not None else tk.load_tokenizer()
    text, spans = element_spans(sample.messages)
    enc = tok.encode(text, add_special_tokens=False)
    pads = {tok.token_to_id("<|image_pad|>"), tok.token_to_id("<|video_pad|>")}
    user = next(i for i, m in enumerate(sample.messages) if m["role"] == "user")
    content = sample.messages[user]["content"]
    if len(sample.items) not in (len(content), len(content) - 1):
        raise ValueError(f"sample {sample.sample_id}: {len(sample.items)} provenance records for {len(content)} elements")
    pad_tokens = iter([it["tokens"] for it in sample.items if it["kind"] != "text"])
    starts, at = [], 0  # expanded position of each token
    for t in enc.ids:
        starts.append(at)
        at += next(pad_tokens) if t in pads else 1
    length = at
    char_starts = [a for a, _ in enc.offsets]

    def token_range(chars: tuple[int, int]) -> tuple[int, int]:
        first = bisect.bisect_left(char_starts, chars[0])
        last = bisect.bisect_left(char_starts, chars[1])
        return (starts[first] if first < len(starts) else length), (starts[last] if last < len(starts) else length)

    items = []
    for k, prov in enumerate(sample.items):
        a, b = token_range(spans[(user, k)])
        if prov["kind"] == "video":
            items += _pair_spans(a, b, prov)
            continue
        items.append(Span(a, b, prov["kind"], prov.get("doc_id"), prov.get("seq"), prov.get("page"), prov.get("timestamp"),
                          prov.get("segment"), bool(prov.get("needle")), bool(prov.get("marker"))))
    question = None
    if len(sample.items) == len(content) - 1:
        question = Span(*token_range(spans[(user, len(content) - 1)]), "question")
    answer = None
    reply = next((i for i, m in enumerate(sample.messages) if m["role"] == "assistant"), None)
    if reply is not None:
        reply_content = sample.messages[reply]["content"]
        last = 0 if isinstance(reply_content, str) else len(reply_content) - 1
        a, b = token_range(spans[(reply, 0)])[0], token_range(spans[(reply, last)])[1]
        answer = Span(a, b + 1, "answer")  # and its <|im_end|>
    return Layout(items, question, answer, length)


def _pair_spans(a: int, b: int, prov: dict[str, Any]) -> list[Span]:
    """A video element's span [a, b) cut into one span per pair of frames (kind video-frame,
    the pair's first frame's record; a needle when either frame is)."""
    frames = prov["frames"]
    pairs = [frames[i : i + 2] for i in range(0, len(frames), 2)]
    per = prov["tokens"] // len(pairs)
    out = []
    for j, pair in enumerate(pairs):
        lo = a if j == 0 else a + 1 + j * per
        hi = b if j == len(pairs) - 1 else a + 1 + (j + 1) * per
        f = pair[0]
        out.append(Span(lo, hi, "video-frame", f.get("doc_id"), f.get("seq"), f.get("page"), f.get("timestamp"),
                        f.get("segment"), any(x["needle"] for x in pair), part=j))
    return out


def write_samples(samples: list[Sample], path: Path) -> Path:
    """Write samples to one Parquet file atomically (dataset paths relative to its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent.resolve()
    atomic_write_table(pa.Table.from_pylist([s.row(folder) for s in samples], schema=SAMPLES_SCHEMA), path)
    return path


def read_samples(path: str | Path) -> list[Sample]:
    """Samples from a Parquet file written by `write_samples` (a folder: its samples.parquet)."""
    path = Path(path)
    if path.is_dir():
        path = path / "samples.parquet"
    if not path.is_file():
        raise DatasetError(f"{path}: no samples file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DatasetError(f"{path}: not a Parquet file ({e})") from None
    missing = set(SAMPLES_SCHEMA.names) - set(table.column_names)
    if missing:
        raise DatasetError(f"{path}: not a samples file (missing columns {sorted(missing)})")
    folder = path.parent.resolve()
    out = []
    for r in table.to_pylist():
        budget = tk.PixelBudget(r.pop("min_pixels"), r.pop("max_pixels"))
        r["dataset"] = str((folder / r["dataset"]).resolve()) if r["dataset"] else ""
        out.append(Sample(**{**r, "budget": budget, "messages": json.loads(r["messages"]), "items": json.loads(r["items"]),
                             "extra": json.loads(r.get("extra") or "{}")}))
    return out
