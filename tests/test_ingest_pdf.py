"""PDF ingest on generated PDFs: content, provenance, budgets, bad input, resume, kill -9."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from mmlong import store
from mmlong import tokens as tk
from mmlong.ingest import IngestOptions, ingest
from mmlong.ingest.pdf import PdfOptions, reading_order
from mmlong.schema import FIGURE, PAGE_IMAGE, TEXT
from tests.conftest import LOREM, ROOT, two_column_pdf, write_pdf


def run(paths, out, workers=1, **pdf) -> object:
    opts = IngestOptions(pdf=PdfOptions(**pdf)) if pdf else None
    return ingest([str(p) for p in paths], out, options=opts, workers=workers, chunk_pages=2, progress=False)


def docs_by_name(root: Path) -> dict[str, object]:
    return {Path(d.source).name: d for d in store.iter_documents(root)}


def test_interleaved_pages_text_outline_labels(pdf_dir, tmp_path):
    out = tmp_path / "ds"
    report = run([pdf_dir], out)
    assert report.ok and report.pages == 4 and len(report.ingested) == 2
    doc = docs_by_name(out)["report.pdf"]
    assert doc.num_pages == 3 and doc.kind == "pdf"
    assert doc.metadata["toc"] == [[1, "Introduction", 1], [1, "Results", 2], [2, "Tables", 3]]
    assert doc.metadata["page_labels"] == ["i", "A-1", "A-2"]
    assert [(it.kind, it.page) for it in doc.items] == [
        (PAGE_IMAGE, 0), (TEXT, 0), (PAGE_IMAGE, 1), (TEXT, 1), (PAGE_IMAGE, 2), (TEXT, 2)]
    page, text = doc.items[2], doc.items[3]
    assert (page.width, page.height, page.image_format) == (1190, 1684, "jpeg")
    assert Image.open(io.BytesIO(page.image)).size == (1190, 1684)
    assert page.tokens == tk.image_tokens(1684, 1190) == 2520
    assert page.bbox == (0, 0, 595, 842)
    assert text.text.startswith("Page 2. The committee reviewed")
    assert text.tokens == tk.text_tokens(text.text)
    x0, y0, x1, y1 = text.bbox
    assert 49 <= x0 < 60 and 50 <= y0 < 70 and x1 <= 545 and y1 <= 250
    assert doc.vision_tokens == 3 * 2520 and doc.text_tokens == sum(it.tokens for it in doc.items if it.kind == TEXT)
    assert doc.content_hash == __import__("hashlib").sha256((pdf_dir / "report.pdf").read_bytes()).hexdigest()


def test_two_column_reading_order(tmp_path):
    left = [f"LEFT{k} " + LOREM for k in range(3)]
    right = [f"RIGHT{k} " + LOREM for k in range(3)]
    two_column_pdf(tmp_path / "cols.pdf", left, right, "A two column title")
    out = tmp_path / "ds"
    run([tmp_path / "cols.pdf"], out, mode="text")
    texts = [it.text.split()[0] for it in store.load_document(out, next(iter(store.iter_documents(out))).doc_id).items]
    assert texts == ["A", "LEFT0", "LEFT1", "LEFT2", "RIGHT0", "RIGHT1", "RIGHT2"]
    run([tmp_path / "cols.pdf"], tmp_path / "rows", mode="text", columns=False)
    texts = [it.text.split()[0] for d in store.iter_documents(tmp_path / "rows") for it in d.items]
    assert texts == ["A", "LEFT0", "RIGHT0", "LEFT1", "RIGHT1", "LEFT2", "RIGHT2"]


def test_reading_order_spanning_blocks_separate_bands():
    boxes = [(50, 300, 280, 320), (50, 50, 545, 80), (310, 100, 545, 120), (50, 100, 280, 120), (50, 400, 545, 420)]
    assert reading_order(boxes, 595) == [1, 3, 0, 2, 4]


def test_figures_in_reading_order_with_bboxes(tmp_path):
    path = write_pdf(tmp_path / "figs.pdf", [LOREM, "Second page"], images={0: [(100, 300, 400, 500), (100, 550, 250, 650)]})
    out = tmp_path / "ds"
    run([path], out, mode="text", figures=True, dpi=72)
    doc = next(iter(store.iter_documents(out)))
    kinds = [(it.kind, it.page) for it in doc.items]
    assert kinds == [(TEXT, 0), (FIGURE, 0), (FIGURE, 0), (TEXT, 1)]
    fig = doc.items[1]
    assert fig.bbox == pytest.approx((100, 300, 400, 500), abs=0.5)
    assert (fig.width, fig.height) == (300, 200)  # 72 dpi: one pixel per point
    assert Image.open(io.BytesIO(fig.image)).size == (300, 200)
    assert fig.tokens == tk.image_tokens(200, 300) and fig.meta["xref"] > 0
    assert doc.items[2].bbox == pytest.approx((100, 550, 250, 650), abs=0.5)


def test_pages_mode_png_and_budget_preset(pdf_dir, tmp_path):
    run([pdf_dir / "note.pdf"], tmp_path / "png", mode="pages", image_format="png", dpi=72)
    (item,) = next(iter(store.iter_documents(tmp_path / "png"))).items
    assert item.kind == PAGE_IMAGE and item.image[:4] == b"\x89PNG" and (item.width, item.height) == (595, 842)

    report = ingest([str(pdf_dir)], tmp_path / "budget", preset="pdf-budget", workers=1, progress=False)
    assert report.ok
    for doc in store.iter_documents(tmp_path / "budget"):
        for it in doc.items:
            if it.kind == PAGE_IMAGE:
                assert it.width * it.height <= 1003520 and it.tokens <= 1280
                assert it.tokens == tk.image_tokens(it.height, it.width, tk.PixelBudget(3136, 1003520))


def test_huge_page_is_bounded_by_the_pixel_budget(tmp_path):
    path = write_pdf(tmp_path / "huge.pdf", ["A poster-sized page."], size=(14400, 14400))
    out = tmp_path / "ds"
    run([path], out, mode="pages", max_pixels=4_000_000)
    (item,) = next(iter(store.iter_documents(out))).items
    assert item.width * item.height <= 4_000_000 and abs(item.width - 2000) <= 1


def test_bad_inputs_are_reported_and_do_not_stop_the_run(bad_dir, pdf_dir, tmp_path):
    out = tmp_path / "ds"
    paths = [p for p, _ in bad_dir.values()] + [pdf_dir / "note.pdf", tmp_path / "missing.pdf", str(tmp_path / "*.nothing")]
    report = run(paths, out)
    assert not report.ok and report.ingested == [str((pdf_dir / "note.pdf").resolve())]
    for name, (path, reason) in bad_dir.items():
        assert re.search(reason, report.failed[str(path.resolve())]), (name, report.failed)
        assert str(path) not in report.failed[str(path.resolve())]  # the reason does not repeat the path
    assert report.failed[str(tmp_path / "missing.pdf")] == "no such file or folder"
    assert report.failed[str(tmp_path / "*.nothing")] == "pattern matched no file"
    saved = json.loads((out / "failures.json").read_text())
    assert saved == report.failed
    assert [d.doc_id for d in store.iter_documents(out)] != []


def test_resume_skips_done_and_retries_failed(pdf_dir, tmp_path):
    out = tmp_path / "ds"
    broken = tmp_path / "later.pdf"
    broken.write_bytes(b"")
    first = run([pdf_dir, broken], out)
    assert len(first.ingested) == 2 and list(first.failed) == [str(broken.resolve())]
    write_pdf(broken, ["Fixed now."])
    second = run([pdf_dir, broken], out)
    assert second.ok and len(second.skipped) == 2 and second.ingested == [str(broken.resolve())]
    assert json.loads((out / "failures.json").read_text()) == {}
    assert len(list(store.iter_documents(out))) == 3
    with pytest.raises(store.DatasetError, match="pdf.dpi"):
        run([pdf_dir], out, dpi=72)


def test_page_level_parallelism_gives_identical_output(tmp_path):
    path = write_pdf(tmp_path / "long.pdf", [f"Page {i}. {LOREM}" for i in range(9)])
    write_pdf(tmp_path / "short.pdf", ["Short."])
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    run([path, tmp_path / "short.pdf"], serial, workers=1)
    run([path, tmp_path / "short.pdf"], parallel, workers=2)
    a, b = docs_by_name(serial), docs_by_name(parallel)
    assert a.keys() == b.keys() == {"long.pdf", "short.pdf"}
    for name in a:
        assert a[name].items == b[name].items
    assert [it.page for it in a["long.pdf"].items if it.kind == PAGE_IMAGE] == list(range(9))


def test_a_corrupt_page_fails_its_document_only(tmp_path, monkeypatch):
    from mmlong.ingest import pdf as pdfmod

    real = pdfmod.page_items

    def broken(page, index, *args):
        if index == 3:
            raise RuntimeError("bad content stream")
        return real(page, index, *args)

    monkeypatch.setattr(pdfmod, "page_items", broken)
    path = write_pdf(tmp_path / "five.pdf", [f"p{i}" for i in range(5)])
    write_pdf(tmp_path / "ok.pdf", ["fine"])
    report = run([path, tmp_path / "ok.pdf"], tmp_path / "ds")
    assert report.failed == {str(path.resolve()): "page 4: RuntimeError: bad content stream"}
    assert [Path(d.source).name for d in store.iter_documents(tmp_path / "ds")] == ["ok.pdf"]
    assert list((tmp_path / "ds" / "items").iterdir()) == [next((tmp_path / "ds" / "items").iterdir())]


def _count_committed(root: Path) -> int:
    return len(list((root / "documents").glob("part-*.parquet")))


def test_kill_9_loses_no_finished_document(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for k in range(16):
        write_pdf(src / f"doc{k:02d}.pdf", [f"Document {k} page {i}. {LOREM}" for i in range(6)])
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "mmlong.cli", "ingest", str(src), "--out", str(out), "--workers", "1",
           "--chunk-pages", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "documents").is_dir() and _count_committed(out) >= 3):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = {d.doc_id: d for d in store.iter_documents(out, images=False)}
    assert 3 <= len(committed) < 16
    for d in committed.values():  # every committed document is whole
        assert len(d.items) == d.num_items == 12 and [it.page for it in d.items][::2] == list(range(6))
    resumed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"skipped {len(committed)} already present" in resumed.stdout
    final = [d.doc_id for d in store.iter_documents(out, images=False)]
    assert len(final) == len(set(final)) == 16
    assert list((out / "items").glob("part-*")) == [] and not (out / ".staging").exists()


def test_identical_files_are_ingested_once(pdf_dir, tmp_path):
    copy = tmp_path / "copy.pdf"
    copy.write_bytes((pdf_dir / "report.pdf").read_bytes())
    report = run([pdf_dir / "report.pdf", copy], tmp_path / "ds", workers=2)
    assert report.ok and report.skipped == [str(copy.resolve())]
    assert len(list(store.iter_documents(tmp_path / "ds", images=False))) == 1


def test_a_killed_worker_is_replaced_and_its_pages_retried(tmp_path):
    import multiprocessing
    import threading

    for k in range(4):
        write_pdf(tmp_path / f"d{k}.pdf", [f"Doc {k} page {i}. {LOREM}" for i in range(12)])
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(report=ingest([str(tmp_path)], tmp_path / "ds", workers=2, chunk_pages=1, progress=False))
    )
    thread.start()
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "ds" / "documents").is_dir():
        time.sleep(0.01)
    time.sleep(0.3)
    victims = multiprocessing.active_children()
    assert victims, "no worker process to kill"
    os.kill(victims[0].pid, signal.SIGKILL)
    thread.join(120)
    report = result["report"]
    assert report.ok, report.failed
    docs = list(store.iter_documents(tmp_path / "ds", images=False))
    assert len(docs) == 4 and all(len(d.items) == 24 for d in docs)
