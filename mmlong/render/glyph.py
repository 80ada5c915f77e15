"""Text to page images for visual-text compression (Glyph-style): layout with PyMuPDF's Story
(HTML/CSS engine: real fonts, kerning, wrapping, justification), rasterised at a dpi,
optionally squeezed horizontally and auto-cropped.

Deterministic: the fonts ship with mmlong (DejaVu), so the same text and config give the
same bytes on every machine. CJK text uses Noto Sans/Serif CJK when the system has it
(Debian fonts-noto-cjk), else MuPDF's built-in Droid Sans Fallback.
"""

from __future__ import annotations

import html
import io
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmlong import tokens as tk
from mmlong.imaging import encode_pixels, pixmap_array
from mmlong.text import clean_text

FONT_DIR = Path(__file__).with_name("fonts")
FONTS = {
    "sans": ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf"),
    "serif": ("DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf"),
    "mono": ("DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf"),
}
CJK_FONTS = {"sans": "NotoSansCJK-Regular.ttc", "serif": "NotoSerifCJK-Regular.ttc", "mono": "NotoSansCJK-Regular.ttc"}
CJK_DIRS = [Path("/usr/share/fonts/opentype/noto"), Path("/usr/share/fonts/noto-cjk"), Path("/usr/share/fonts/google-noto-cjk")]
PAGE_SIZES = {"A3": (842, 1191), "A4": (595, 842), "A5": (420, 595), "B5": (499, 709), "Letter": (612, 792), "Legal": (612, 1008)}
ALIGNS = ("left", "right", "center", "justify")
FORMATS = ("text", "prose", "markdown", "code")
_CJK_CHARS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK = re.compile(f"[{_CJK_CHARS}]")
_LONG_WORD = re.compile(f"[^\\s{_CJK_CHARS}]{{16,}}")  # CJK lines break between characters by themselves
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass
class RenderConfig:
    """Every parameter of a rendering; sizes in points (1/72 inch)."""

    page_size: str = "A4"
    """A3, A4, A5, B5, Letter, Legal, or 'WxH' in points."""
    aspect_ratio: float | None = None
    """Width/height; when set, the page height follows from the page width."""
    dpi: float = 72
    margins: float = 10
    font: str = "sans"
    """sans, serif, mono (shipped DejaVu fonts) or a path to a .ttf/.otf file."""
    font_size: float = 9
    line_height: float = 10
    align: str = "left"
    indent: float = 0
    """First-line indent of paragraphs."""
    paragraph_spacing: float = 0
    hscale: float = 1.0
    """Horizontal squeeze of the glyphs (0.5-1.0): more characters per line at the same height."""
    color: str = "#000000"
    background: str = "#ffffff"
    crop_width: bool = True
    """Crop each page's empty right side (down to the margin)."""
    crop_last_page: bool = True
    """Crop the empty bottom of the last page."""
    format: str = "text"
    """text (whitespace and line breaks kept), prose (paragraphs split on blank lines, hard-wrapped
    lines joined), markdown (CommonMark) or code (monospace, whitespace kept)."""
    image_format: str = "png"
    """png (lossless, the default for small text) or jpeg."""

    def __post_init__(self) -> None:
        self.page_points()
        checks = [
            (self.dpi > 0, f"dpi must be > 0, got {self.dpi}"),
            (0 < self.font_size <= self.line_height * 2, f"need 0 < font_size <= 2*line_height, got {self.font_size}, {self.line_height}"),
            (0.3 <= self.hscale <= 1.0, f"hscale must lie in [0.3, 1.0], got {self.hscale}"),
            (self.align in ALIGNS, f"align must be one of {ALIGNS}, got {self.align!r}"),
            (self.format in FORMATS, f"format must be one of {FORMATS}, got {self.format!r}"),
            (self.image_format in ("png", "jpeg"), f"image_format must be png or jpeg, got {self.image_format!r}"),
            (bool(_HEX.match(self.color)) and bool(_HEX.match(self.background)), f"colors must be #rrggbb, got {self.color}, {self.background}"),
            (self.font in FONTS or Path(self.font).is_file(), f"font must be sans, serif, mono or a font file, got {self.font!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        w, h = self.page_points()
        if 2 * self.margins >= min(w, h) - self.line_height:
            raise ValueError(f"margins {self.margins} leave no room on a {w}x{h} pt page")

    def page_points(self) -> tuple[float, float]:
        if self.page_size in PAGE_SIZES:
            w, h = PAGE_SIZES[self.page_size]
        elif m := re.fullmatch(r"(\d+(?:\.\d+)?)x(\d+(?:\.\d+)?)", self.page_size):
            w, h = float(m[1]), float(m[2])
        else:
            raise ValueError(f"page_size must be one of {sorted(PAGE_SIZES)} or 'WxH' in points, got {self.page_size!r}")
        if self.aspect_ratio is not None:
            if self.aspect_ratio <= 0:
                raise ValueError(f"aspect_ratio must be > 0, got {self.aspect_ratio}")
            h = w / self.aspect_ratio
        return w, h

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RenderConfig:
        from mmlong.presets import build

        return build(cls, data, "render")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RenderedPage:
    """One rendered page: encoded image and its Qwen2.5-VL token count."""

    image: bytes
    width: int
    height: int
    tokens: int


def _breakable(text: str) -> str:
    # MuPDF clips a word wider than the line: give long runs a zero-width break opportunity
    # between every character so they wrap instead of losing text.
    return _LONG_WORD.sub(lambda m: "\u200b".join(m.group(0)), text)


def to_html(text: str, fmt: str) -> str:
    """The HTML body the layout engine gets for `text` in format `fmt`."""
    if fmt == "markdown":
        from markdown_it import MarkdownIt

        return _breakable_html(MarkdownIt("commonmark", {"html": False}).enable("table").render(text))
    if fmt == "code":
        return f'<pre class="code">{html.escape(_breakable(text))}</pre>'
    paragraphs = re.split(r"\n\s*\n", text.strip("\n"))
    if fmt == "prose":
        paragraphs = [" ".join(p.split()) for p in paragraphs]
    return "".join(f"<p>{html.escape(_breakable(p))}</p>" for p in paragraphs if p.strip())


def _breakable_html(markup: str) -> str:
    return re.sub(r">([^<]+)<", lambda m: ">" + _breakable(m.group(1)) + "<", markup)


def _cjk_font(family: str) -> Path | None:
    for d in CJK_DIRS:
        if (d / CJK_FONTS[family]).is_file():
            return d / CJK_FONTS[family]
    return None


def _css(cfg: RenderConfig, text: str) -> tuple[str, list[Path]]:
    """CSS for the config and the font files it needs."""
    if cfg.font in FONTS:
        regular, bold = (FONT_DIR / f for f in FONTS[cfg.font])
        mono = FONT_DIR / FONTS["mono"][0]
        if _CJK.search(text) and (cjk := _cjk_font(cfg.font)):
            regular = bold = cjk
    else:
        regular = bold = Path(cfg.font)
        mono = FONT_DIR / FONTS["mono"][0]
    if cfg.format == "code":
        regular, bold = mono, mono
    files = [regular, bold, mono]
    rules = f"""
@font-face {{font-family: body; src: url({regular.name});}}
@font-face {{font-family: body; src: url({bold.name}); font-weight: bold;}}
@font-face {{font-family: code; src: url({mono.name});}}
body {{font-family: body; font-size: {cfg.font_size}pt; line-height: {cfg.line_height}pt; color: #000000;
       text-align: {cfg.align}; margin: 0; padding: 0;}}
p {{margin: 0 0 {cfg.paragraph_spacing}pt 0; text-indent: {cfg.indent}pt; white-space: {"pre-wrap" if cfg.format == "text" else "normal"};}}
pre, code {{font-family: code; white-space: pre-wrap; margin: 0;}}
h1, h2, h3, h4, h5, h6 {{font-size: {cfg.font_size}pt; font-weight: bold; margin: 0;}}
ul, ol {{margin: 0; padding-left: {2 * cfg.font_size}pt;}} li {{margin: 0;}}
blockquote {{margin: 0 0 0 {2 * cfg.font_size}pt;}}
table {{border-collapse: collapse;}} td, th {{padding: 0 {cfg.font_size / 3}pt;}}
"""
    return rules, files


def layout(text: str, cfg: RenderConfig):
    """Lay `text` out on pages; returns a PyMuPDF PDF document (one page per page image).
    The layout is done on a page 1/hscale as wide, which rendering squeezes back."""
    import pymupdf

    rules, files = _css(cfg, text)
    archive = pymupdf.Archive()
    for f in dict.fromkeys(files):
        archive.add(f.read_bytes(), f.name)
    story = pymupdf.Story(html=to_html(text, cfg.format), user_css=rules, archive=archive)
    width, height = cfg.page_points()
    page = pymupdf.Rect(0, 0, width / cfg.hscale, height)
    where = pymupdf.Rect(cfg.margins / cfg.hscale, cfg.margins, (width - cfg.margins) / cfg.hscale, height - cfg.margins)
    buf = io.BytesIO()
    writer = pymupdf.DocumentWriter(buf)
    more = True
    while more:
        device = writer.begin_page(page)
        more, _ = story.place(where)
        story.draw(device)
        writer.end_page()
    writer.close()
    return pymupdf.open("pdf", buf.getvalue())


def _is_gray(cfg: RenderConfig) -> bool:
    return all(c[1:3] == c[3:5] == c[5:7] for c in (cfg.color.lower(), cfg.background.lower()))


def _clip(page, cfg: RenderConfig, last: bool):
    """The part of a laid-out page to render: all of it, or cropped to the text's right and
    (on the last page) bottom edge plus the margin."""
    rect = page.rect
    boxes = [b[:4] for b in page.get_text("blocks")]
    if not boxes:
        return rect
    x1 = max(b[2] for b in boxes) + cfg.margins / cfg.hscale if cfg.crop_width else rect.x1
    y1 = max(b[3] for b in boxes) + cfg.margins if last and cfg.crop_last_page else rect.y1
    return type(rect)(0, 0, min(rect.x1, x1), min(rect.y1, y1))


def render_text(text: str, cfg: RenderConfig, budget: tk.PixelBudget = tk.DEFAULT_BUDGET) -> list[RenderedPage]:
    """Render `text` to page images; `budget` sizes their token counts.
    Pages are laid out black on white and tinted to the config's colours."""
    import pymupdf

    text = clean_text(text)
    if not text.strip():
        return []
    doc = layout(text, cfg)
    zoom = cfg.dpi / 72
    colorspace = pymupdf.csGRAY if _is_gray(cfg) else pymupdf.csRGB
    tint = (cfg.color.lower(), cfg.background.lower()) != ("#000000", "#ffffff")
    pages = []
    for i, page in enumerate(doc):
        clip = _clip(page, cfg, last=i == doc.page_count - 1)
        pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom * cfg.hscale, zoom), colorspace=colorspace, alpha=False, clip=clip)
        if tint:
            pix.tint_with(int(cfg.color[1:], 16), int(cfg.background[1:], 16))
        data = pix.tobytes("png") if cfg.image_format == "png" else encode_pixels(pixmap_array(pix), "jpeg", 95)
        pages.append(RenderedPage(data, pix.width, pix.height, tk.image_tokens(pix.height, pix.width, budget)))
    return pages


@dataclass
class Compression:
    """Text tokens of the source against vision tokens of its rendering."""

    text_tokens: int
    vision_tokens: int
    pages: int

    @property
    def ratio(self) -> float:
        return self.text_tokens / self.vision_tokens if self.vision_tokens else 0.0


def compression(text: str, pages: list[RenderedPage], tokenizer=None) -> Compression:
    return Compression(tk.text_tokens(text, tokenizer), sum(p.tokens for p in pages), len(pages))
