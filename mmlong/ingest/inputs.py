"""Inputs of an ingest run: paths, folders, globs and URLs into files of known kinds (PDF,
video, webpage), each checked before any page is processed."""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path
from typing import Any

from mmlong.errors import IngestError
from mmlong.ingest.options import IngestOptions
from mmlong.ingest.pdf import check_pdf
from mmlong.ingest.video import VIDEO_SUFFIXES, check_video
from mmlong.ingest.web import HTML_SUFFIXES, HtmlOptions, read_html


def expand_inputs(paths: list[str]) -> tuple[list[Path | str], dict[str, str]]:
    """Files named by `paths` (files; folders, searched recursively for PDFs, videos and HTML;
    globs) and http(s) URLs, in order and without repeats, and the inputs that named nothing."""
    found: list[Path | str] = []
    missing: dict[str, str] = {}
    for p in paths:
        path = Path(p)
        if p.startswith(("http://", "https://")):
            found.append(p)
        elif path.is_dir():
            found += sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in {".pdf"} | VIDEO_SUFFIXES | HTML_SUFFIXES)
        elif path.exists():
            found.append(path)
        elif glob.has_magic(p):
            matches = sorted(Path(m) for m in glob.glob(p, recursive=True))
            found += [m for m in matches if m.is_file()]
            if not matches:
                missing[p] = "pattern matched no file"
        else:
            missing[p] = "no such file or folder"
    seen: set[Path | str] = set()
    unique: list[Path | str] = []
    for f in found:
        if (r := f if isinstance(f, str) else f.resolve()) not in seen:
            seen.add(r)
            unique.append(r)
    return unique, missing


def fetch_page(url: str, folder: Path, opts: HtmlOptions) -> Path:
    """Download a webpage (network allowed) into `folder`; IngestError with the reason."""
    import requests

    if not opts.allow_network:
        raise IngestError("a URL needs --allow-network (network access is off)")
    try:
        r = requests.get(url, timeout=opts.timeout, stream=True)
        r.raise_for_status()
        data = r.raw.read(opts.max_bytes + 1, decode_content=True)
    except requests.RequestException as e:
        raise IngestError(f"cannot fetch the page: {type(e).__name__}: {e}") from None
    if len(data) > opts.max_bytes:
        raise IngestError(f"page too large (> {opts.max_bytes / 1e6:.0f} MB)")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.html"
    path.write_bytes(data)
    return path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def kind_of(path: Path) -> str:
    suffix = path.suffix.lower()
    return "video" if suffix in VIDEO_SUFFIXES else "html" if suffix in HTML_SUFFIXES else "pdf"


def check_input(path: Path, kind: str, opts: IngestOptions) -> dict[str, Any]:
    """Document metadata of a file of `kind` under the run's IngestOptions; IngestError if unusable."""
    if kind == "pdf":
        return check_pdf(path)
    if kind == "video":
        return check_video(path, opts.video)
    _, warnings = read_html(path, opts.html)
    return {"warnings": warnings}
