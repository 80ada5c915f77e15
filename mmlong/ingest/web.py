"""Webpage ingest: saved HTML pages into interleaved items, or into full-page screenshots.

Interleaved (`dom`): the main content in DOM order: headings (with their level), paragraphs,
list items (each text once), code blocks (line breaks kept) and tables (rows as " | "-joined
cells) as text, every image where it stands (in lists and tables too) as a figure item with
its alt text and caption, the caption also following it as text. Scripts, styles, navigation
and boilerplate are left out, and so are short lines that stand on most pages of a site (a
folder of 4+ pages: "Next: / Previous: / Up:" lines the markup does not mark as navigation);
every line and image left out is listed in the warnings with the reason. Images resolve
relative to the page: files inside the page's own folder, data: URIs, and http(s) only with
`allow_network`; anything else is skipped with a warning in the document's metadata.

Screenshots (`pip install 'mmlong[web]'` and Debian's chromium-headless-shell or chromium):
Playwright renders the page with JavaScript off, every request routed through an allow-list
(the page's own folder; the network only with `allow_network`): an untrusted page cannot
pull local files (an <iframe src="file:///etc/...">) into its screenshot. The full page is
cut into tiles of at most `max_pixels`.
"""

from __future__ import annotations

import base64
import functools
import io
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlparse
from warnings import catch_warnings, simplefilter

from mmlong import tokens as tk
from mmlong.imaging import DEFAULT_FORMAT, DEFAULT_QUALITY, check_encoding, encode_pixels, to_rgb
from mmlong.ingest import dom
from mmlong.errors import IngestError
from mmlong.schema import FIGURE, PAGE_IMAGE, TEXT, Item

HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
CHROMIUM = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
_DATA_SRC = re.compile(r"""src\s*=\s*(["'])(data:image/[^"']+)\1""", re.I)


@dataclass
class HtmlOptions:
    """How webpages become items."""

    mode: str = "interleaved"
    """interleaved (text and images in DOM order) or screenshot (full-page tiles)."""
    main_content: bool = True
    """Keep the main content region only (the page's marker, else located with trafilatura);
    else every block of the body."""
    allow_network: bool = False
    """Fetch http(s) resources; off: no request leaves the machine."""
    max_bytes: int = 20_000_000
    min_image_side: int = 16
    max_pixels: int = tk.IMAGE_MAX_PIXELS
    """Largest image in pixels (interleaved mode); larger ones are scaled down."""
    tile_pixels: int = 1280 * 28 * 28
    """Screenshot mode: the full page is cut into tiles of at most this many pixels (1280
    Qwen tokens), all of about the same height."""
    viewport_width: int = 1280
    javascript: bool = False
    timeout: float = 30.0
    image_format: str = DEFAULT_FORMAT
    """Codec of stored images and tiles: jpeg, png or webp."""
    quality: int = DEFAULT_QUALITY

    def __post_init__(self) -> None:
        if self.mode not in ("interleaved", "screenshot"):
            raise ValueError(f"html mode must be interleaved or screenshot, got {self.mode!r}")
        check_encoding("html", self.image_format, self.quality)


def read_html(path: Path, opts: HtmlOptions) -> tuple[str, list[str]]:
    """The page decoded as browsers do (BOM, declared charset, UTF-8, else windows-1252) and
    warnings; IngestError if the file is missing, empty, too large or binary."""
    if not path.is_file():
        raise IngestError("no such file")
    size = path.stat().st_size
    if size == 0:
        raise IngestError("empty file (0 bytes)")
    if size > opts.max_bytes:
        raise IngestError(f"page too large ({size / 1e6:.1f} MB > {opts.max_bytes / 1e6:.0f} MB)")
    data = path.read_bytes()
    if b"\x00" in data[:4096]:
        raise IngestError("not an HTML page (binary content)")
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            return data.decode(codec, errors="replace"), []
    match = re.search(rb"""<meta[^>]+charset=["']?([\w-]+)""", data[:4096], re.I)
    warnings = []
    if match:
        declared = match[1].decode().lower()
        if declared.startswith("utf-16"):  # a page that can say so in ASCII is not UTF-16: browsers read UTF-8
            declared = "utf-8"
        try:
            return data.decode(declared), warnings
        except (LookupError, UnicodeDecodeError):
            warnings.append(f"the declared charset {match[1].decode()} does not decode the page; read as windows-1252")
    try:
        return data.decode("utf-8"), warnings
    except UnicodeDecodeError:
        pass
    # what browsers do with an undeclared page that is not UTF-8 (the WHATWG default for most locales)
    if not warnings:
        warnings.append("no charset declared and not UTF-8: read as windows-1252")
    return data.decode("cp1252", errors="replace"), warnings


def _encode(image, opts: HtmlOptions) -> bytes:
    import numpy as np

    return encode_pixels(np.asarray(to_rgb(image)), opts.image_format, opts.quality)


def _load_image(src: str, page: Path, inline: dict[str, str], opts: HtmlOptions, base_url: str | None = None
                ) -> tuple[bytes | None, str]:
    """Image bytes for `src`, or None and why not. A page fetched from `base_url` resolves
    relative sources against it. Nothing about one image (a broken URL, a name too long for
    the file system) fails the page."""
    try:
        return _fetch_image(src, page, inline, opts, base_url)
    except (ValueError, OSError) as e:
        return None, f"image {src[:80]!r} skipped: {type(e).__name__}: {str(e)[:120]}"


def _fetch_image(src: str, page: Path, inline: dict[str, str], opts: HtmlOptions, base_url: str | None = None
                 ) -> tuple[bytes | None, str]:
    if src in inline:
        src = inline[src]
    elif base_url and not src.startswith("data:"):
        src = urljoin(base_url, src)
    if src.startswith("data:"):
        try:
            return base64.b64decode(src.split(",", 1)[1]), ""
        except (IndexError, ValueError):
            return None, "undecodable data: URI"
    url = urlparse(src)
    if url.scheme in ("http", "https"):
        if not opts.allow_network:
            return None, f"not fetched (network off): {src}"
        import requests

        try:
            r = requests.get(src, timeout=opts.timeout)
            r.raise_for_status()
            return r.content, ""
        except requests.RequestException as e:
            return None, f"cannot fetch {src}: {type(e).__name__}"
    if url.scheme not in ("", "file"):
        return None, f"unsupported image source {src}"
    target = Path(unquote(url.path)) if url.scheme == "file" else page.parent / unquote(url.path)
    root = page.parent.resolve()
    target = target.resolve()
    if root not in target.parents:
        return None, f"outside the page's folder: {src}"
    if not target.is_file():
        return None, f"missing image {src}"
    return target.read_bytes(), ""


SITE_PAGES = 4
"""A folder of at least this many pages is a site whose repeated lines are navigation."""


def site_repeats(folder: Path, opts: HtmlOptions) -> frozenset[str]:
    """Short lines that stand on most pages of a site (the webpages of one folder, at least
    SITE_PAGES), by their `dom.Block.shape`: navigation the markup does not mark ("Next: <a> /
    Previous: <a> / Up: <a>" whichever pages the links name, a repeated site title). Read from
    the whole body of every page, once per process and folder state."""
    pages = sorted(p for p in folder.iterdir() if p.suffix.lower() in HTML_SUFFIXES and p.is_file())
    if len(pages) < SITE_PAGES:
        return frozenset()
    return _repeats(tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in pages), opts.max_bytes)


@functools.lru_cache(maxsize=8)
def _repeats(pages: tuple[tuple[str, int, int], ...], max_bytes: int) -> frozenset[str]:
    counts: Counter[str] = Counter()
    for name, _, size in pages:
        if size > max_bytes:
            continue
        try:
            html, _ = read_html(Path(name), HtmlOptions(max_bytes=max_bytes))
            counts.update({b.shape for b in dom.blocks(_DATA_SRC.sub('src=""', html), main_only=False)
                           if b.tag not in ("img", "pre") and len(b.text) <= 200})
        except (IngestError, RecursionError, ValueError):  # a bad page is its own document's error
            continue
    return frozenset(text for text, n in counts.items() if n > len(pages) / 2)


def page_items(path: Path, opts: HtmlOptions, budget: tk.PixelBudget, base_url: str | None = None,
               tokenizer=None) -> tuple[list[Item], dict[str, Any]]:
    """Items of one page (interleaved mode) and its metadata (title, warnings); `base_url`
    for a page fetched from the network."""
    from PIL import Image, UnidentifiedImageError

    html, warnings = read_html(path, opts)
    inline: dict[str, str] = {}

    def stash(m: re.Match) -> str:  # keep megabytes of data: URIs out of the parsers: pass them under a name
        name = f"mmlong-inline-{len(inline)}.png"
        inline[name] = m[2]
        return f'src="{name}"'

    html = _DATA_SRC.sub(stash, html)
    try:
        outside: list[str] = []
        found = dom.blocks(html, opts.main_content, outside)
    except (RecursionError, ValueError) as e:
        raise IngestError(f"unparseable HTML: {type(e).__name__}: {e}") from None
    tok = tokenizer if tokenizer is not None else tk.load_tokenizer()
    if outside:
        warnings.append(f"{len(outside)} images outside the main content left out: "
                        + ", ".join(src[:60] or "(no source)" for src in outside[:5]))
    repeated = site_repeats(path.parent, opts) if opts.main_content and base_url is None else frozenset()
    left_out = [b for b in found if b.tag != "img" and b.shape in repeated]
    if left_out:
        warnings.append(f"{len(left_out)} lines that stand on most pages of the site left out as navigation: "
                        + "; ".join(b.text[:60] for b in left_out[:3]))
    items: list[Item] = []
    for block in found:
        if block.tag != "img" and block.shape in repeated:
            continue
        if block.tag != "img":
            meta = {"tag": block.tag, **({"level": block.level} if block.level else {})}
            items.append(Item(TEXT, text=block.text, tokens=tk.text_tokens(block.text, tok), meta=meta))
            continue
        src = block.src
        if not src:
            warnings.append("image without a source")
            continue
        data, why = _load_image(src, path, inline, opts, base_url)
        if data is None:
            warnings.append(why)
            continue
        try:
            with catch_warnings(record=True) as caught:  # PIL's own warnings go to the document, not stderr
                simplefilter("always")
                image = Image.open(io.BytesIO(data))
                image.load()
            warnings += [f"image {src[:80]}: {w.message}" for w in caught]
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            warnings.append(f"unreadable image {src[:80]}: {type(e).__name__}: {e}")
            continue
        if min(image.size) < opts.min_image_side:
            warnings.append(f"image {src[:80]} skipped: {image.width}x{image.height}, below {opts.min_image_side} px (an icon)")
            continue
        if max(image.size) / min(image.size) > tk.MAX_RATIO:
            warnings.append(f"image {src[:80]} skipped: aspect ratio over {tk.MAX_RATIO} ({image.width}x{image.height})")
            continue
        if image.width * image.height > opts.max_pixels:
            scale = (opts.max_pixels / (image.width * image.height)) ** 0.5
            image = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))))
        shown = "data:" if src in inline else src
        meta = {"src": shown, **({"alt": block.alt} if block.alt else {}), **({"caption": block.caption} if block.caption else {})}
        items.append(Item(FIGURE, image=_encode(image, opts), image_format=opts.image_format, width=image.width,
                          height=image.height, tokens=tk.image_tokens(image.height, image.width, budget), meta=meta))
        if block.caption:
            items.append(Item(TEXT, text=block.caption, tokens=tk.text_tokens(block.caption, tok), meta={"tag": "figcaption"}))
    title = re.search(r"<title[^>]*>(.*?)</title>", html, re.I | re.S)
    return items, {"title": " ".join(title[1].split()) if title else "", "warnings": warnings}


PAGE_FILES = {
    "document": {".html", ".htm", ".xhtml"},
    "stylesheet": {".css"},
    "image": {".png", ".jpg", ".jpeg", ".gif", ".webp", ".svg", ".bmp", ".ico", ".avif"},
    "font": {".woff", ".woff2", ".ttf", ".otf", ".eot"},
}
"""What a saved page may load from its own folder, by request type: what it needs to look right."""


def _page_needs(path: Path, resource_type: str) -> bool:
    """A file of the page's folder the page may load: HTML (sub)frames, stylesheets, images and
    fonts, by their suffix; never other files (an <iframe src=".ssh/id_rsa"> stays blank)."""
    suffix = path.suffix.lower()
    allowed = PAGE_FILES.get(resource_type, set())
    return suffix in allowed or (resource_type not in PAGE_FILES and suffix in PAGE_FILES["image"] | PAGE_FILES["stylesheet"])


def find_chromium() -> str:
    for name in CHROMIUM:
        if found := shutil.which(name):
            return found
    raise IngestError("screenshot mode needs Chromium: apt-get install chromium-headless-shell (or chromium)")


def screenshot_items(path: Path, opts: HtmlOptions, budget: tk.PixelBudget, base_url: str | None = None
                     ) -> tuple[list[Item], dict[str, Any]]:
    """Full-page screenshot tiles of one page (or of `base_url`, whose fetch needed the
    network allowed), every request through the allow-list."""
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise IngestError("screenshot mode needs Playwright: pip install 'mmlong[web]'") from None
    from PIL import Image

    read_html(path, opts)  # the same size and content checks as interleaved mode
    root = path.parent.resolve()
    blocked: list[str] = []

    def route(r) -> None:
        url = urlparse(r.request.url)
        local = Path(unquote(url.path)).resolve() if url.scheme == "file" else None
        if local is not None and (root == local or root in local.parents) and _page_needs(local, r.request.resource_type):
            r.continue_()
        elif url.scheme in ("http", "https") and opts.allow_network:
            r.continue_()
        elif url.scheme == "data":
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync", "--disable-quic"]
    if not opts.allow_network:
        args.append("--host-resolver-rules=MAP * ~NOTFOUND")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=find_chromium(), args=args)
            try:
                context = browser.new_context(java_script_enabled=opts.javascript, viewport={"width": opts.viewport_width, "height": 800},
                                              service_workers="block")
                context.route("**/*", route)
                page = context.new_page()
                page.goto(base_url or path.resolve().as_uri(), wait_until="load", timeout=opts.timeout * 1000)
                png = page.screenshot(full_page=True, timeout=opts.timeout * 1000)
            finally:
                browser.close()
    except PlaywrightError as e:
        raise IngestError(f"Chromium could not render the page: {str(e).splitlines()[0]}") from None
    shot = Image.open(io.BytesIO(png)).convert("RGB")
    items = []
    for k, (top, bottom) in enumerate(tile_rows(shot.width, shot.height, opts.tile_pixels)):
        tile = shot.crop((0, top, shot.width, bottom))
        items.append(Item(PAGE_IMAGE, image=_encode(tile, opts), image_format=opts.image_format, width=tile.width,
                          height=tile.height, page=k, bbox=(0, top, tile.width, top + tile.height),
                          tokens=tk.image_tokens(tile.height, tile.width, budget), meta={"tile": k}))
    return items, {"screenshot": [shot.width, shot.height], "blocked": blocked}


def tile_rows(width: int, height: int, tile_pixels: int) -> list[tuple[int, int]]:
    """(top, bottom) of tiles cutting a full page into as few rows of at most `tile_pixels`
    as possible, of equal height: no thin strip is left at the bottom (a 1280x3 remainder has
    an aspect ratio the processor refuses)."""
    import math

    most = max(28, tile_pixels // max(width, 1))
    n = max(1, math.ceil(height / most))
    edges = [round(k * height / n) for k in range(n + 1)]
    return list(zip(edges, edges[1:]))


def html_table(path: str, doc_id: str, opts: HtmlOptions, budget: tk.PixelBudget, url: str | None = None):
    """(items table, page metadata) of one page, built in the worker; `url` for a page
    fetched from the network (its items name the URL as their source)."""
    from mmlong.schema import items_table

    items, meta = (screenshot_items if opts.mode == "screenshot" else page_items)(Path(path), opts, budget, url)
    if not items:
        why = f" ({'; '.join(meta['warnings'][:3])})" if meta.get("warnings") else ""
        raise IngestError(f"no content: the page has no text or images{why}")
    return items_table(doc_id, url or path, items), meta
