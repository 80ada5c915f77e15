"""Evaluation tasks (recipes in eval/*.yaml): which items, how the prompt is built, how the
answer is scored, which breakdowns. Each builder returns `Question`s whose `sample` is the core
sample (prompt = its messages without the answer turn) and the task's protocol facts.

- longdoc-vqa: MMLongBench-Doc format (samples.json + PDFs, or an ingested dataset), every
  page at 144 dpi through the ingest pipeline, the whole document in context up to a page or
  token budget, optional page concatenation;
- needle: a lengths x depths grid of needle samples (text, image, webpage or video haystacks);
- vtc: the same questions with their context as text and as rendered page images;
- video-qa: multiple choice over long videos under a frame budget.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mmlong import tokens as tk
from mmlong.messages import View, image_ref
from mmlong.presets import build
from mmlong.samples import NOT_ANSWERABLE, QA, Sample, Segment, build_sample
from mmlong.schema import PAGE_IMAGE, TEXT, Document, Item
from mmlong.store import is_dataset, iter_documents


@dataclass
class Question:
    """One question of a task."""

    sample: Sample
    gold: Any
    answer_format: str
    """Int, Float, Str, List, None (MMLongBench-Doc), needle (RULER match) or choice."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Breakdown fields (length, depth, doc_type, evidence_sources, context, ...)."""

    @property
    def id(self) -> str:
        return self.sample.sample_id


@dataclass
class Common:
    """Prompt and decoding settings every task shares."""

    instruction: str = ""
    """Appended to every question (e.g. the answer style)."""
    max_new_tokens: int = 64
    extractor: str = "rules"
    """rules (documented in eval.score.extract_answer) or judge (a model over the chat API)."""
    judge_base_url: str | None = None
    judge_model: str | None = None
    limit: int | None = None
    """Evaluate only the first N items (a quick look)."""

    def __post_init__(self) -> None:
        if self.extractor not in ("rules", "judge"):
            raise ValueError(f"extractor must be rules or judge, got {self.extractor!r}")
        if self.extractor == "judge" and not (self.judge_base_url and self.judge_model):
            raise ValueError("the judge extractor needs judge_base_url and judge_model")


def _dataset_of(paths: list[str], root: Path, preset: str, overrides: dict | None = None) -> Path:
    """A dataset holding `paths`: the path itself when it is one, else an ingest of them into
    `root` (resumable; with `preset` and `overrides`)."""
    from mmlong.ingest import IngestOptions, ingest

    if len(paths) == 1 and is_dataset(Path(paths[0])):
        return Path(paths[0])
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise ValueError(f"no such file or folder: {missing}")
    key = hashlib.sha256(json.dumps([sorted(str(Path(p).resolve()) for p in paths), preset, overrides]).encode()).hexdigest()
    out = root / f"dataset-{key[:12]}"
    report = ingest(paths, out, options=IngestOptions.from_preset(preset, overrides), workers=0,
                    progress=sys.stderr.isatty())  # a terminal sees the ingest's progress
    for path, reason in report.failed.items():
        print(f"warning: {path}: {reason}")
    return out


# ---------------------------------------------------------------- long-document VQA


@dataclass
class LongDoc:
    """MMLongBench-Doc-format questions over whole documents."""

    samples: str = ""
    """samples.json: doc_id (the PDF's file name), doc_type, question, answer, evidence_pages,
    evidence_sources, answer_format."""
    documents: str = ""
    """A folder of the PDFs, or an ingested dataset whose sources are those files."""
    dpi: float = 144
    max_pages: int | None = None
    """Keep at most the first N pages (VLMEvalKit: 120)."""
    max_tokens: int | None = None
    """Keep the first pages whose prompt fits this many tokens (8K ... 128K and beyond)."""
    min_pixels: int = tk.IMAGE_MIN_PIXELS
    max_pixels: int = tk.IMAGE_MAX_PIXELS
    concat: int = 1
    """Pages stacked into one image (fewer, taller images)."""
    text: bool = False
    """Also show each page's text layer (off: pages as images only, as the benchmark)."""


def _page_items(doc: Document, concat: int, budget: tk.PixelBudget) -> list[Item]:
    """The document's page images, `concat` at a time stacked into one image."""
    import io

    from PIL import Image

    pages = [replace(it, meta={**(it.meta or {}), "ref": image_ref(doc.doc_id, seq)})
             for seq, it in enumerate(doc.items) if it.kind == PAGE_IMAGE]
    if concat <= 1:
        return pages
    out = []
    for k in range(0, len(pages), concat):
        group = pages[k : k + concat]
        images = [Image.open(io.BytesIO(p.image)).convert("RGB") for p in group]
        width = max(i.width for i in images)
        sheet = Image.new("RGB", (width, sum(i.height for i in images)), "white")
        y = 0
        for i in images:
            sheet.paste(i, (0, y))
            y += i.height
        buf = io.BytesIO()
        sheet.save(buf, "JPEG", quality=90)
        out.append(Item(PAGE_IMAGE, image=buf.getvalue(), image_format="jpeg", width=sheet.width, height=sheet.height,
                        page=group[0].page, tokens=tk.image_tokens(sheet.height, sheet.width, budget),
                        meta={"generated": True, "pages": [p.page for p in group]}))
    return out


def longdoc_items(settings: LongDoc, common: Common, root: Path) -> tuple[list[Question], dict[str, Any]]:
    path = Path(settings.samples)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the questions ({e})") from None
    need = {"doc_id", "question", "answer", "answer_format"}
    if not isinstance(rows, list) or not all(isinstance(r, dict) and need <= set(r) for r in rows):
        raise ValueError(f"{path}: not an MMLongBench-Doc samples file (a JSON list of objects with {sorted(need)})")
    budget = tk.PixelBudget(settings.min_pixels, settings.max_pixels)
    preset = "pdf-144dpi" if settings.text else "pdf-pages"
    overrides = {"pdf": {"dpi": settings.dpi, "figures": False}, "tokens": asdict(budget)}
    dataset = _dataset_of([settings.documents], root, preset, overrides)
    docs = {Path(d.source).name: d for d in iter_documents(dataset)}
    missing = sorted({r["doc_id"] for r in rows} - set(docs))
    if missing:
        raise ValueError(f"{settings.documents}: no document for doc_id(s) {missing[:5]}")
    tok = tk.load_tokenizer()
    items, kept_pages = [], {}
    for k, r in enumerate(rows):
        doc = docs[r["doc_id"]]
        pages = _page_items(doc, settings.concat, budget)
        texts = [it for it in doc.items if it.kind == TEXT] if settings.text else []
        if settings.max_pages:
            pages = [p for p in pages if p.page < settings.max_pages]
            texts = [t for t in texts if t.page < settings.max_pages]
        fmt = r["answer_format"]
        answer = NOT_ANSWERABLE if fmt == "None" else r["answer"]
        qa = QA(f"{r['question']}{common.instruction}", answer, fmt if fmt in ("Int", "Float", "Str", "List", "None") else "Str",
                [], "extract-single", "mmlongbench-doc", r["doc_id"])
        body = sorted(pages + texts, key=lambda it: (it.page, it.kind != PAGE_IMAGE))
        cut = replace(doc, items=body)
        sample = build_sample(cut, qa, str(dataset), "benchmark", Segment(0, doc.num_pages), tok, budget)
        while settings.max_tokens and sample.total_tokens > settings.max_tokens and body:  # drop pages from the end
            last = body[-1].page
            body = [it for it in body if it.page != last]
            sample = build_sample(replace(doc, items=body), qa, str(dataset), "benchmark", Segment(0, doc.num_pages), tok, budget)
        sample.sample_id = f"q{k:05d}"
        shown = sorted({it.page for it in body})
        kept_pages[sample.sample_id] = len(shown)
        evidence = _evidence(r.get("evidence_pages"))
        items.append(Question(sample, answer, fmt, {
            "doc_id": r["doc_id"], "doc_type": r.get("doc_type", ""), "evidence_pages": evidence,
            "evidence_sources": r.get("evidence_sources", "[]"), "pages": doc.num_pages, "pages_kept": len(shown),
            "question": r["question"]}))
    protocol = {"dataset": str(dataset), "dpi": settings.dpi, "pixels": asdict(budget), "max_pages": settings.max_pages,
                "max_tokens": settings.max_tokens, "concat": settings.concat, "text_layer": settings.text,
                "pages_kept": {"min": min(kept_pages.values(), default=0), "max": max(kept_pages.values(), default=0)}}
    return items, protocol


def _evidence(value) -> list[int]:
    if isinstance(value, list):
        return [int(v) for v in value]
    try:
        parsed = ast.literal_eval(value) if isinstance(value, str) and value.strip() else []
    except (ValueError, SyntaxError):
        return []
    return [int(v) for v in parsed] if isinstance(parsed, (list, tuple)) else []


# ---------------------------------------------------------------- needles


@dataclass
class Needles:
    """A needle grid: every (length, depth, variant), `per_cell` samples each."""

    haystack: list[str] = field(default_factory=list)
    """Datasets, or files and folders (PDFs, webpages, videos) ingested first."""
    lengths: list[int] = field(default_factory=lambda: [8192, 16384, 32768, 65536, 131072])
    depths: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    variants: list[str] = field(default_factory=lambda: ["single"])
    modality: str = "text"
    count: int = 4
    per_cell: int = 1
    seed: int = 0
    strip_digits: bool = True
    min_pixels: int = tk.IMAGE_MIN_PIXELS
    max_pixels: int = tk.IMAGE_MAX_PIXELS
    preset: str = "pdf-144dpi"
    """Ingest preset for haystack files that are not datasets yet."""


def needle_items(settings: Needles, common: Common, root: Path) -> tuple[list[Question], dict[str, Any]]:
    from mmlong.synthesis.needles import Haystack, NeedleSpec, needle_sample, pool

    if not settings.haystack:
        raise ValueError("needle: give haystack datasets or files")
    budget = tk.PixelBudget(settings.min_pixels, settings.max_pixels)
    dataset = _dataset_of(settings.haystack, root, settings.preset, {"tokens": asdict(budget)})
    docs = list(iter_documents(dataset, images=False))
    kinds = {"text": (TEXT,), "image": None, "video": None}.get(settings.modality)
    units = [u for u in pool(docs, "sentence", settings.strip_digits) if kinds is None or u.kind in kinds]
    if settings.modality == "text" and not units:
        raise ValueError(f"needle: {settings.haystack} hold no text")
    hay = Haystack(units)
    tok = tk.load_tokenizer()
    items = []
    for length in settings.lengths:
        for depth in settings.depths:
            for variant in settings.variants:
                for k in range(settings.per_cell):
                    rng = random.Random(f"{settings.seed}:{length}:{depth}:{variant}:{k}")
                    spec = NeedleSpec(variant, settings.modality, depth, length, settings.count)
                    sample, _ = needle_sample(hay, spec, rng, str(dataset), budget, tok)
                    sample.sample_id = f"n{length}-{depth}-{variant}-{k}"
                    gold = json.loads(sample.answer)
                    items.append(Question(sample, gold, "needle", {"length": length, "depth": depth, "variant": variant,
                                                               "actual_depth": sample.extra["depth"]}))
    protocol = {"dataset": str(dataset), "modality": settings.modality, "lengths": settings.lengths,
                "depths": settings.depths, "variants": settings.variants, "per_cell": settings.per_cell,
                "seed": settings.seed, "pixels": asdict(budget), "strip_digits": settings.strip_digits}
    return items, protocol


# ---------------------------------------------------------------- vision-text compression


@dataclass
class Compression:
    """Text-context questions (a needle grid over text) asked twice: context as text, and as
    pages rendered with a render preset."""

    needles: Needles = field(default_factory=Needles)
    render: str = "glyph-default"


def vtc_items(settings: Compression, common: Common, root: Path) -> tuple[list[Question], dict[str, Any]]:
    from mmlong.presets import load_preset
    from mmlong.render.glyph import RenderConfig, render_text
    from mmlong.schema import RENDERED_TEXT

    text_items, protocol = needle_items(replace(settings.needles, modality="text"), common, root)
    config = RenderConfig.from_dict(load_preset("render", settings.render))
    budget = tk.PixelBudget(settings.needles.min_pixels, settings.needles.max_pixels)
    tok = tk.load_tokenizer()
    out, text_tokens, vision_tokens = [], 0, 0
    for item in text_items:
        content = next(m["content"] for m in item.sample.messages if m["role"] == "user")
        context = "".join(e["text"] for e in content[:-1])  # everything before the question
        pages = render_text(context, config, budget)
        doc = Document(f"vtc-{item.id}", item.sample.dataset, "rendered", "", items=[
            Item(RENDERED_TEXT, image=p.image, image_format=config.image_format, width=p.width, height=p.height, page=i,
                  tokens=p.tokens, meta={"generated": True}) for i, p in enumerate(pages)])
        qa = QA(item.sample.question, json.loads(item.sample.answer), item.sample.answer_format, [], "needle", "vtc")
        rendered = build_sample(doc, qa, item.sample.dataset, "vtc", Segment(0, 0), tok, budget)
        rendered.sample_id = f"{item.id}-rendered"
        t, v = tk.text_tokens(context, tok), sum(p.tokens for p in pages)
        text_tokens, vision_tokens = text_tokens + t, vision_tokens + v
        out.append(replace(item, meta={**item.meta, "context": "text", "context_tokens": t}))
        out.append(Question(rendered, item.gold, "needle", {**item.meta, "context": "rendered", "context_tokens": v,
                                                        "compression": round(t / max(v, 1), 4)}))
    protocol = {**protocol, "render": config.to_dict(), "compression": round(text_tokens / max(vision_tokens, 1), 4)}
    return out, protocol



# ---------------------------------------------------------------- long-video QA


@dataclass
class VideoQA:
    """Multiple choice over videos: a JSON list of {video, question, options, answer}."""

    questions: str = ""
    fps: float = tk.VIDEO_FPS
    max_frames: int = tk.VIDEO_MAX_FRAMES
    min_pixels: int = tk.VIDEO_MIN_PIXELS
    max_pixels: int = tk.VIDEO_MAX_PIXELS
    frames: str = "video"
    """video: Qwen2.5-VL video input (two frames a token grid; a local model's processor needs
    torchvision for it, a server gets the frames in order); images: one image a frame."""

    def __post_init__(self) -> None:
        View(frames=self.frames)  # the same check


LETTERS = "ABCDEFGHIJ"


def video_items(settings: VideoQA, common: Common, root: Path) -> tuple[list[Question], dict[str, Any]]:
    path = Path(settings.questions)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the questions ({e})") from None
    need = {"video", "question", "options", "answer"}
    if not isinstance(rows, list) or not all(isinstance(r, dict) and need <= set(r) for r in rows):
        raise ValueError(f"{path}: not a video-qa file (a JSON list of objects with {sorted(need)})")
    videos = sorted({str((path.parent / r["video"]).resolve()) for r in rows})
    overrides = {"video": {"fps": settings.fps, "max_frames": settings.max_frames, "min_pixels": settings.min_pixels,
                           "max_pixels": settings.max_pixels}}
    dataset = _dataset_of(videos, root, "video-qwen", overrides)
    docs = {str(Path(d.source).resolve()): d for d in iter_documents(dataset)}
    tok = tk.load_tokenizer()
    items = []
    for k, r in enumerate(rows):
        doc = docs.get(str((path.parent / r["video"]).resolve()))
        if doc is None:
            raise ValueError(f"{path}: video {r['video']} could not be ingested")
        options = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(r["options"]))
        question = f"{r['question']}\n{options}\nAnswer with the option's letter.{common.instruction}"
        qa = QA(question, r["answer"], "Str", [], "extract-single", "video-qa")
        sample = build_sample(doc, qa, str(dataset), "benchmark", Segment(0, 0), tok, view=View(frames=settings.frames))
        sample.sample_id = f"v{k:05d}"
        frames = sum(1 for it in doc.items if it.is_image)
        items.append(Question(sample, r["answer"], "choice", {"video": r["video"], "frames": frames,
                                                          "duration": doc.metadata.get("duration")}))
    protocol = {"dataset": str(dataset), "fps": settings.fps, "max_frames": settings.max_frames, "frames_as": settings.frames,
                "pixels": {"min": settings.min_pixels, "max": settings.max_pixels}}
    return items, protocol


TASKS = {"longdoc-vqa": (LongDoc, longdoc_items), "needle": (Needles, needle_items), "vtc": (Compression, vtc_items),
         "video-qa": (VideoQA, video_items)}


def parse_task(data: dict[str, Any]) -> tuple[str, Any, Common]:
    """(task name, its settings, the common settings) from a recipe's mapping: `task:`, a
    section named like the task's settings (`longdoc:`, `needles:`, `vtc:`, `video:`), the rest
    common."""
    data = dict(data)
    data.pop("description", None)
    name = data.pop("task", None)
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    cls, _ = TASKS[name]
    section = SECTIONS[name]
    raw = data.pop(section, {}) or {}
    if name == "vtc":
        raw = {**raw, "needles": build(Needles, raw.get("needles", {}), "vtc.needles")}
    return name, build(cls, raw, section), build(Common, data, "eval")


SECTIONS = {"longdoc-vqa": "longdoc", "needle": "needles", "vtc": "vtc", "video-qa": "video"}
