"""`mmlong render`: text files, or the text of an ingested dataset, into a new dataset of
`rendered-text` page images, with the compression ratio (and optionally OCR legibility) of
every document and overall. Resumable like ingest: documents already rendered are skipped.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmlong import tokens as tk
from mmlong.ingest.inputs import expand_inputs
from mmlong.errors import describe_error
from mmlong.pool import Done, Pool
from mmlong.presets import load_preset
from mmlong.render.glyph import RenderConfig, render_text
from mmlong.text import clean_text
from mmlong.schema import RENDERED_TEXT, TEXT, Document, Item
from mmlong.store import DatasetWriter, is_dataset, iter_documents

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".py", ".js", ".ts", ".c", ".h", ".cpp", ".java", ".go", ".rs", ".json", ".yaml", ".yml", ".tex"}


@dataclass
class RenderedDoc:
    source: str
    pages: int
    text_tokens: int
    vision_tokens: int
    legibility: float | None = None

    @property
    def ratio(self) -> float:
        return self.text_tokens / self.vision_tokens if self.vision_tokens else 0.0


@dataclass
class RenderReport:
    out: Path
    documents: list[RenderedDoc] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        vision = sum(d.vision_tokens for d in self.documents)
        return sum(d.text_tokens for d in self.documents) / vision if vision else 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def _sources(paths: list[str]) -> Iterator[tuple[str, str, str, str, str]]:
    """(doc_id, sha256 of the text, source, kind, text) of every input: text files, folders of
    them, or datasets (their documents' text items joined by blank lines). An input that
    cannot be read yields an empty doc_id and the reason in place of the text."""
    plain: list[str] = []
    for p in paths:
        if Path(p).is_dir() and is_dataset(Path(p)):
            for doc in iter_documents(Path(p), images=False):
                text = "\n\n".join(it.text for it in doc.items if it.kind == TEXT and it.text)
                sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
                yield doc.doc_id, sha, f"{Path(p).resolve()}#{doc.doc_id}", doc.kind, text
        elif Path(p).is_dir():
            datasets = {m.parent for m in Path(p).rglob("manifest.json") if is_dataset(m.parent)}
            plain += [str(f) for f in sorted(Path(p).rglob("*")) if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES
                      and not datasets.intersection(f.parents)]
        else:
            plain.append(p)
    files, missing = expand_inputs(plain)
    for p, reason in missing.items():
        yield "", "", p, "text", reason
    for f in files:
        data = f.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            yield "", "", str(f), "text", f"not UTF-8 text ({e.reason} at byte {e.start})"
            continue
        sha = hashlib.sha256(data).hexdigest()
        yield sha[:16], sha, str(f), "text", text


def _render_one(text: str, cfg: RenderConfig, budget: tk.PixelBudget, ocr: str | None):
    text = clean_text(text)
    if not text.strip():
        raise ValueError("no text to render (empty, or only whitespace and control characters)")
    pages = render_text(text, cfg, budget)
    legible = None
    if ocr and pages:
        from mmlong.render.ocr import legibility

        legible = legibility(text, [p.image for p in pages], ocr)
    return pages, tk.text_tokens(text), legible


def render(
    paths: list[str],
    out: str | Path,
    preset: str = "glyph-default",
    config: RenderConfig | None = None,
    budget: tk.PixelBudget | None = None,
    ocr: str | None = None,
    workers: int = 0,
    progress: bool = True,
) -> RenderReport:
    """Render every input's text with `config` (else the preset) into the dataset at `out`.
    With `ocr` (an engine name) each document's legibility is measured too."""
    from rich.console import Console
    from rich.progress import Progress

    cfg = config or RenderConfig.from_dict(load_preset("render", preset))
    budget = budget or tk.PixelBudget()
    if ocr:
        from mmlong.render.ocr import engine

        engine(ocr)  # a missing engine is an error now, not after the first render
    options: dict[str, Any] = {"render": cfg.to_dict(), "tokens": asdict(budget)}
    writer = DatasetWriter(Path(out), options)
    report = RenderReport(Path(out))
    console = Console(stderr=True)
    workers = workers or len(os.sched_getaffinity(0))
    bar = Progress(console=console, disable=not progress)
    task = bar.add_task("render", total=None)

    def say(what: str, source: str, reason: str) -> None:
        report.failed[source] = reason
        writer.fail(source, reason)
        console.print(f"{what} {source}: {reason}", markup=False, highlight=False, soft_wrap=True)

    def collect(done: Done) -> None:
        doc_id, sha, source, kind = done.key
        if done.error is not None:
            e = done.error
            say("failed", source, describe_error(e))
            return
        pages, text_tokens, legible = done.result
        sink = writer.open(doc_id, source)
        sink.write([Item(RENDERED_TEXT, image=p.image, image_format=cfg.image_format, width=p.width, height=p.height,
                         page=i, tokens=p.tokens) for i, p in enumerate(pages)])
        rendered = RenderedDoc(source, len(pages), text_tokens, sum(p.tokens for p in pages), legible)
        meta = {"source_kind": kind, "source_text_tokens": text_tokens, "compression_ratio": round(rendered.ratio, 4)}
        if legible is not None:
            meta["legibility"] = round(legible, 4)
        writer.commit(sink, Document(doc_id, source, RENDERED_TEXT, sha, len(pages), options=options, metadata=meta))
        report.documents.append(rendered)
        bar.advance(task)

    with bar, Pool(workers) as pool:
        for doc_id, sha, source, kind, text in _sources(paths):
            if not doc_id:
                say("skipped", source, text)
                continue
            if doc_id in writer.committed:
                report.skipped.append(source)
                continue
            pool.submit((doc_id, sha, source, kind), _render_one, text, cfg, budget, ocr)
            while len(pool) >= 2 * workers or (workers <= 1 and len(pool)):
                for done in pool.wait():
                    collect(done)
        while len(pool):
            for done in pool.wait():
                collect(done)
    writer.close()
    return report


def print_report(report: RenderReport) -> None:
    from rich.console import Console
    from rich.table import Table

    legible = any(d.legibility is not None for d in report.documents)
    table = Table(title=f"rendered into {report.out}")
    for col in ["document", "pages", "text tokens", "vision tokens", "compression"] + (["legibility"] if legible else []):
        table.add_column(col, justify="left" if col == "document" else "right")
    for d in report.documents:
        row = [Path(d.source.split("#")[0]).name + ("#" + d.source.split("#")[1] if "#" in d.source else ""),
               str(d.pages), f"{d.text_tokens:,}", f"{d.vision_tokens:,}", f"{d.ratio:.2f}x"]
        table.add_row(*row, *([f"{d.legibility:.3f}" if d.legibility is not None else "-"] if legible else []))
    text = sum(d.text_tokens for d in report.documents)
    vision = sum(d.vision_tokens for d in report.documents)
    table.add_row("overall", str(sum(d.pages for d in report.documents)), f"{text:,}", f"{vision:,}", f"{report.ratio:.2f}x",
                  *([""] if legible else []))
    Console().print(table)
