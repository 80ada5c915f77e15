"""Regenerate the sample PDFs in examples/ (committed; run this only to change them).

    python examples/make_examples.py

Two small documents with what real ones have: an outline, roman-numbered front matter,
figures with captions, a table and a two-column page.
"""

from __future__ import annotations

import io
from pathlib import Path

import pymupdf
from PIL import Image, ImageDraw

HERE = Path(__file__).parent
A4 = pymupdf.paper_rect("a4")
MARGIN = 56

PROSE = [
    "Long-context vision-language models read whole documents at once: reports of a hundred pages, "
    "slide decks, manuals. Their training data must therefore be long as well, and its length must be "
    "measured in the unit the model pays for, which is tokens, not pages.",
    "A page rendered at 144 dots per inch becomes an image of 1190 by 1684 pixels. Qwen2.5-VL cuts it into "
    "patches of 14 pixels and merges them two by two, so every 28 by 28 pixel square costs one token.",
    "The text layer of a PDF gives the words of each page with their positions. Reading order matters: "
    "a two-column page read line by line across both columns mixes two unrelated sentences.",
    "Evidence for a question may lie on a single page or across several. Questions that anchor themselves "
    "to a section or a page range stay unambiguous when the whole document is shown.",
]


def chart_png(values: list[int], colors: list[str]) -> bytes:
    img = Image.new("RGB", (480, 300), "white")
    d = ImageDraw.Draw(img)
    d.line((40, 260, 460, 260), fill="black", width=2)
    d.line((40, 20, 40, 260), fill="black", width=2)
    for i, v in enumerate(values):
        x = 70 + i * 95
        d.rectangle((x, 260 - v * 2, x + 60, 260), fill=colors[i % len(colors)])
        d.text((x + 20, 265), f"Q{i + 1}", fill="black")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def photo_png(seed: int) -> bytes:
    img = Image.new("RGB", (400, 260))
    px = img.load()
    for y in range(260):
        for x in range(400):
            px[x, y] = ((x * seed) % 256, (y * 3 + seed * 40) % 256, ((x + y) * 2) % 256)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def html_page(page, html: str, rect=None) -> None:
    rect = rect or pymupdf.Rect(MARGIN, MARGIN, A4.width - MARGIN, A4.height - MARGIN)
    page.insert_htmlbox(rect, html, css="body {font-family: sans-serif; font-size: 11px;} h1 {font-size: 20px;}")


def annual_report(path: Path) -> None:
    doc = pymupdf.open()
    p = doc.new_page(width=A4.width, height=A4.height)
    html_page(p, "<h1>Long Documents, Annual Report 2026</h1><p>Prepared by the mmlong project.</p>")
    p = doc.new_page(width=A4.width, height=A4.height)
    html_page(p, "<h2>Contents</h2><p>1 Introduction ... 1</p><p>2 Results ... 2</p><p>3 Methods ... 3</p><p>4 Outlook ... 4</p>")
    p = doc.new_page(width=A4.width, height=A4.height)
    html_page(p, "<h2>1 Introduction</h2>" + "".join(f"<p>{t}</p>" for t in PROSE * 2))
    p = doc.new_page(width=A4.width, height=A4.height)
    html_page(p, "<h2>2 Results</h2><p>" + PROSE[1] + "</p>", pymupdf.Rect(MARGIN, MARGIN, A4.width - MARGIN, 200))
    p.insert_image(pymupdf.Rect(120, 210, 480, 435), stream=chart_png([60, 85, 40, 100], ["#4a8", "#48c", "#c84", "#a4c"]))
    html_page(p, "<p><i>Figure 1: Pages ingested per quarter (thousands).</i></p>", pymupdf.Rect(120, 440, 480, 470))
    table = "".join(f"<tr><td>Q{i}</td><td>{v}</td><td>{v * 2520:,}</td></tr>" for i, v in enumerate([60, 85, 40, 100], 1))
    html_page(
        p,
        "<p><b>Table 1: Pages and vision tokens at 144 dpi.</b></p><table border='1'><tr><th>Quarter</th><th>Pages (K)</th>"
        f"<th>Tokens (K)</th></tr>{table}</table>",
        pymupdf.Rect(MARGIN, 490, A4.width - MARGIN, A4.height - MARGIN),
    )
    p = doc.new_page(width=A4.width, height=A4.height)
    html_page(p, "<h2>3 Methods</h2>", pymupdf.Rect(MARGIN, MARGIN, A4.width - MARGIN, 100))
    mid = A4.width / 2
    html_page(p, "".join(f"<p>Left column. {t}</p>" for t in PROSE), pymupdf.Rect(MARGIN, 110, mid - 12, A4.height - MARGIN))
    html_page(p, "".join(f"<p>Right column. {t}</p>" for t in PROSE[::-1]), pymupdf.Rect(mid + 12, 110, A4.width - MARGIN, A4.height - MARGIN))
    p = doc.new_page(width=A4.width, height=A4.height)
    html_page(p, "<h2>4 Outlook</h2>" + "".join(f"<p>{t}</p>" for t in PROSE[2:]))
    doc.set_toc([[1, "1 Introduction", 3], [1, "2 Results", 4], [2, "Figure 1", 4], [1, "3 Methods", 5], [1, "4 Outlook", 6]])
    doc.set_page_labels([{"startpage": 0, "prefix": "", "style": "r", "firstpagenum": 1},
                         {"startpage": 2, "prefix": "", "style": "D", "firstpagenum": 1}])
    doc.set_metadata({"title": "Long Documents, Annual Report 2026", "author": "mmlong"})
    doc.save(path, garbage=4, deflate=True)


def field_guide(path: Path) -> None:
    doc = pymupdf.open()
    for n in range(1, 4):
        p = doc.new_page(width=A4.width, height=A4.height)
        html_page(p, f"<h2>Plate {n}</h2><p>{PROSE[n % len(PROSE)]}</p>", pymupdf.Rect(MARGIN, MARGIN, A4.width - MARGIN, 200))
        p.insert_image(pymupdf.Rect(100, 220, 500, 480), stream=photo_png(n + 2))
        html_page(p, f"<p><i>Figure {n}: A synthetic landscape, plate {n}.</i></p>", pymupdf.Rect(100, 485, 500, 520))
    doc.set_toc([[1, f"Plate {n}", n] for n in range(1, 4)])
    doc.save(path, garbage=4, deflate=True)


if __name__ == "__main__":
    annual_report(HERE / "annual-report.pdf")
    field_guide(HERE / "field-guide.pdf")
    for f in sorted(HERE.glob("*.pdf")):
        print(f, f.stat().st_size, "bytes")
