"""Segments of a long document (the MMProLong recipe): a coherent run of 8-15 pages that QA
pairs are written from, while the sample shows the whole document."""

from __future__ import annotations

import random

from mmlong.samples import Segment
from mmlong.schema import TEXT, Document


def sample_segment(doc: Document, rng: random.Random, min_pages: int = 8, max_pages: int = 15) -> Segment:
    """A coherent run of 8-15 pages: it starts where an outline section starts when the
    outline offers one that fits, else anywhere. Short documents are one segment."""
    n = doc.num_pages
    if n <= min_pages:
        return Segment(0, n)
    length = rng.randint(min_pages, min(max_pages, n))
    starts = sorted({p - 1 for _, _, p in doc.metadata.get("toc", []) if 1 <= p <= n - min_pages + 1})
    start = rng.choice(starts) if starts else rng.randint(0, n - length)
    return Segment(start, min(n, start + length))


def page_texts(doc: Document) -> dict[int, list[str]]:
    """Text items per 0-based page, in reading order."""
    pages: dict[int, list[str]] = {}
    for it in doc.items:
        if it.kind == TEXT and it.text and it.page is not None:
            pages.setdefault(it.page, []).append(it.text)
    return pages
