"""Text hygiene shared by ingest, synthesis and rendering."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BROKEN_WORD = re.compile(r"(\w)-[ \t]*\n[ \t]*([a-z])")


def clean_text(text: str) -> str:
    """`text` with control characters (outline separators such as "MacBook\\x11Air", a NUL
    that ends MuPDF's layout) turned into spaces; tabs, newlines and carriage returns stay."""
    return _CONTROL.sub(" ", text)


def join_lines(text: str) -> str:
    """`text` as one line: words hyphenated at a line break joined ("map-\\nping" -> "mapping"),
    other whitespace runs made one space."""
    return " ".join(_BROKEN_WORD.sub(r"\1\2", clean_text(text)).split())
