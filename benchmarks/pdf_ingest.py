"""PDF ingest speed: `mmlong ingest` against a bare PyMuPDF loop on the same pages.

The baseline renders every page at the same dpi and extracts its text, nothing else: the
practical limit. mmlong also encodes each page (JPEG q90), orders text blocks, counts
tokens and writes Parquet. Both run on one process and on all cores (the baseline with a
process pool over the same page chunks). Targets: >= 0.85x the baseline per core and
>= 1.8x scaling from 1 to 2 cores.

    python benchmarks/pdf_ingest.py [--pdfs DIR] [--max-pages 400] [--preset pdf-144dpi]

Without --pdfs it uses ../shared/benchmarks/mmlongbench-doc/documents when present, else
the sample PDFs in examples/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pymupdf

from mmlong.ingest import IngestOptions, ingest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "benchmarks" / "mmlongbench-doc" / "documents"


def bare_chunk(path: str, start: int, stop: int, dpi: float) -> int:
    with pymupdf.open(path) as doc:
        for i in range(start, stop):
            page = doc[i]
            page.get_pixmap(dpi=dpi)
            page.get_text()
    return stop - start


def bare(files: list[Path], dpi: float, workers: int, chunk: int) -> float:
    tasks = []
    for f in files:
        with pymupdf.open(f) as doc:
            n = doc.page_count
        tasks += [(str(f), s, min(s + chunk, n), dpi) for s in range(0, n, chunk)]
    start = time.perf_counter()
    if workers == 1:
        pages = sum(bare_chunk(*t) for t in tasks)
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            pages = sum(pool.map(bare_chunk, *zip(*tasks)))
    return pages / (time.perf_counter() - start)


def encode_ms(files: list[Path], preset: str, sample: int = 60) -> float:
    """Milliseconds to encode one page render with the preset's codec (mmlong's own encoder)."""
    from mmlong.ingest.pdf import _encode, _zoom

    opts = IngestOptions.from_preset(preset).pdf
    pixmaps = []
    for f in files:
        with pymupdf.open(f) as doc:
            for page in doc:
                z = _zoom(page.rect.width, page.rect.height, opts)
                pixmaps.append(page.get_pixmap(matrix=pymupdf.Matrix(z, z), alpha=False, colorspace=pymupdf.csRGB))
                if len(pixmaps) == sample:
                    break
        if len(pixmaps) == sample:
            break
    start = time.perf_counter()
    for pix in pixmaps:
        _encode(pix, opts)
    return (time.perf_counter() - start) / len(pixmaps) * 1000


def mmlong(files: list[Path], preset: str, workers: int, chunk: int) -> float:
    out = Path(tempfile.mkdtemp(prefix="mmlong-bench-"))
    try:
        start = time.perf_counter()
        report = ingest([str(f) for f in files], out / "ds", options=IngestOptions.from_preset(preset),
                        workers=workers, chunk_pages=chunk, progress=False)
        elapsed = time.perf_counter() - start
        assert report.ok, report.failed
        return report.pages / elapsed
    finally:
        shutil.rmtree(out)


def pick_files(folder: Path, max_pages: int) -> tuple[list[Path], int]:
    chosen, total = [], 0
    for f in sorted(folder.glob("*.pdf")):
        with pymupdf.open(f) as doc:
            n = doc.page_count
        if total + n <= max_pages:
            chosen.append(f)
            total += n
    return chosen, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pdfs", type=Path, default=SHARED if SHARED.is_dir() else ROOT / "examples")
    ap.add_argument("--max-pages", type=int, default=400)
    ap.add_argument("--preset", default="pdf-144dpi")
    ap.add_argument("--chunk-pages", type=int, default=8)
    args = ap.parse_args()
    files, pages = pick_files(args.pdfs, args.max_pages)
    dpi = IngestOptions.from_preset(args.preset).pdf.dpi
    cores = len(os.sched_getaffinity(0))
    print(f"{len(files)} PDFs, {pages} pages from {args.pdfs}; preset {args.preset} ({dpi:g} dpi); {cores} cores")
    bare(files[:1], dpi, 1, args.chunk_pages)  # warm the page cache
    rows = []
    for workers in sorted({1, cores}):
        b = bare(files, dpi, workers, args.chunk_pages)
        m = mmlong(files, args.preset, workers, args.chunk_pages)
        rows.append((workers, b, m))
    print(f"{'processes':>9} {'bare pages/s':>13} {'mmlong pages/s':>15} {'mmlong/bare':>12}")
    for workers, b, m in rows:
        print(f"{workers:>9} {b:>13.1f} {m:>15.1f} {m / b:>11.2f}x   (target >= 0.85x)")
    if len(rows) == 2:
        print(f"mmlong scaling 1 -> {cores} processes: {rows[1][2] / rows[0][2]:.2f}x (target >= 1.8x); "
              f"bare loop: {rows[1][1] / rows[0][1]:.2f}x")
    enc, bare_ms = encode_ms(files, args.preset), 1000 / rows[0][1]
    print(f"of which image encoding ({IngestOptions.from_preset(args.preset).pdf.image_format}): {enc:.1f} ms/page, "
          f"{enc / bare_ms:.0%} of the bare loop's {bare_ms:.1f} ms/page; "
          f"the bare loop plus encoding alone would reach {bare_ms / (bare_ms + enc):.2f}x")


if __name__ == "__main__":
    main()
