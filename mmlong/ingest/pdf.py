"""PDF ingest with PyMuPDF: validate a file, read its outline and page labels, and turn a
range of pages into items (page renders, text blocks in reading order, embedded figures).

PyMuPDF is not thread-safe: every worker process opens the file itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmlong import tokens as tk
from mmlong.errors import IngestError
from mmlong.pool import beat
from mmlong.imaging import DEFAULT_FORMAT, DEFAULT_QUALITY, check_encoding, encode_pixels, pixmap_array
from mmlong.schema import FIGURE, PAGE_IMAGE, TEXT, Item
from mmlong.text import clean_text

MODES = ("pages", "text", "interleaved")


@dataclass
class PdfOptions:
    """How PDF pages become items."""

    mode: str = "interleaved"
    """pages: page images only; text: text blocks only; interleaved: each page image
    followed by its text blocks."""
    dpi: float = 144
    """Render resolution (MMLongBench-Doc / MMProLong use 144)."""
    max_pixels: int | None = tk.IMAGE_MAX_PIXELS
    """Upper bound on the pixels of one render (page or figure): huge pages are scaled down to
    it. Defaults to what Qwen2.5-VL can see at most; set to a token budget (e.g. 1280*28*28)
    to render pages at the size the model will see."""
    min_pixels: int | None = None
    """Lower bound on the pixels of a page render: tiny pages are scaled up to it."""
    figures: bool = False
    """Add embedded images (rendered at their bbox) as figure items among the text blocks."""
    min_figure_side: int = 32
    """Skip embedded images smaller than this many pixels on a side once rendered."""
    image_format: str = DEFAULT_FORMAT
    """Codec of stored images: jpeg, png or webp (png is ~3x slower to encode)."""
    quality: int = DEFAULT_QUALITY
    """JPEG/WebP quality."""
    columns: bool = True
    """Read two-column layouts column by column; else top-to-bottom, left-to-right."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"pdf mode must be one of {MODES}, got {self.mode!r}")
        check_encoding("pdf", self.image_format, self.quality)
        if self.dpi <= 0:
            raise ValueError(f"need dpi > 0, got dpi={self.dpi}")
        if self.max_pixels is not None and self.min_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) > max_pixels ({self.max_pixels})")


def check_pdf(path: Path) -> dict[str, Any]:
    """Open `path` and return its document metadata, or raise IngestError with the reason:
    missing, empty, not a PDF, corrupt, encrypted, or without pages (truncated)."""
    import pymupdf

    if not path.is_file():
        raise IngestError("no such file")
    size = path.stat().st_size
    if size == 0:
        raise IngestError("empty file (0 bytes)")
    with path.open("rb") as f:
        head = f.read(1024)
    if b"%PDF-" not in head:
        raise IngestError(f"not a PDF (no %PDF- header; starts with {head[:8]!r})")
    pymupdf.TOOLS.mupdf_display_errors(False)  # causes go into the report, not onto stderr
    pymupdf.TOOLS.mupdf_warnings(reset=True)
    try:
        doc = pymupdf.open(path, filetype="pdf")
    except RuntimeError:  # FileDataError, EmptyFileError
        causes = pymupdf.TOOLS.mupdf_warnings(reset=True).strip().splitlines()
        raise IngestError(f"corrupt PDF: {causes[-1] if causes else 'MuPDF cannot open it'}") from None
    with doc:
        if doc.needs_pass:
            raise IngestError("encrypted PDF: a password is required")
        if doc.page_count == 0:
            raise IngestError("no pages (truncated or damaged PDF)")
        labels = [doc[i].get_label() for i in range(doc.page_count)] if doc.get_page_labels() else None
        first = doc[0].rect
        return {
            "page_count": doc.page_count,
            "toc": [[lvl, " ".join(clean_text(title).split()), page] for lvl, title, page in doc.get_toc(simple=True)],
            "page_labels": labels,
            "pdf_metadata": {k: v for k, v in (doc.metadata or {}).items() if v},
            "first_page_size": [round(first.width, 2), round(first.height, 2)],
            "repaired": bool(doc.is_repaired),
        }


def reading_order(boxes: list[tuple[float, float, float, float]], page_width: float, columns: bool = True) -> list[int]:
    """Indices of `boxes` (x0, y0, x1, y1) in reading order. With `columns`, a box that crosses
    the page's vertical midline spans the page and separates bands; inside a band the left
    column is read top to bottom before the right one."""
    if not columns:
        return sorted(range(len(boxes)), key=lambda i: (round(boxes[i][1], 1), boxes[i][0]))
    mid = page_width / 2
    order: list[int] = []
    band: list[int] = []

    def flush() -> None:
        left = [i for i in band if (boxes[i][0] + boxes[i][2]) / 2 < mid]
        right = [i for i in band if (boxes[i][0] + boxes[i][2]) / 2 >= mid]
        order.extend(sorted(left, key=lambda i: boxes[i][1]))
        order.extend(sorted(right, key=lambda i: boxes[i][1]))
        band.clear()

    for i in sorted(range(len(boxes)), key=lambda i: (boxes[i][1], boxes[i][0])):
        x0, _, x1, _ = boxes[i]
        if x0 < mid - 1 and x1 > mid + 1:
            flush()
            order.append(i)
        else:
            band.append(i)
    flush()
    return order


def _zoom(width_pt: float, height_pt: float, opts: PdfOptions) -> float:
    """Scale from points to pixels: `dpi`, bounded so the render has at most `max_pixels`
    (even after PyMuPDF rounds each side up: (w*z + 1)(h*z + 1) <= max) and at least
    `min_pixels`."""
    zoom = opts.dpi / 72
    area, perimeter = width_pt * height_pt, width_pt + height_pt
    if opts.max_pixels and (width_pt * zoom + 1) * (height_pt * zoom + 1) > opts.max_pixels:
        zoom = (-perimeter + math.sqrt(perimeter**2 + 4 * area * (opts.max_pixels - 1))) / (2 * area)
    elif opts.min_pixels and area * zoom * zoom < opts.min_pixels:
        zoom *= math.sqrt(opts.min_pixels / (area * zoom * zoom))
    return zoom


def _image_item(kind: str, pix, page: int, bbox, opts: PdfOptions, budget: tk.PixelBudget, meta=None) -> Item:
    return Item(
        kind=kind,
        image=encode_pixels(pixmap_array(pix), opts.image_format, opts.quality),
        image_format=opts.image_format,
        width=pix.width,
        height=pix.height,
        page=page,
        bbox=tuple(round(v, 2) for v in bbox),
        tokens=tk.image_tokens(pix.height, pix.width, budget),
        meta=meta,
    )


def _bomb_pixels() -> int:
    """Images larger than this are decompression bombs (Pillow's limit, 2x its warning)."""
    from PIL import Image

    return 2 * (Image.MAX_IMAGE_PIXELS or 2**62)


def page_items(page, index: int, opts: PdfOptions, budget: tk.PixelBudget, tokenizer,
               warnings: list[str] | None = None) -> list[Item]:
    """Items of one PyMuPDF page, in reading order. `budget` is the pixel budget of
    the Qwen image processor, used for token counts. A page render the processor would refuse
    (aspect ratio over 200) is left out with a line in `warnings`; its text stays."""
    warnings = warnings if warnings is not None else []
    import pymupdf

    rect = page.rect
    items: list[Item] = []
    zoom = _zoom(rect.width, rect.height, opts)
    w, h = rect.width * zoom, rect.height * zoom
    if opts.mode in ("pages", "interleaved") and max(w, h) / max(min(w, h), 1e-9) > tk.MAX_RATIO:
        warnings.append(f"page {index + 1} not rendered: its aspect ratio {max(w, h) / min(w, h):.0f} is over "
                        f"{tk.MAX_RATIO}, which the Qwen2.5-VL processor refuses")
    elif opts.mode in ("pages", "interleaved"):
        pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False, colorspace=pymupdf.csRGB)
        items.append(_image_item(PAGE_IMAGE, pix, index, tuple(rect), opts, budget))
    if opts.mode == "pages":
        return items
    boxes: list[tuple[float, float, float, float]] = []
    content: list[tuple[str, Any]] = []
    for x0, y0, x1, y1, text, _, block_type in page.get_text("blocks"):
        text = clean_text(text).strip()
        if block_type == 0 and text:
            boxes.append((x0, y0, x1, y1))
            content.append((TEXT, text))
    if opts.figures:
        seen = set()
        for info in page.get_image_info(xrefs=True):
            clip = pymupdf.Rect(info["bbox"]) & rect
            key = tuple(round(v) for v in clip)
            if clip.is_empty or key in seen:
                continue
            seen.add(key)
            if info.get("width", 0) * info.get("height", 0) > _bomb_pixels():
                warnings.append(f"page {index + 1}: a figure of {info['width']}x{info['height']} pixels skipped: over the "
                                f"decompression-bomb limit of {_bomb_pixels()} pixels (Pillow's)")
                continue
            fz = min(zoom, _zoom(clip.width, clip.height, opts))
            w, h = clip.width * fz, clip.height * fz
            if min(w, h) < opts.min_figure_side or max(w, h) / min(w, h) > tk.MAX_RATIO:
                continue
            boxes.append(tuple(clip))
            content.append((FIGURE, (clip, fz, info.get("xref", 0))))
    counts = iter(tk.texts_tokens([v for kind, v in content if kind == TEXT], tokenizer))
    text_tokens = [next(counts) if kind == TEXT else 0 for kind, _ in content]
    for i in reading_order(boxes, rect.width, opts.columns):
        kind, value = content[i]
        if kind == TEXT:
            items.append(
                Item(kind=TEXT, text=value, page=index, bbox=tuple(round(v, 2) for v in boxes[i]), tokens=text_tokens[i])
            )
        else:
            clip, fz, xref = value
            pix = page.get_pixmap(matrix=pymupdf.Matrix(fz, fz), clip=clip, alpha=False, colorspace=pymupdf.csRGB)
            items.append(_image_item(FIGURE, pix, index, tuple(clip), opts, budget, {"xref": xref}))
    return items


_open_doc: tuple[str, Any] | None = None


def pages_items(path: str, start: int, stop: int, opts: PdfOptions, budget: tk.PixelBudget,
                warnings: list[str] | None = None) -> list[Item]:
    """Items of pages [start, stop) of the PDF at `path`. Runs in worker processes, which keep
    the last opened document open between calls."""
    global _open_doc
    import pymupdf

    if _open_doc is None or _open_doc[0] != path:
        if _open_doc is not None:
            _open_doc[1].close()
        pymupdf.TOOLS.mupdf_display_errors(False)
        _open_doc = (path, pymupdf.open(path, filetype="pdf"))
    doc = _open_doc[1]
    tokenizer = tk.load_tokenizer() if opts.mode != "pages" else None
    items: list[Item] = []
    for index in range(start, stop):
        try:
            items.extend(page_items(doc[index], index, opts, budget, tokenizer, warnings))
        except Exception as e:
            raise IngestError(f"page {index + 1}: {type(e).__name__}: {e}") from None
        beat()  # the pool's time limit is per page
    return items


def pages_table(path: str, doc_id: str, start: int, stop: int, opts: PdfOptions, budget: tk.PixelBudget):
    """`pages_items` as an Arrow items table, built in the worker so the parent only writes it,
    and the pages' warnings."""
    from mmlong.schema import items_table

    warnings: list[str] = []
    table = items_table(doc_id, path, pages_items(path, start, stop, opts, budget, warnings))
    return (table, {"warnings": warnings}) if warnings else table
