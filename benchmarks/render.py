"""Rendering speed, compression and legibility of the Glyph presets on English prose.

    python benchmarks/render.py [--text FILE] [--ocr auto]

Prints pages/s on one core for glyph-default (target >= 50 A4 pages/s), the compression ratio
(Qwen text tokens / Qwen2.5-VL vision tokens; target >= 3.3x, the ratio Glyph reports on
LongBench) and OCR character accuracy at 72, 96 and 120 dpi. The prose: --text, else the
Pew Research reports of ../shared/benchmarks/mmlongbench-doc (their text layer, paragraphs of
200+ characters), else Debian's /usr/share/common-licenses/GPL-3.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mmlong.presets import load_preset
from mmlong.render.glyph import RenderConfig, compression, render_text

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "benchmarks" / "mmlongbench-doc" / "documents"
PEW = ["PG_2021.03.04_US-Views-on-China_FINAL.pdf", "PIP_Seniors-and-Tech-Use_040314.pdf",
       "05-03-18-political-release.pdf", "PP_2019.01.17_Trump-economy_FINAL2.pdf"]


def prose(path: Path | None) -> tuple[str, str]:
    if path:
        return path.read_text(encoding="utf-8"), str(path)
    if all((SHARED / f).is_file() for f in PEW):
        import pymupdf

        paragraphs = []
        for f in PEW:
            with pymupdf.open(SHARED / f) as doc:
                paragraphs += [" ".join(b[4].split()) for page in doc for b in page.get_text("blocks")
                               if b[6] == 0 and len(b[4]) > 200]
        return "\n\n".join(paragraphs), "Pew Research reports (MMLongBench-Doc)"
    return Path("/usr/share/common-licenses/GPL-3").read_text(), "GPL-3"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", type=Path)
    ap.add_argument("--ocr", default="auto", help="OCR engine for legibility (auto, tesseract, rapidocr; 'none' to skip)")
    ap.add_argument("--ocr-chars", type=int, default=6000, help="characters OCRed per dpi")
    args = ap.parse_args()
    text, name = prose(args.text)
    print(f"prose: {name}, {len(text):,} characters")
    print(f"{'preset':14} {'dpi':>4} {'pages':>6} {'pages/s':>8} {'compression':>12} {'OCR accuracy':>13}")
    for preset in ["glyph-default", "glyph-96dpi", "glyph-120dpi"]:
        cfg = RenderConfig.from_dict({**load_preset("render", preset), "format": "prose"})
        render_text(text[:3000], cfg)  # warm caches
        start = time.perf_counter()
        pages = render_text(text, cfg)
        rate = len(pages) / (time.perf_counter() - start)
        ratio = compression(text, pages).ratio
        acc = "-"
        if args.ocr != "none":
            from mmlong.render.ocr import legibility

            sample = text[: args.ocr_chars]
            acc = f"{legibility(sample, [p.image for p in render_text(sample, cfg)], args.ocr):.3f}"
        target = "  (targets: >= 50 pages/s, >= 3.3x)" if preset == "glyph-default" else ""
        print(f"{preset:14} {cfg.dpi:>4g} {len(pages):>6} {rate:>8.1f} {ratio:>11.2f}x {acc:>13}{target}")


if __name__ == "__main__":
    main()
