"""Run an ingest over a collection: expand inputs, skip what is done, process page chunks in a
process pool, commit each document as soon as all its pages are written, report failures.

Memory stays bounded whatever the document size: at most `2 * workers + 2` chunks of
`chunk_pages` pages are in flight or waiting to be written.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from mmlong import tokens as tk
from mmlong.errors import describe_error
from mmlong.ingest.inputs import check_input, expand_inputs, fetch_page, file_sha256, kind_of
from mmlong.ingest.options import IngestOptions
from mmlong.ingest.pdf import pages_table
from mmlong.ingest.video import Segmenter, frames_table
from mmlong.ingest.web import html_table
from mmlong.pool import LimitExceeded, Limits, Pool, WorkerCrashed
from mmlong.schema import Document
from mmlong.store import DatasetWriter, DocSink


@dataclass
class IngestReport:
    """What one run did."""

    out: Path
    ingested: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    pages: int = 0
    frames: int = 0
    webpages: int = 0
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
    chunk_size: int = 1

    def chunk_range(self, c: int) -> tuple[int, int]:
        return c * self.chunk_size, min((c + 1) * self.chunk_size, self.units)


def _worker_init() -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    tk.load_tokenizer()


class _Progress:
    """A rich progress bar over the input files (their number known from the start), with
    pages+frames done and their rate, or nothing."""

    def __init__(self, enabled: bool, files: int) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.bar = None
        self.start = time.perf_counter()
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("[bold]ingest files"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[units]:,} pages+frames of {task.fields[planned]:,} opened  "
                           "{task.fields[rate]:.1f}/s  failed {task.fields[failed]}"),
                TimeElapsedColumn(),
                console=self.console,
            )
            self.task = self.bar.add_task("ingest", total=files, units=0, planned=0, rate=0.0, failed=0)
            self.bar.start()

    def update(self, units: int, planned: int, done: int, failed: int) -> None:
        if self.bar is not None:
            rate = units / max(time.perf_counter() - self.start, 1e-9)
            self.bar.update(self.task, completed=done, units=units, planned=planned, rate=rate, failed=failed)

    def print(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False, soft_wrap=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _subtitles_changed(root: Path, doc_id: str, video: Path, opts: IngestOptions) -> str | None:
    """Why a video already in the dataset no longer matches its subtitle file (added, changed
    or removed since it was ingested), or None."""
    import json

    from mmlong.ingest.video import subtitle_file
    from mmlong.store import read_documents

    if not opts.video.subtitles:
        return None
    sub = subtitle_file(video)
    rows = read_documents(root, ["doc_id", "metadata"]).to_pylist()
    meta = next((json.loads(r["metadata"] or "{}") for r in rows if r["doc_id"] == doc_id), {})
    before, now = meta.get("subtitles_sha256"), file_sha256(sub) if sub else None
    if before == now or (before is None and meta.get("subtitles") and sub):  # unchanged (or from before hashes)
        return None
    if sub is None:
        return f"its subtitles {Path(meta['subtitles']).name} are gone; the dataset keeps them as ingested"
    what = "added after the video was ingested" if not meta.get("subtitles") else "changed since the video was ingested"
    return f"subtitles {sub.name} {what} are not in the dataset: ingest into a new --out to include them"


def ingest(
    paths: list[str],
    out: str | Path,
    preset: str = "pdf-144dpi",
    options: IngestOptions | None = None,
    workers: int = 0,
    chunk_pages: int = 8,
    progress: bool = True,
    chunk_frames: int = 32,
    limits: Limits | None = None,
) -> IngestReport:
    """Ingest the files, folders, globs and (with html.allow_network) URLs in `paths` into the
    dataset at `out` (created, or resumed: documents already there are skipped). `options`
    overrides the preset. Bad inputs are skipped, reported on one line each and recorded in
    out/failures.json. With workers > 1, `limits` bound each page (PDF), chunk of frames or
    webpage in time and each worker in memory (default: 300 s, 4096 MB); past them the
    document fails with the reason and the run goes on."""
    limits = limits or Limits(what="render")
    opts = options or IngestOptions.from_preset(preset)
    workers = workers or len(os.sched_getaffinity(0))
    if chunk_pages < 1 or chunk_frames < 1:
        raise ValueError(f"chunk_pages and chunk_frames must be >= 1, got {chunk_pages}, {chunk_frames}")
    if opts.video.as_video and chunk_frames % 2:
        raise ValueError(f"chunk_frames must be even for video input (frames pair up), got {chunk_frames}")
    options_dict = asdict(opts)
    writer = DatasetWriter(Path(out), options_dict)
    report = IngestReport(out=Path(out))
    files, missing = expand_inputs(paths)
    show = _Progress(progress, len(files))
    for path in writer.orphaned:
        show.print(f"warning {path}: items of documents no documents file lists (a documents shard moved away?), kept "
                   f"here, not deleted: put the documents shard back, or remove this file")
    for p, reason in missing.items():
        report.failed[p] = reason
        writer.fail(p, reason)
        show.print(f"skipped {p}: {reason}")
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
                elif kind_of(path) == "video" and (note := _subtitles_changed(Path(out), doc_id, path, opts)):
                    show.print(f"warning {source}: {note}")
                    report.warnings.append(f"{source}: {note}")
                return True
            kind = "html" if source.startswith(("http://", "https://")) else kind_of(path)
            meta = check_input(path, kind, opts)
        except Exception as e:  # whatever one input raises is that input's failure: the run goes on
            why = describe_error(e)
            report.failed[source] = why
            writer.fail(source, why)
            show.print(f"skipped {source}: {why}")
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
                   segmenter=Segmenter(v.scene_threshold, v.min_segment, v.max_segment) if kind == "video" else None,
                   chunk_size=size)
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

    def task(doc: _Doc, c: int) -> tuple:
        start, stop = doc.chunk_range(c)
        if doc.kind == "pdf":
            return pages_table, (str(doc.path), doc.doc_id, start, stop, opts.pdf, opts.tokens)
        if doc.kind == "video":
            return frames_table, (str(doc.path), doc.doc_id, doc.meta, start, stop, opts.video, opts.tokens)
        url = doc.source if doc.source != str(doc.path) else None
        return html_table, (str(doc.path), doc.doc_id, opts.html, opts.tokens, url)

    def collect(doc: _Doc, c: int, result: Any) -> None:
        """A chunk's items: written in chunk order as soon as the chunks before it are."""
        nonlocal buffered
        if isinstance(result, tuple):  # a webpage: (items, page metadata)
            result, extra = result
            doc.meta["warnings"] = doc.meta.get("warnings", []) + extra.pop("warnings", [])
            doc.meta.update(extra)
        doc.pending[c] = result
        buffered += 1
        while doc.next_chunk in doc.pending:
            table = doc.pending.pop(doc.next_chunk)
            buffered -= 1
            if doc.segmenter is not None:  # chunks arrive in time order
                table = doc.segmenter.label(table)
            doc.sink.write(table)
            start, stop = doc.chunk_range(doc.next_chunk)
            if doc.kind == "video":
                report.frames += stop - start
            elif doc.kind == "html":
                report.webpages += 1
            else:
                report.pages += stop - start
            doc.next_chunk += 1
        if doc.next_chunk == doc.chunks:
            finish(doc)

    limit = 2 * workers + 2
    pool = Pool(workers, initializer=_worker_init, limits=limits)
    tasks: dict[tuple[str, int], tuple[_Doc, int]] = {}
    buffered = 0
    try:
        while True:
            while not len(pool) or len(pool) + buffered < limit:
                if not queue and not open_next():
                    break
                if not queue:
                    continue
                doc, c = queue.popleft()
                if doc.failed:
                    continue
                tasks[(doc.doc_id, c)] = (doc, c)
                fn, args = task(doc, c)
                pool.submit((doc.doc_id, c), fn, *args)
            if not len(pool):
                break
            for done in pool.wait():
                doc, c = tasks.pop(done.key)
                if doc.failed:
                    continue
                if isinstance(done.error, LimitExceeded):
                    start, stop = doc.chunk_range(c)
                    unit = "pages" if doc.kind == "pdf" else "frames" if doc.kind == "video" else "page"
                    fail(doc, f"{done.error} on {unit} {start + 1}-{stop}" if doc.kind != "html" else str(done.error))
                elif isinstance(done.error, WorkerCrashed):
                    start, stop = doc.chunk_range(c)
                    unit = "pages" if doc.kind == "pdf" else "frames"
                    fail(doc, f"a worker process crashed on {unit} {start + 1}-{stop} (a decoder crash or out of memory)")
                elif done.error is not None:
                    fail(doc, describe_error(done.error))
                else:
                    collect(doc, c, done.result)
            show.update(report.pages + report.frames, total_pages, len(report.ingested) + len(report.skipped) + len(report.failed),
                        len(report.failed))
    except BaseException:
        pool.cancel()
        for doc, _ in list(tasks.values()) + list(queue):
            if not doc.failed:
                doc.failed = True
                doc.sink.abort()
        raise
    finally:
        pool.close()
        show.stop()
    report.seconds = time.perf_counter() - started
    writer.close()
    return report
