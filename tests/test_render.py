"""Text rendering for visual compression: presets, layout, crops, colours, ratio arithmetic, OCR."""

from __future__ import annotations

import hashlib
import io
import shutil
import unicodedata

import pytest
from PIL import Image

from mmlong import tokens as tk
from mmlong.presets import list_presets, load_preset
from mmlong.render.glyph import RenderConfig, compression, layout, render_text
from mmlong.render.ocr import OcrUnavailable, char_accuracy, engine, legibility

TEXT = ("Visual compression shows long text to a model as page images. A page of small print holds "
        "thousands of characters, yet costs only a few hundred vision tokens.\n\n") * 20 + "def f(x):\n    return x * 2\n"
# sha256 prefix, width and height of the first page, page count: pinned by the shipped fonts
# and PyMuPDF's rasteriser. A change here means every rendered dataset changes too.
GOLDEN = {
    "glyph-120dpi": ("333e51b55f193548", 983, 734, 1),
    "glyph-96dpi": ("a07c9e8825cb5270", 787, 587, 1),
    "glyph-code": ("0a2bb1532dd3430a", 785, 812, 1),
    "glyph-dark": ("1f51af0e3e434ba1", 590, 440, 1),
    "glyph-default": ("b91a53bd19261c5f", 590, 440, 1),
    "large-print": ("59a124e18942398b", 808, 1190, 4),
}


def preset(name: str, **changes) -> RenderConfig:
    return RenderConfig.from_dict({**load_preset("render", name), **changes})


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_pages_per_preset(name):
    pages = render_text(TEXT, preset(name))
    digest, width, height, count = GOLDEN[name]
    assert (hashlib.sha256(pages[0].image).hexdigest()[:16], pages[0].width, pages[0].height, len(pages)) == GOLDEN[name]
    assert render_text(TEXT, preset(name))[0].image == pages[0].image  # deterministic
    assert Image.open(io.BytesIO(pages[0].image)).size == (width, height)


def test_every_preset_is_golden():
    assert set(list_presets("render")) - {"search-space"} == set(GOLDEN)


def test_glyph_default_parameters_and_compression():
    cfg = preset("glyph-default")
    assert (cfg.page_size, cfg.dpi, cfg.margins, cfg.font, cfg.font_size, cfg.line_height, cfg.align) == (
        "A4", 72, 10, "sans", 9, 10, "left")
    prose = ("Researchers train long-context models on documents of a hundred pages and more, and every "
             "page shown as an image costs tokens in proportion to its pixels. ") * 120
    pages = render_text(prose, cfg)
    c = compression(prose, pages)
    assert len(pages) == 2 and pages[0].width <= 595 and pages[0].height == 842
    assert 2.7 <= c.ratio <= 4.5  # Glyph reports ~3.3-4x at 72 dpi; Qwen tokens give ~3x on prose
    c96 = compression(prose, render_text(prose, preset("glyph-96dpi")))
    c120 = compression(prose, render_text(prose, preset("glyph-120dpi")))
    assert c.ratio > c96.ratio > c120.ratio > 0.8
    assert c.ratio / c96.ratio == pytest.approx((96 / 72) ** 2, rel=0.15)  # tokens grow with pixels


def test_prose_reflows_hard_wrapped_lines():
    wrapped = "A paragraph that was\nhard wrapped at a\nnarrow width.\n\nA second one."
    assert [t for t, _, _ in _lines(wrapped, RenderConfig(format="prose"))] == [
        "A paragraph that was hard wrapped at a narrow width.", "A second one."]
    assert len(_lines(wrapped, RenderConfig(format="text"))) == 4


def test_compression_arithmetic_by_hand():
    # "Hello world" is two Qwen tokens; a 280x56 pt page at 72 dpi, uncropped, is a 280x56 px
    # image: (56/28) * (280/28) = 20 vision tokens; 2 / 20 = 0.1.
    cfg = RenderConfig(page_size="280x56", margins=10, crop_width=False, crop_last_page=False)
    pages = render_text("Hello world", cfg)
    assert [(p.width, p.height, p.tokens) for p in pages] == [(280, 56, 20)]
    c = compression("Hello world", pages)
    assert (c.text_tokens, c.vision_tokens, c.pages, c.ratio) == (2, 20, 1, 0.1)
    # at 144 dpi the same page is 560x112 px: 4 * 20 = 80 tokens
    assert render_text("Hello world", RenderConfig(page_size="280x56", dpi=144, crop_width=False,
                                                   crop_last_page=False))[0].tokens == 80


def test_crops_and_page_geometry():
    text = "A short line.\n\nAnother one."
    full = render_text(text, RenderConfig(crop_width=False, crop_last_page=False))[0]
    assert (full.width, full.height) == (595, 842)
    cropped = render_text(text, RenderConfig())[0]
    assert cropped.width < 200 and cropped.height < 60 and cropped.tokens < full.tokens
    letter = render_text(text, RenderConfig(page_size="Letter", dpi=144, crop_width=False, crop_last_page=False))[0]
    assert (letter.width, letter.height) == (1224, 1584)
    wide = render_text(text, RenderConfig(aspect_ratio=2.0, crop_width=False, crop_last_page=False))[0]
    assert (wide.width, wide.height) == (595, 298)


def test_horizontal_scale_fits_more_per_line():
    text = "word " * 3000
    normal, squeezed = _lines(text, RenderConfig()), _lines(text, RenderConfig(hscale=0.75))
    assert len(squeezed) < 0.8 * len(normal)
    page = render_text(text, RenderConfig(hscale=0.75, crop_width=False))[0]
    assert page.width == 595  # squeezed back to the page width


def _ink_right_of(image: bytes, x: int) -> bool:
    img = Image.open(io.BytesIO(image)).convert("L")
    return any(img.getpixel((i, j)) < 200 for i in range(x, img.width) for j in range(img.height))


def _lines(text: str, cfg: RenderConfig) -> list[tuple[str, float, float]]:
    doc = layout(text, cfg)
    return [("".join(s["text"] for s in line["spans"]), line["bbox"][0], line["bbox"][2])
            for page in doc for block in page.get_text("dict")["blocks"] for line in block.get("lines", [])]


def test_long_words_wrap_without_losing_text():
    word = "".join(chr(ord("a") + i % 26) for i in range(400))
    cfg = RenderConfig(crop_width=False)
    lines = _lines(f"start {word} end", cfg)
    assert len(lines) >= 4
    visible = "".join(t for t, _, _ in lines).replace("\u200b", "").replace(" ", "").replace("\xa0", "")
    assert visible == f"start{word}end"
    assert not _ink_right_of(render_text(f"start {word} end", cfg)[0].image, 595 - int(cfg.margins))


def test_cjk_wraps_between_characters():
    text = "长文档多模态理解需要把许多页面压缩成图像。" * 30
    cfg = RenderConfig(crop_width=False)
    lines = _lines(text, cfg)
    # extraction maps some glyphs back to compatibility ideographs (理 -> U+F9E4): compare NFKC
    assert len(lines) >= 3 and unicodedata.normalize("NFKC", "".join(t for t, _, _ in lines)) == text
    pages = render_text(text, cfg)
    assert pages[0].tokens > 0 and not _ink_right_of(pages[0].image, 595 - int(cfg.margins))


def test_dark_and_sepia_palettes():
    dark = Image.open(io.BytesIO(render_text("Some text here.", preset("glyph-dark"))[0].image))
    assert dark.mode == "L" and dark.getpixel((1, 1)) == 0x1E and dark.getextrema()[1] > 0xB0
    sepia = RenderConfig(color="#332211", background="#f4ecd8")
    img = Image.open(io.BytesIO(render_text("Some text here.", sepia)[0].image)).convert("RGB")
    assert img.getpixel((1, 1)) == (0xF4, 0xEC, 0xD8) and all(low < 0x80 for low, _ in img.getextrema())


def test_markdown_and_code_formats():
    md = "# Results\n\nRevenue grew **twelve** percent.\n\n- one\n- two\n\n```\nx = 1\n```\n"
    doc = layout(md, RenderConfig(format="markdown"))
    spans = [s for b in doc[0].get_text("dict")["blocks"] for ln in b.get("lines", []) for s in ln["spans"]]
    fonts = {s["text"].strip(): s["font"] for s in spans if s["text"].strip()}
    assert fonts["Results"] == "DejaVuSans-Bold" and fonts["twelve"] == "DejaVuSans-Bold"
    assert fonts["x = 1"] == "DejaVuSansMono" and "#" not in "".join(fonts)
    code = _lines("def f(x):\n    return   x", RenderConfig(format="code"))
    assert [t for t, _, _ in code] == ["def f(x):", "    return   x"]


def test_invalid_configs_are_clear_errors():
    for bad, match in [({"dpi": 0}, "dpi"), ({"hscale": 1.5}, "hscale"), ({"align": "middle"}, "align"),
                       ({"page_size": "B7"}, "page_size"), ({"color": "black"}, "#rrggbb"),
                       ({"font": "comic"}, "font"), ({"margins": 400}, "margins")]:
        with pytest.raises(ValueError, match=match):
            RenderConfig(**bad)
    with pytest.raises(ValueError, match="unknown render option"):
        RenderConfig.from_dict({"fontsize": 9})


def test_char_accuracy():
    assert char_accuracy("hello  world\n", "hello world") == 1.0
    assert char_accuracy("hallo world", "hello world") == pytest.approx(1 - 1 / 11)
    assert char_accuracy("x" * 50, "abc") == 0.0 and char_accuracy("", "") == 1.0


def test_ocr_round_trip_on_a_legible_preset():
    pytest.importorskip("rapidocr_onnxruntime")
    text = "Long documents become page images.\nEach page costs tokens for its pixels.\nMany words per page compress."
    pages = render_text(text, preset("large-print"))
    assert legibility(text, [p.image for p in pages], "rapidocr") >= 0.95


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr is not installed")
def test_tesseract_reads_small_print_better_at_higher_dpi():
    text = ("Every page shown as an image costs tokens in proportion to its pixels, "
            "so small print compresses the context. ") * 6
    acc = {dpi: legibility(text, [p.image for p in render_text(text, preset("glyph-default", dpi=dpi))], "tesseract")
           for dpi in (72, 120)}
    assert acc[120] >= 0.97 and acc[72] >= 0.8


def test_missing_ocr_engine_is_named(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_rapidocr(name, *args, **kwargs):
        if name.startswith("rapidocr"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(shutil, "which", lambda _: None)
    monkeypatch.setattr(builtins, "__import__", no_rapidocr)
    with pytest.raises(OcrUnavailable, match="tesseract-ocr.*mmlong\\[ocr\\]"):
        engine("auto")
    with pytest.raises(OcrUnavailable, match="apt-get install tesseract-ocr"):
        engine("tesseract")


def test_token_budget_applies_to_rendered_pages():
    pages = render_text(TEXT, preset("large-print"), budget=tk.PixelBudget(3136, 256 * 784))
    assert all(p.tokens == tk.image_tokens(p.height, p.width, tk.PixelBudget(3136, 256 * 784)) <= 256 for p in pages)


def test_control_characters_and_empty_texts(tmp_path):
    from mmlong.render.run import render

    (tmp_path / "nul.txt").write_text("First part of the text.\x00 Second part after a NUL byte.\n" * 20)
    (tmp_path / "empty.txt").write_text(" \n\x00\n")
    report = render([str(tmp_path / "nul.txt"), str(tmp_path / "empty.txt")], tmp_path / "out", workers=1, progress=False)
    (done,) = report.documents
    assert 0.5 < done.ratio < 6  # the whole text rendered: not a page cut at the NUL
    assert "no text to render" in report.failed[str(tmp_path / "empty.txt")]
