"""The one data model of mmlong: documents as ordered sequences of text and image items.

On disk a dataset has two Parquet tables that plain pyarrow, DuckDB or `datasets` read:
`items` (one row per item, in sequence order, images inline as encoded bytes) and
`documents` (one small row per document: provenance, metadata and token totals), so that
mixtures are planned from token counts without reading a single image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

FORMAT_VERSION = 1

TEXT = "text"
PAGE_IMAGE = "page-image"
FIGURE = "figure"
VIDEO_FRAME = "video-frame"
RENDERED_TEXT = "rendered-text"
IMAGE_KINDS = (PAGE_IMAGE, FIGURE, VIDEO_FRAME, RENDERED_TEXT)
ITEM_KINDS = (TEXT, *IMAGE_KINDS)


@dataclass
class Item:
    """One element of an interleaved sequence: a text span or an encoded image."""

    kind: str
    """One of ITEM_KINDS."""
    text: str | None = None
    """The text of a text item."""
    image: bytes | None = None
    """Encoded image bytes of an image item."""
    image_format: str | None = None
    """Codec of `image`: jpeg, png or webp."""
    width: int | None = None
    """Image width in pixels."""
    height: int | None = None
    """Image height in pixels."""
    page: int | None = None
    """0-based page index in the source (PDF page; None for videos)."""
    bbox: tuple[float, float, float, float] | None = None
    """(x0, y0, x1, y1) in page coordinates (PDF points, origin top-left)."""
    timestamp: float | None = None
    """Seconds from the start of a video."""
    tokens: int = 0
    """Qwen2.5-VL tokens of this item under the dataset's token budget."""
    meta: dict[str, Any] | None = None
    """Kind-specific extras (e.g. the image xref of a figure)."""

    def __post_init__(self) -> None:
        if self.kind not in ITEM_KINDS:
            raise ValueError(f"unknown item kind {self.kind!r}; expected one of {ITEM_KINDS}")

    @property
    def is_image(self) -> bool:
        return self.kind in IMAGE_KINDS


@dataclass
class Document:
    """Document-level provenance, metadata and token totals, with its items when loaded."""

    doc_id: str
    source: str
    """Path (or URL) the document was ingested from."""
    kind: str
    """Input kind: pdf, html or video."""
    content_hash: str
    """sha256 of the source bytes."""
    num_pages: int = 0
    text_tokens: int = 0
    vision_tokens: int = 0
    num_items: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    """The ingest options that produced it."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Source metadata: outline (toc), page labels, PDF info, ..."""
    items: list[Item] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return self.text_tokens + self.vision_tokens


ITEMS_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("seq", pa.int32()),
        ("kind", pa.string()),
        ("text", pa.string()),
        ("image", pa.binary()),
        ("image_format", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("page", pa.int32()),
        ("bbox", pa.list_(pa.float32(), 4)),
        ("timestamp", pa.float64()),
        ("tokens", pa.int32()),
        ("source", pa.string()),
        ("meta", pa.string()),
    ]
)

DOCUMENTS_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("source", pa.string()),
        ("kind", pa.string()),
        ("content_hash", pa.string()),
        ("num_pages", pa.int32()),
        ("num_items", pa.int32()),
        ("text_tokens", pa.int64()),
        ("vision_tokens", pa.int64()),
        ("total_tokens", pa.int64()),
        ("options", pa.string()),
        ("metadata", pa.string()),
    ]
)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


def items_table(doc_id: str, source: str, items: list[Item], first_seq: int = 0) -> pa.Table:
    """Arrow table of `items`, numbered from `first_seq` within the document."""
    cols: dict[str, list] = {name: [] for name in ITEMS_SCHEMA.names}
    for i, it in enumerate(items):
        cols["doc_id"].append(doc_id)
        cols["seq"].append(first_seq + i)
        cols["kind"].append(it.kind)
        cols["text"].append(it.text)
        cols["image"].append(it.image)
        cols["image_format"].append(it.image_format)
        cols["width"].append(it.width)
        cols["height"].append(it.height)
        cols["page"].append(it.page)
        cols["bbox"].append(list(it.bbox) if it.bbox is not None else None)
        cols["timestamp"].append(it.timestamp)
        cols["tokens"].append(it.tokens)
        cols["source"].append(source)
        cols["meta"].append(_dumps(it.meta))
    return pa.table(cols, schema=ITEMS_SCHEMA)


def item_from_row(row: dict[str, Any]) -> Item:
    bbox = row.get("bbox")
    return Item(
        kind=row["kind"],
        text=row.get("text"),
        image=row.get("image"),
        image_format=row.get("image_format"),
        width=row.get("width"),
        height=row.get("height"),
        page=row.get("page"),
        bbox=tuple(bbox) if bbox is not None else None,
        timestamp=row.get("timestamp"),
        tokens=row.get("tokens") or 0,
        meta=json.loads(row["meta"]) if row.get("meta") else None,
    )


def documents_table(docs: list[Document]) -> pa.Table:
    rows = [
        {
            "doc_id": d.doc_id,
            "source": d.source,
            "kind": d.kind,
            "content_hash": d.content_hash,
            "num_pages": d.num_pages,
            "num_items": d.num_items,
            "text_tokens": d.text_tokens,
            "vision_tokens": d.vision_tokens,
            "total_tokens": d.total_tokens,
            "options": _dumps(d.options),
            "metadata": _dumps(d.metadata),
        }
        for d in docs
    ]
    return pa.Table.from_pylist(rows, schema=DOCUMENTS_SCHEMA)


def document_from_row(row: dict[str, Any]) -> Document:
    return Document(
        doc_id=row["doc_id"],
        source=row["source"],
        kind=row["kind"],
        content_hash=row["content_hash"],
        num_pages=row["num_pages"],
        num_items=row["num_items"],
        text_tokens=row["text_tokens"],
        vision_tokens=row["vision_tokens"],
        options=json.loads(row["options"]) if row.get("options") else {},
        metadata=json.loads(row["metadata"]) if row.get("metadata") else {},
    )
