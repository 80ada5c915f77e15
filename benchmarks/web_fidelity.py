"""Webpage fidelity on a generated documentation site: image recall and text duplication of
mmlong's interleaved ingest against trafilatura's own XML extraction (what mmlong used before).

    python benchmarks/web_fidelity.py [--pages 40] [--handbook examples/debian-handbook]

The site has what real manuals have: figures inside list items, table cells and <figure>s,
nested lists, headings, code blocks, a navigation bar and "Next / Previous / Up" lines on
every page. Prints, for both extractions: the share of content images that reach the output
(target >= 95%), headings kept, and the share of text tokens that are duplicates (a parent
list item repeating its nested list). With --handbook, the same figures on real pages.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_site(root: Path, pages: int, seed: int = 0) -> tuple[int, int]:
    """Write the site; returns (content images, headings) it holds."""
    from PIL import Image

    rng = random.Random(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    images = headings = 0
    words = "crane cable hook lid winch boom pulley brake lever motor gear rope drum mast jib".split()
    for p in range(pages):
        body = [f"<h1>Chapter {p}</h1>"]
        headings += 1
        for s in range(rng.randint(2, 4)):
            body.append(f"<h2>Section {p}.{s}</h2>")
            headings += 1
            body.append("<p>" + " ".join(rng.choice(words) for _ in range(40)) + ".</p>")
            items = []
            for i in range(rng.randint(2, 5)):
                name = f"p{p}s{s}i{i}.png"
                Image.new("RGB", (64 + i, 48), (30 * i % 255, 100, 200)).save(root / "img" / name)
                nested = "<ul>" + "".join(f"<li>{rng.choice(words)} detail {k} of step {i}</li>" for k in range(2)) + "</ul>"
                items.append(f"<li>Step {i}: fit the {rng.choice(words)}. <img src='img/{name}' alt='step {i}'>{nested}</li>")
                images += 1
            body.append("<ol>" + "".join(items) + "</ol>")
            name = f"p{p}s{s}t.png"
            Image.new("RGB", (70, 50), (200, 60, 60)).save(root / "img" / name)
            body.append(f"<table><tr><th>Part</th><th>View</th></tr><tr><td>{rng.choice(words)}</td>"
                        f"<td><img src='img/{name}' alt='part'></td></tr></table>")
            images += 1
            name = f"p{p}s{s}f.png"
            Image.new("RGB", (90, 60), (60, 200, 60)).save(root / "img" / name)
            body.append(f"<figure><img src='img/{name}' alt='figure'><figcaption>Figure {p}.{s}</figcaption></figure>")
            images += 1
            body.append("<pre>crane --start\ncrane --lift 20</pre>")
        nav = f"<div class='navheader'>Next: page{p + 1} / Previous: page{p - 1} / Up: index</div>"
        (root / f"page{p}.html").write_text(f"<html><head><title>Manual {p}</title></head><body>{nav}<nav>Home | Index</nav>"
                                            f"<div class='section'>{''.join(body)}</div>{nav}</body></html>")
    return images, headings


def trafilatura_counts(paths: list[Path]) -> tuple[int, int, list[list[str]]]:
    """Images, headings and text blocks in trafilatura's XML extraction (images included)."""
    import trafilatura
    from lxml import etree

    images = heads = 0
    pages: list[list[str]] = []
    for path in paths:
        xml = trafilatura.extract(path.read_text(), output_format="xml", include_images=True, include_tables=True,
                                  favor_recall=True, deduplicate=False)
        if not xml:
            continue
        root = etree.fromstring(xml.encode())
        images += len(root.findall(".//graphic"))
        heads += len(root.findall(".//head"))
        pages.append([t for el in root.iter("p", "item", "head", "cell", "code") if (t := " ".join("".join(el.itertext()).split()))])
    return images, heads, pages


def duplication(pages: list[list[str]]) -> float:
    """Share of text tokens in blocks that a longer block of the same page contains (a parent
    list item repeating its nested list)."""
    from mmlong import tokens as tk

    total = dup = 0
    for texts in pages:
        total += sum(tk.text_tokens(t) for t in texts)
        dup += sum(tk.text_tokens(t) for t in texts if len(t) >= 12 and any(len(o) > len(t) and t in o for o in texts))
    return dup / max(total, 1)


def mmlong_counts(root: Path, out: Path) -> tuple[int, int, list[list[str]]]:
    from mmlong import store
    from mmlong.ingest import ingest

    ingest([str(root)], out, preset="web-interleaved", workers=1, progress=False)
    images = heads = 0
    pages: list[list[str]] = []
    for doc in store.iter_documents(out, images=False):
        pages.append([])
        for it in doc.items:
            images += it.kind == "figure"
            if it.kind == "text" and (it.meta or {}).get("tag") != "figcaption":
                heads += bool((it.meta or {}).get("level"))
                pages[-1].append(" ".join(it.text.split()))
    return images, heads, pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--handbook", type=Path, default=ROOT / "examples" / "debian-handbook")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        want_images, want_heads = make_site(site, args.pages)
        t_images, t_heads, t_texts = trafilatura_counts(sorted(site.glob("*.html")))
        m_images, m_heads, m_texts = mmlong_counts(site, Path(tmp) / "ds")
        print(f"generated site: {args.pages} pages, {want_images} content images, {want_heads} headings")
        print(f"{'':<24}{'trafilatura XML':>16}{'mmlong':>10}")
        print(f"{'image recall':<24}{t_images / want_images:>16.3f}{m_images / want_images:>10.3f}   (target >= 0.95)")
        print(f"{'headings kept':<24}{t_heads / want_heads:>16.3f}{m_heads / want_heads:>10.3f}")
        print(f"{'duplicated text tokens':<24}{duplication(t_texts):>16.3f}{duplication(m_texts):>10.3f}")
        if args.handbook.is_dir():
            from selectolax.lexbor import LexborHTMLParser

            pages = sorted(args.handbook.glob("*.html"))
            refs = sum(len(LexborHTMLParser(p.read_text()).css("div.section img")) for p in pages)
            t_images, t_heads, t_texts = trafilatura_counts(pages)
            m_images, m_heads, m_texts = mmlong_counts(args.handbook, Path(tmp) / "hb")
            print(f"{args.handbook.name}: {len(pages)} pages, {refs} images in the content")
            print(f"{'image recall':<24}{t_images / max(refs, 1):>16.3f}{m_images / max(refs, 1):>10.3f}")
            print(f"{'headings':<24}{t_heads:>16}{m_heads:>10}")
            print(f"{'duplicated text tokens':<24}{duplication(t_texts):>16.3f}{duplication(m_texts):>10.3f}")


if __name__ == "__main__":
    main()
