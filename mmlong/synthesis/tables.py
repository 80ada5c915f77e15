"""Tables of a PDF's pages (PyMuPDF's table finder), kept only when they read as clean grids:
a header row of distinct labels, row labels distinct, every cell short, one line and filled.
Charts and layouts the finder mistakes for tables fail those checks and are left out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_NUMBER = re.compile(r"^[-+]?\$?\d{1,3}(?:,\d{3})*(?:\.\d+)?%?$|^[-+]?\$?\d+(?:\.\d+)?%?$")


@dataclass
class Table:
    page: int
    """0-based."""
    header: list[str]
    rows: list[list[str]]
    """Data rows; the first cell labels the row."""

    def numeric(self, col: int) -> bool:
        return all(_NUMBER.match(r[col]) for r in self.rows)


def number(cell: str) -> float:
    return float(cell.replace(",", "").replace("$", "").rstrip("%"))


def clean_grid(page: int, grid: list[list]) -> Table | None:
    rows = [[" ".join(str(c).split()) if c is not None else "" for c in row] for row in grid]
    if len(rows) < 3 or len(rows[0]) < 2 or len(rows[0]) > 12:
        return None
    if any(len(r) != len(rows[0]) or any(not c or len(c) > 40 for c in r) for r in rows):
        return None
    header, data = rows[0], rows[1:]
    if len(set(header)) < len(header) or len({r[0] for r in data}) < len(data):
        return None
    return Table(page, header, data)


def pdf_tables(path: str | Path, pages: range) -> list[Table]:
    """Clean tables on `pages` (0-based) of the PDF at `path`; none if it cannot be read."""
    import pymupdf

    pymupdf.no_recommend_layout()  # a line on stdout otherwise
    try:
        doc = pymupdf.open(path)
    except Exception:  # noqa: BLE001 - a moved or unreadable source has no tables to offer
        return []
    out = []
    with doc:
        for p in pages:
            if p >= doc.page_count:
                break
            try:
                found = doc[p].find_tables().tables
            except Exception:  # noqa: BLE001 - the finder fails on some damaged pages
                continue
            out += [t for tab in found if (t := clean_grid(p, tab.extract())) is not None]
    return out
