"""OCR text of scanned pages (a page image without a text layer), to write questions from:
never shown to the model. Read by the render stage's OCR engines (tesseract or RapidOCR) and
cached beside the dataset in DATASET/ocr/DOC_ID.json, so a second run reads no page again."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from mmlong.schema import PAGE_IMAGE, TEXT, Document, Item
from mmlong.store import atomic_write_text, iter_documents

CACHE = "ocr"


def scanned_pages(doc: Document) -> list[int]:
    """0-based pages that have a page image and no text."""
    with_text = {it.page for it in doc.items if it.kind == TEXT and (it.text or "").strip()}
    return sorted({it.page for it in doc.items if it.kind == PAGE_IMAGE and it.page not in with_text})


def ocr_pages(dataset: Path, doc: Document, ocr: str = "auto") -> dict[int, str]:
    """The OCR text of `doc`'s scanned pages, from the cache or read now (and cached);
    OcrUnavailable when a page must be read and no engine is installed."""
    from mmlong.render.ocr import engine

    pages = scanned_pages(doc)
    if not pages:
        return {}
    cache = Path(dataset) / CACHE / f"{doc.doc_id}.json"
    known = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {"pages": {}}
    todo = [p for p in pages if str(p) not in known["pages"]]
    if todo:
        read = engine(ocr)
        full = next(iter_documents(Path(dataset), images=True, doc_ids={doc.doc_id}))
        for it in full.items:
            if it.kind == PAGE_IMAGE and it.page in todo and it.image:
                known["pages"][str(it.page)] = read(it.image)
        known["engine"] = read.__name__.strip("_")
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps(known, ensure_ascii=False))
    return {int(p): t for p, t in known["pages"].items() if int(p) in pages}


def with_ocr_text(doc: Document, texts: dict[int, str]) -> Document:
    """`doc` with each OCR text as a text item after its page's image (meta "ocr": True)."""
    if not texts:
        return doc
    items: list[Item] = []
    for it in doc.items:
        items.append(it)
        if it.kind == PAGE_IMAGE and (it.page in texts) and texts[it.page].strip():
            items.append(Item(TEXT, text=texts[it.page], page=it.page, tokens=0, meta={"ocr": True}))
    return replace(doc, items=items)
