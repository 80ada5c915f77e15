"""Run an ingest over a collection: expand inputs, skip what is done, process page chunks in a
process pool, commit each document as soon as all its pages are written, report failures.

Memory stays bounded whatever the document size: at most `2 * workers + 2` chunks of
`chunk_pages` pages are in flight or waiting to be written.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa

from mmlong import tokens as tk
from mmlong.ingest.inputs import check_input, expand_inputs, fetch_page, file_sha256, kind_of
from mmlong.ingest.pdf import IngestError, PdfOptions, pages_table
from mmlong.ingest.video import Segmenter, VideoOptions, frames_table
from mmlong.ingest.web import HtmlOptions, html_table
from mmlong.presets import build, load_preset
from mmlong.schema import Document
from mmlong.store import DatasetWriter, DocSink


@dataclass
class TokenBudget:
    """Pixel bounds of the Qwen2.5-VL image processor, which decide image token counts."""

    min_pixels: int = tk.IMAGE_MIN_PIXELS
    max_pixels: int = tk.IMAGE_MAX_PIXELS

    def __post_init__(self) -> None:
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(f"need 0 < min_pixels <= max_pixels, got {self.min_pixels}, {self.max_pixels}")


@dataclass
class IngestOptions:
    """Everything that decides the content of a dataset (stored in its manifest)."""

    pdf: PdfOptions = field(default_factory=PdfOptions)
    video: VideoOptions = field(default_factory=VideoOptions)
    html: HtmlOptions = field(default_factory=HtmlOptions)
    tokens: TokenBudget = field(default_factory=TokenBudget)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IngestOptions:
        sections = {f.name: f.default_factory for f in fields(cls)}  # each section's class
        unknown = set(data) - set(sections) - {"description"}
        if unknown:
            raise ValueError(f"unknown ingest option section(s): {sorted(unknown)}")
        return cls(**{name: build(section, data.get(name) or {}, name) for name, section in sections.items()})

    @classmethod
    def from_preset(cls, preset: str, overrides: dict[str, dict[str, Any]] | None = None) -> IngestOptions:
        data = load_preset("ingest", preset)
        for section, values in (overrides or {}).items():
            data.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
        return cls.from_dict(data)


@dataclass
class IngestReport:
    """What one run did."""

    out: Path
    ingested: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    pages: int = 0
    frames: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass
class _Doc:
    path: Path
    """The file read (for a URL: its downloaded copy)."""
    source: str
    """What the user named: the file, or the URL."""
    doc_id: str
    sha: str
    kind: str
    meta: dict[str, Any]
    units: int
    """Pages of a PDF, planned frames of a video."""
    chunks: int
    sink: DocSink
    segmenter: Segmenter | None = None
    next_chunk: int = 0
    pending: dict[int, pa.Table] = field(default_factory=dict)
    failed: bool = False
    crashes: dict[int, int] = field(default_factory=dict)
    """Worker crashes per chunk."""


def _worker_init() -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    tk.load_tokenizer()


def run_inline(fn: Callable, *args) -> Future:
    """`fn(*args)` run here, as a completed Future (the one-process path of a pool loop)."""
    fut: Future = Future()
    try:
        fut.set_result(fn(*args))
    except Exception as e:
        fut.set_exception(e)
    return fut


class _Progress:
    """A rich progress bar with pages/s, or nothing."""

    def __init__(self, enabled: bool, files: int) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.bar = None
        self.start = time.perf_counter()
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]ingest"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("pages+frames  {task.fields[rate]:.1f}/s  docs {task.fields[docs]}/{task.fields[files]}  failed {task.fields[failed]}"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self.task = self.bar.add_task("ingest", total=0, rate=0.0, docs=0, failed=0, files=files)
            self.bar.start()

    def update(self, pages: int, total: int, docs: int, failed: int) -> None:
        if self.bar is not None:
            rate = pages / max(time.perf_counter() - self.start, 1e-9)
            self.bar.update(self.task, completed=pages, total=total, rate=rate, docs=docs, failed=failed)

    def print(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False, soft_wrap=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def ingest(
    paths: list[str],
    out: str | Path,
    preset: str = "pdf-144dpi",
    options: IngestOptions | None = None,
    workers: int = 0,
    chunk_pages: int = 8,
    progress: bool = True,
    chunk_frames: int = 32,
) -> IngestReport:
    """Ingest the files, folders, globs and (with html.allow_network) URLs in `paths` into the
    dataset at `out` (created, or resumed: documents already there are skipped). `options` overrides the preset. Bad inputs
    are skipped, reported on one line each and recorded in out/failures.json."""
    opts = options or IngestOptions.from_preset(preset)
    workers = workers or len(os.sched_getaffinity(0))
    if chunk_pages < 1 or chunk_frames < 1:
        raise ValueError(f"chunk_pages and chunk_frames must be >= 1, got {chunk_pages}, {chunk_frames}")
    options_dict = asdict(opts)
    writer = DatasetWriter(Path(out), options_dict)
    report = IngestReport(out=Path(out))
    files, missing = expand_inputs(paths)
    show = _Progress(progress, len(files))
    for p, reason in missing.items():
        report.failed[p] = reason
        writer.fail(p, reason)
        show.print(f"skipped {p}: {reason}")
    budget = (opts.tokens.min_pixels, opts.tokens.max_pixels)
    queue: deque[tuple[_Doc, int]] = deque()
    file_iter: Iterator[Path | str] = iter(files)
    in_progress: dict[str, str] = {}
    total_pages = 0
    started = time.perf_counter()

    def open_next() -> bool:
        nonlocal total_pages
        path = next(file_iter, None)
        if path is None:
            return False
        source = str(path)
        try:
            if isinstance(path, str):  # a URL: read from a downloaded copy
                path = fetch_page(path, Path(out) / ".staging" / "web", opts.html)
            sha = file_sha256(path) if path.is_file() else ""
            doc_id = sha[:16]
            seen = writer.committed.get(doc_id) or in_progress.get(doc_id)
            if doc_id and seen:
                report.skipped.append(source)
                if seen != source:
                    show.print(f"skipped {source}: same content as {seen}")
                return True
            kind = "html" if source.startswith(("http://", "https://")) else kind_of(path)
            meta = check_input(path, kind, opts)
        except (IngestError, OSError) as e:
            report.failed[source] = str(e)
            writer.fail(source, str(e))
            show.print(f"skipped {source}: {e}")
            return True
        if meta.get("repaired"):
            show.print(f"warning {source}: damaged PDF repaired by MuPDF; some pages may be incomplete")
        if meta.get("subtitle_error"):  # the video goes in without them; the subtitle file is reported
            report.failed[meta["subtitles"]] = meta["subtitle_error"]
            writer.fail(meta["subtitles"], meta["subtitle_error"])
            show.print(f"skipped {meta['subtitles']}: {meta['subtitle_error']}")
        n = meta["page_count"] if kind == "pdf" else len(meta["indices"]) if kind == "video" else 1
        size = chunk_pages if kind == "pdf" else chunk_frames
        v = opts.video
        doc = _Doc(path, source, doc_id, sha, kind, meta, n, chunks=-(-n // size), sink=writer.open(doc_id, source),
                   segmenter=Segmenter(v.scene_threshold, v.min_segment, v.max_segment) if kind == "video" else None)
        in_progress[doc_id] = source
        for c in range(doc.chunks):
            queue.append((doc, c))
        total_pages += n
        return True

    def finish(doc: _Doc) -> None:
        meta = {k: v for k, v in doc.meta.items() if k not in ("cues", "subtitle_error")}
        for warning in meta.get("warnings", []):
            show.print(f"warning {doc.source}: {warning}")
        num_pages = meta.pop("page_count", 0)
        if doc.segmenter is not None:
            meta["segments"] = doc.segmenter.segments
        document = Document(doc.doc_id, doc.source, doc.kind, doc.sha, num_pages, options=options_dict, metadata=meta)
        writer.commit(doc.sink, document)
        report.ingested.append(doc.source)

    def fail(doc: _Doc, reason: str) -> None:
        nonlocal buffered
        doc.failed = True
        doc.sink.abort()
        buffered -= len(doc.pending)
        doc.pending.clear()
        report.failed[doc.source] = reason
        writer.fail(doc.source, reason)
        show.print(f"failed {doc.source}: {reason}")

    limit = 2 * workers + 2
    make_pool = lambda: ProcessPoolExecutor(  # noqa: E731
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init
    )
    pool = make_pool() if workers > 1 else None
    inflight: dict[Future, tuple[_Doc, int]] = {}
    buffered = 0
    succeeded = 0

    def chunk_range(doc: _Doc, c: int) -> tuple[int, int]:
        size = chunk_pages if doc.kind == "pdf" else chunk_frames
        return c * size, min((c + 1) * size, doc.units)

    def submit(doc: _Doc, c: int) -> Future:
        start, stop = chunk_range(doc, c)
        if doc.kind == "pdf":
            fn, args = pages_table, (str(doc.path), doc.doc_id, start, stop, opts.pdf, budget)
        elif doc.kind == "video":
            fn, args = frames_table, (str(doc.path), doc.doc_id, doc.meta, start, stop, opts.video, budget)
        else:
            url = doc.source if doc.source != str(doc.path) else None
            fn, args = html_table, (str(doc.path), doc.doc_id, opts.html, budget, url)
        return pool.submit(fn, *args) if pool else run_inline(fn, *args)

    def restart_after_crash(crashed: list[tuple[_Doc, int]]) -> None:
        """A worker died (a MuPDF crash or out of memory) and took the pool with it: retry every
        chunk that was in flight once in a fresh pool; a chunk that crashes twice fails its doc."""
        nonlocal pool
        if succeeded == 0 and any(doc.crashes.get(c) for doc, c in crashed):
            raise RuntimeError(
                "worker processes die before finishing any page: the pool cannot start here. Scripts must be "
                "importable files with an `if __name__ == '__main__':` guard (multiprocessing spawn), or use workers=1"
            )
        pool.shutdown(wait=True, cancel_futures=True)
        pool = make_pool()
        for doc, c in reversed(crashed):
            if doc.failed:
                continue
            doc.crashes[c] = doc.crashes.get(c, 0) + 1
            if doc.crashes[c] > 1:
                start, stop = chunk_range(doc, c)
                unit = "pages" if doc.kind == "pdf" else "frames"
                fail(doc, f"a worker process crashed on {unit} {start + 1}-{stop} (a decoder crash or out of memory)")
            else:
                queue.appendleft((doc, c))

    try:
        while True:
            while not inflight or len(inflight) + buffered < limit:  # a retried chunk may wait behind its successors
                if not queue and not open_next():
                    break
                if not queue:
                    continue
                doc, c = queue.popleft()
                if doc.failed:
                    continue
                try:
                    fut = submit(doc, c)
                except BrokenProcessPool:  # broke since the last wait: in-flight chunks report it
                    queue.appendleft((doc, c))
                    if not inflight:
                        restart_after_crash([])
                    break
                inflight[fut] = (doc, c)
            if not inflight:
                break
            done, _ = wait(inflight, return_when=FIRST_COMPLETED)
            crashed: list[tuple[_Doc, int]] = []
            for fut in done:
                doc, c = inflight.pop(fut)
                if doc.failed:
                    continue
                try:
                    result = fut.result()
                    if isinstance(result, tuple):  # a webpage: (items, page metadata)
                        result, extra = result
                        doc.meta["warnings"] = doc.meta.get("warnings", []) + extra.pop("warnings", [])
                        doc.meta.update(extra)
                    doc.pending[c] = result
                    buffered += 1
                    succeeded += 1
                except BrokenProcessPool:
                    crashed.append((doc, c))
                    continue
                except Exception as e:
                    fail(doc, str(e) if isinstance(e, IngestError) else f"{type(e).__name__}: {e}")
                    continue
                while doc.next_chunk in doc.pending:
                    table = doc.pending.pop(doc.next_chunk)
                    buffered -= 1
                    if doc.segmenter is not None:  # chunks arrive in time order
                        table = doc.segmenter.label(table)
                    doc.sink.write(table)
                    start, stop = chunk_range(doc, doc.next_chunk)
                    if doc.kind == "video":
                        report.frames += stop - start
                    else:
                        report.pages += stop - start
                    doc.next_chunk += 1
                if doc.next_chunk == doc.chunks:
                    finish(doc)
            if crashed:
                crashed += list(inflight.values())  # the pool is broken: nothing in flight will finish
                inflight.clear()
                restart_after_crash(crashed)
            show.update(report.pages + report.frames, total_pages, len(report.ingested), len(report.failed))
    except BaseException:
        for fut in inflight:
            fut.cancel()
        for doc, _ in list(inflight.values()) + list(queue):
            if not doc.failed:
                doc.failed = True
                doc.sink.abort()
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        show.stop()
    report.seconds = time.perf_counter() - started
    from mmlong.report import summarize

    writer.close(summary=summarize(Path(out)))
    return report
