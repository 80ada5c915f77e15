"""A mixed folder of good and hostile inputs through `mmlong ingest`, as a user would run it.

Generated here: good PDFs, webpages and a video beside broken ones (empty, truncated, not
what the name says, a page tree with a cycle, nested Form XObjects that would render for
hours, a page 300x wider than tall, encrypted) and webpages with hostile images (a
20000x20000 PNG, a 300-character file name, `http://[::1`, a page declaring UTF-16 in ASCII,
markup nested 5,000 deep), a garbage and a truncated MP4, a UTF-16 subtitle file. Prints:
inputs tried, good ingested, bad reported, uncaught errors, peak memory of a process, wall
time, and whether every input ended where it should (good: ingested; bad: reported with a
reason; a hostile image: its page ingested without it).

    python benchmarks/robustness.py [--workers 2] [--page-timeout 20] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pymupdf
from PIL import Image

LOREM = ("Robust ingest keeps going when one input is bad. Each failure is reported with its reason "
         "and the good inputs beside it are ingested as if nothing happened. ") * 3


def _pdf(path: Path, pages: int, size=(595, 842)) -> None:
    doc = pymupdf.open()
    for i in range(pages):
        page = doc.new_page(width=size[0], height=size[1])
        page.insert_textbox(pymupdf.Rect(10, 10, size[0] - 10, size[1] - 10), f"Page {i + 1}. {LOREM}", fontsize=9)
    doc.save(path)


def nested_forms(path: Path, depth: int = 14, fan: int = 4) -> None:
    """A 2 KB PDF whose page draws a Form XObject that draws the next `fan` times, `depth`
    deep: fan^depth draw calls (4^12: minutes of rendering). tests/test_robustness.py uses it."""
    doc = pymupdf.open()
    page = doc.new_page(width=200, height=200)
    prev = doc.get_new_xref()
    doc.update_object(prev, "<< /Type /XObject /Subtype /Form /BBox [0 0 200 200] >>")
    doc.update_stream(prev, b"0 0 m 200 200 l S")
    for _ in range(depth):
        x = doc.get_new_xref()
        doc.update_object(x, f"<< /Type /XObject /Subtype /Form /BBox [0 0 200 200] /Resources << /XObject << /X {prev} 0 R >> >> >>")
        doc.update_stream(x, b" ".join([b"/X Do"] * fan))
        prev = x
    res, content = doc.get_new_xref(), doc.get_new_xref()
    doc.update_object(res, f"<< /XObject << /B {prev} 0 R >> >>")
    doc.update_object(content, "<< >>")
    doc.update_stream(content, b"/B Do")
    doc.xref_set_key(page.xref, "Resources", f"{res} 0 R")
    doc.xref_set_key(page.xref, "Contents", f"{content} 0 R")
    doc.save(path)


def _video(path: Path, seconds: int = 20, fps: int = 2) -> None:
    import cv2

    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (160, 120))
    for i in range(seconds * fps):
        frame = np.full((120, 160, 3), (i * 7) % 255, np.uint8)
        cv2.putText(frame, str(i), (20, 70), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 2)
        out.write(frame)
    out.release()


def _page(body: str, head: str = "") -> str:
    return f"<!doctype html><html><head>{head}<title>t</title></head><body><main><h1>Title</h1><p>{LOREM}</p>{body}</main></body></html>"


def make_inputs(d: Path) -> dict[str, str]:
    """Write the folder; returns name -> where it must end: good, bad, or image-skipped."""
    d.mkdir(parents=True, exist_ok=True)
    want: dict[str, str] = {}
    for i in range(3):
        _pdf(d / f"good-{i}.pdf", 12)
        want[f"good-{i}.pdf"] = "good"
    (d / "empty.pdf").write_bytes(b"")
    (d / "text.pdf").write_text("just text, not a PDF\n")
    (d / "garbage.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 40)
    (d / "cut.pdf").write_bytes((d / "good-0.pdf").read_bytes()[:609])
    (d / "cycle.pdf").write_bytes(
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[2 0 R 3 0 R]/Count 2>>endobj\n"
        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")
    nested_forms(d / "nested-forms.pdf")
    doc = pymupdf.open(d / "good-1.pdf")
    doc.save(d / "encrypted.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="secret", owner_pw="owner")
    want.update({n: "bad" for n in ["empty.pdf", "text.pdf", "garbage.pdf", "cut.pdf", "cycle.pdf", "nested-forms.pdf",
                                     "encrypted.pdf"]})
    _pdf(d / "ribbon.pdf", 1, size=(60000, 200))  # aspect ratio 300: the page is skipped, its text kept
    want["ribbon.pdf"] = "good"

    Image.new("1", (20000, 20000)).save(d / "huge.png")
    Image.new("RGB", (64, 48), (200, 30, 30)).save(d / "fine.png")
    (d / "hostile-images.html").write_text(_page(
        f'<ul><li><img src="huge.png" alt="huge"></li><li><img src="{"n" * 300}.png" alt="long name"></li><li><img src="fine.png" alt="a fine image"></li>'
        '<li><img src="http://[::1" alt="bad url"></li><li><img src="missing.png"></li></ul>'))
    want["hostile-images.html"] = "image-skipped"
    (d / "utf16-declared.html").write_bytes(_page("<p>ascii page</p>", '<meta charset="utf-16">').encode("ascii"))
    (d / "deep.html").write_text(_page("<div>" * 5000 + "deep text" + "</div>" * 5000))
    (d / "binary.html").write_bytes(b"\x00\x01\x02" * 1000)
    want.update({"utf16-declared.html": "good", "deep.html": "good", "binary.html": "bad"})

    _video(d / "good.mp4")
    (d / "good.srt").write_bytes("1\n00:00:01,000 --> 00:00:03,000\nŞu altyazı UTF-16\n".encode("utf-16"))
    (d / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64)
    (d / "cut.mp4").write_bytes((d / "good.mp4").read_bytes()[:2000])
    want.update({"good.mp4": "good", "garbage.mp4": "bad", "cut.mp4": "bad"})
    return want


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--page-timeout", type=float, default=20)
    ap.add_argument("--worker-memory", type=int, default=3072)
    ap.add_argument("--keep", type=Path, help="write the inputs and the dataset here (kept)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="mmlong-robustness-"))
    want = make_inputs(work / "in")
    out = work / "ds"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-c", "import sys; from mmlong.cli import main; sys.exit(main(sys.argv[1:]))", "ingest", str(work / "in"), "--out", str(out), "--workers", str(args.workers),
           "--page-timeout", str(args.page_timeout), "--worker-memory", str(args.worker_memory), "--no-progress",
           "--preset", "pdf-144dpi"]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    from mmlong import store

    failures = store.read_failures(out) if out.is_dir() else {}
    docs = {Path(r["source"]).name: r for r in store.read_documents(out).to_pylist()} if store.is_dataset(out) else {}
    failed = {Path(k).name: v for k, v in failures.items()}
    wrong = []
    for name, where in want.items():
        if where == "bad" and name not in failed:
            wrong.append(f"{name}: should fail, {'ingested' if name in docs else 'not reported'}")
        elif where != "bad" and name not in docs:
            wrong.append(f"{name}: should be ingested, {failed.get(name, 'not reported')}")
    skipped = []
    if "hostile-images.html" in docs:
        (d,) = [d for d in store.iter_documents(out, images=False) if Path(d.source).name == "hostile-images.html"]
        skipped = d.metadata.get("warnings", [])
    uncaught = int(proc.returncode not in (0, 1)) + proc.stderr.count("Traceback")
    rows = [("inputs tried", len(want)), ("good ingested", sum(1 for n, w in want.items() if w != "bad" and n in docs)),
            ("bad reported", sum(1 for n, w in want.items() if w == "bad" and n in failed)), ("uncaught errors", uncaught),
            ("exit status", proc.returncode), ("peak memory of a process", f"{peak_mb:.0f} MB"), ("wall time", f"{wall:.1f} s"),
            ("inputs that ended where they should", f"{len(want) - len(wrong)}/{len(want)}")]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print("\nfailure reasons:")
    for name, why in sorted(failed.items()):
        print(f"  {name}: {why}")
    print("\nwarnings of hostile-images.html:")
    for w in skipped:
        print(f"  {w}")
    for w in wrong:
        print(f"WRONG {w}")
    if uncaught:
        print(proc.stderr[-3000:])
    print(json.dumps({"tried": len(want), "wrong": len(wrong), "uncaught": uncaught, "peak_mb": round(peak_mb), "wall_s": round(wall, 1)}))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
