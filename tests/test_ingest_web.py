"""Webpage ingest: interleaved main content, images resolved safely, no request leaves without
--allow-network, bad pages reported; screenshots when Playwright and Chromium are installed."""

from __future__ import annotations

import base64
import io
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from mmlong import store
from mmlong.cli import main
from mmlong.ingest import IngestOptions, ingest
from mmlong.ingest.web import HtmlOptions
from mmlong.schema import FIGURE, PAGE_IMAGE, TEXT
from tests.conftest import png_bytes


class Recorder(ThreadingHTTPServer):
    def __init__(self):
        self.paths: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.paths.append(self.path)
        if self.path == "/news/page.html":
            body = (b"<html><head><title>News</title></head><body><article><h1>Port news</h1><p>The ferry to the island "
                    b"leaves every morning at seven, weather permitting, from the north pier.</p>"
                    b"<img src='pics/ferry.png' alt='ferry'></article></body></html>")
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        body = png_bytes(40, 30, (0, 200, 0)) if self.path.endswith(".png") else b"/* nothing */"
        self.send_response(200)
        self.send_header("Content-Type", "image/png" if self.path.endswith(".png") else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = Recorder()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def site(tmp_path, port: int):
    root = tmp_path / "site"
    (root / "img").mkdir(parents=True)
    (root / "img" / "boat.png").write_bytes(png_bytes(120, 80, (200, 40, 40)))
    (tmp_path / "secret.png").write_bytes(png_bytes(50, 50))
    inline = base64.b64encode(png_bytes(32, 32, (10, 10, 200))).decode()
    (root / "index.html").write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>Harbours</title>
<script>document.write("SCRIPT TEXT")</script><style>p {{color: red}}</style>
<link rel="stylesheet" href="http://127.0.0.1:{port}/style.css"><script src="http://127.0.0.1:{port}/app.js"></script></head>
<body><nav><a href="/">Home</a> | <a href="/about">About</a></nav>
<article><h1>Harbours of the North</h1>
<p>The first paragraph talks about ships and harbours in the north, with many details about the fleet.</p>
<figure><img src="img/boat.png" alt="A red boat"><figcaption>Figure 1: A red boat in the harbour.</figcaption></figure>
<p>The second paragraph continues after the figure and explains the tides, the ferries and the weather.</p>
<table><tr><th>Port</th><th>Ships</th></tr><tr><td>Oslo</td><td>12</td></tr><tr><td>Bergen</td><td>7</td></tr></table>
<ul><li>First item of a list about the ports</li><li>Second item of a list about the ports</li></ul>
<p>Inline picture: <img src="data:image/png;base64,{inline}" alt="blue square"> and more text after it here.</p>
<img src="img/missing.png" alt="gone"><img src="../secret.png"><img src="http://127.0.0.1:{port}/remote.png">
<p>The last paragraph closes the article about the harbours of the north and their history.</p>
</article><footer>Copyright 2026 the harbour society</footer></body></html>""")
    return root


def test_interleaved_main_content_and_safe_images(tmp_path, server):
    root = site(tmp_path, server.server_address[1])
    report = ingest([str(root)], tmp_path / "ds", workers=1, progress=False)
    assert report.ok and report.webpages == 1
    doc = next(iter(store.iter_documents(tmp_path / "ds")))
    assert doc.kind == "html" and doc.metadata["title"] == "Harbours"
    texts = [it.text for it in doc.items if it.kind == TEXT]
    assert texts[0] == "Harbours of the North" and texts[1].startswith("The first paragraph")
    assert "Port | Ships\nOslo | 12\nBergen | 7" in texts
    assert "First item of a list about the ports" in texts and texts[-1].startswith("The last paragraph")
    joined = " ".join(texts)
    assert "Home" not in joined and "SCRIPT TEXT" not in joined and "Copyright" not in joined and "color" not in joined
    figures = [it for it in doc.items if it.kind == FIGURE]
    boat = figures[0]
    assert (boat.width, boat.height) == (120, 80) and boat.meta["alt"] == "A red boat"
    assert boat.meta["caption"] == "Figure 1: A red boat in the harbour."
    kinds = [(it.kind, (it.text or "")[:9]) for it in doc.items]
    i = kinds.index((FIGURE, ""))
    assert kinds[i + 1] == (TEXT, "Figure 1:") and kinds[i - 1][1] == "The first"  # DOM order, caption after its image
    assert any(f.meta.get("alt") == "blue square" and f.meta["src"] == "data:" for f in figures)  # the data: URI image
    warnings = " ".join(doc.metadata["warnings"])
    assert "missing image img/missing.png" in warnings and "outside the page's folder: ../secret.png" in warnings
    assert "not fetched (network off)" in warnings
    assert len(figures) == 2 and server.paths == []  # nothing left the machine


def test_allow_network_fetches_remote_images(tmp_path, server):
    root = site(tmp_path, server.server_address[1])
    assert main(["ingest", str(root / "index.html"), "--out", str(tmp_path / "ds"), "--allow-network", "--workers", "1",
                 "--no-progress"]) == 0
    doc = next(iter(store.iter_documents(tmp_path / "ds")))
    assert server.paths == ["/remote.png"] and any("remote.png" in (f.meta or {}).get("src", "") for f in doc.items)


def test_bad_pages(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "latin1.html").write_bytes("<html><body><p>Un caf\xe9 au bord du port, pr\xe8s des bateaux de p\xeache.</p></body></html>".encode("latin-1"))
    (d / "lying.html").write_bytes(b'<html><head><meta charset="utf-8"></head><body><p>Caf\xe9 and cr\xe8me '
                                   b'br\xfbl\xe9e by the harbour, a long sentence to read.</p></body></html>')
    (d / "empty.html").write_bytes(b"")
    (d / "binary.html").write_bytes(b"\x00\x01\x02" * 100)
    (d / "nested.html").write_text("<html><body>" + "<div>" * 50000 + "<p>deep text at the bottom</p>" + "</div>" * 50000 + "</body></html>")
    (d / "big.html").write_text("<html><body><p>" + "x " * 600_000 + "</p></body></html>")
    opts = IngestOptions(html=HtmlOptions(max_bytes=1_000_000))
    report = ingest([str(d)], tmp_path / "ds", options=opts, workers=1, progress=False)
    assert report.failed[str(d / "empty.html")] == "empty file (0 bytes)"
    assert report.failed[str(d / "binary.html")] == "not an HTML page (binary content)"
    assert report.failed[str(d / "big.html")].startswith("page too large (1.2 MB > 1 MB)")
    docs = {doc.source.rsplit("/", 1)[-1]: doc for doc in store.iter_documents(tmp_path / "ds", images=False)}
    assert "café au bord du port, près des bateaux de pêche" in docs["latin1.html"].items[0].text
    assert any("does not decode" in w for w in docs["lying.html"].metadata["warnings"])
    assert "crème brûlée" in docs["lying.html"].items[0].text
    nested = str(d / "nested.html")
    assert nested in report.failed or any("deep text" in (it.text or "") for it in docs["nested.html"].items)


def test_whole_body_mode(tmp_path, server):
    root = site(tmp_path, server.server_address[1])
    opts = IngestOptions(html=HtmlOptions(main_content=False))
    ingest([str(root)], tmp_path / "ds", options=opts, workers=1, progress=False)
    texts = [it.text for it in next(iter(store.iter_documents(tmp_path / "ds"))).items if it.kind == TEXT]
    assert texts[0] == "Harbours of the North" and "Home | About" not in " ".join(texts)
    assert sum("paragraph" in t for t in texts) == 3


def _screenshots_possible() -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return any(shutil.which(n) for n in ("chromium-headless-shell", "chromium"))


@pytest.mark.skipif(not _screenshots_possible(), reason="needs playwright and Chromium (mmlong[web], chromium-headless-shell)")
def test_screenshots_block_everything_outside_the_page(tmp_path, server):
    root = site(tmp_path, server.server_address[1])
    page = root / "index.html"
    (root / ".ssh").mkdir()
    (root / ".ssh" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----")
    (root / "notes.txt").write_text("a sibling text file")
    page.write_text(page.read_text().replace("</article>", '<iframe src="file:///etc/hostname"></iframe>'
                                             '<iframe src=".ssh/id_rsa"></iframe><object data="notes.txt"></object>'
                                             '<embed src="notes.txt"></article>'))
    opts = IngestOptions(html=HtmlOptions(mode="screenshot", tile_pixels=1280 * 700))
    report = ingest([str(page)], tmp_path / "ds", options=opts, workers=1, progress=False)
    assert report.ok, report.failed
    doc = next(iter(store.iter_documents(tmp_path / "ds")))
    tiles = [it for it in doc.items if it.kind == PAGE_IMAGE]
    assert tiles and all(t.width == 1280 and t.width * t.height <= 1280 * 700 for t in tiles)
    assert sum(t.height for t in tiles) == doc.metadata["screenshot"][1]
    blocked = " ".join(doc.metadata["blocked"])
    assert "file:///etc/hostname" in blocked and f"127.0.0.1:{server.server_address[1]}" in blocked
    assert ".ssh/id_rsa" in blocked and "notes.txt" in blocked  # files of the page's own folder a page does not need
    assert server.paths == []  # no request reached the server
    boat = Image.open(io.BytesIO(tiles[0].image)).convert("RGB")
    assert any(boat.getpixel((x, y))[0] > 180 and boat.getpixel((x, y))[1] < 80
               for x in range(0, 1280, 8) for y in range(0, boat.height, 8))  # the local image rendered
    allowed = IngestOptions(html=HtmlOptions(mode="screenshot", allow_network=True))
    assert ingest([str(page)], tmp_path / "net", options=allowed, workers=1, progress=False).ok
    assert "/remote.png" in server.paths


def test_urls_need_allow_network(tmp_path, server):
    url = f"http://127.0.0.1:{server.server_address[1]}/news/page.html"
    report = ingest([url], tmp_path / "off", workers=1, progress=False)
    assert report.failed == {url: "a URL needs --allow-network (network access is off)"} and server.paths == []
    assert main(["ingest", url, "--out", str(tmp_path / "on"), "--allow-network", "--workers", "1", "--no-progress"]) == 0
    doc = next(iter(store.iter_documents(tmp_path / "on")))
    assert doc.source == url and doc.metadata["title"] == "News"
    assert [it.kind for it in doc.items] == [TEXT, TEXT, FIGURE] and doc.items[2].meta["alt"] == "ferry"
    assert server.paths == ["/news/page.html", "/news/pics/ferry.png"]  # the image resolved against the URL
    assert not (tmp_path / "on" / "failures.json").exists()  # written only when something failed


def doc_site(root, pages: int = 3):
    """A documentation-style site: a navigation bar and Prev/Next lines, headings, figures inside
    list items and table cells, nested lists, a code block, a transparent line drawing."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "img").mkdir(exist_ok=True)
    art = Image.new("RGBA", (60, 40), (0, 0, 0, 0))
    for x in range(60):
        art.putpixel((x, 20), (0, 0, 0, 255))  # black line art on a transparent background
    art.save(root / "img" / "line.png")
    for p in range(pages):
        for k in range(3):
            (root / "img" / f"p{p}-{k}.png").write_bytes(png_bytes(80, 60, (40 * k, 90, 200), label=f"{p}.{k}"))
        (root / f"page{p}.html").write_text(f"""<html><head><title>Manual {p}</title></head><body>
<div class="navheader">Next: page{p + 1} / Previous: page{p - 1} / Up: index</div>
<nav><a href="index.html"><img src="img/line.png" alt="logo">Home</a> | <a href="x.html">About</a></nav>
<div id="content"><h1>Chapter {p}</h1><p>This chapter explains the configuration of the harbour crane number {p} in detail.</p>
<h2>Parts</h2><ol><li>Open the lid. <img src="img/p{p}-0.png" alt="lid {p}"></li>
<li>Check the cables:<ul><li>the red cable of crane {p}</li><li>the blue cable of crane {p}</li></ul></li></ol>
<table><tr><th>Part</th><th>Picture</th></tr><tr><td>Hook {p}</td><td><img src="img/p{p}-1.png" alt="hook"></td></tr></table>
<figure><img src="img/p{p}-2.png" alt="overview"><figcaption>Figure {p}.1: The crane from above.</figcaption></figure>
<pre>crane --start
crane --lift 20</pre><p><img src="img/line.png" alt="a line"></p></div>
<div class="navfooter">Next: page{p + 1} / Previous: page{p - 1} / Up: index</div></body></html>""")
    return root


def test_documentation_site_keeps_figures_headings_and_each_text_once(tmp_path):
    root = doc_site(tmp_path / "site")
    ingest([str(root)], tmp_path / "ds", preset="web-interleaved", workers=1, progress=False)
    docs = sorted(store.iter_documents(tmp_path / "ds"), key=lambda d: d.source)
    assert len(docs) == 3
    for p, doc in enumerate(docs):
        figures = [it for it in doc.items if it.kind == FIGURE]
        assert [f.meta["alt"] for f in figures] == [f"lid {p}", "hook", "overview", "a line"]  # in lists and tables too
        assert figures[2].meta["caption"] == f"Figure {p}.1: The crane from above."
        texts = [it for it in doc.items if it.kind == TEXT]
        heads = [(it.text, it.meta["level"]) for it in texts if it.meta.get("level")]
        assert heads == [(f"Chapter {p}", 1), ("Parts", 2)]
        joined = "\n".join(it.text for it in texts)
        assert joined.count(f"the red cable of crane {p}") == 1  # the nested list once
        assert "crane --start\ncrane --lift 20" in joined  # the code block's line breaks
        assert "Next:" not in joined and "Home" not in joined  # navigation is not content
        assert any(w.startswith("1 images outside the main content left out: img/line.png") for w in doc.metadata["warnings"])
        line = Image.open(io.BytesIO(figures[3].image)).convert("RGB")
        assert line.getpixel((5, 5)) == (255, 255, 255) and sum(line.getpixel((5, 20))) < 100  # white ground, black line


def test_screenshot_tiles_leave_no_thin_strip():
    from mmlong.ingest.web import tile_rows

    for width, height in [(1280, 784 * 3 + 3), (1280, 100), (1280, 50000), (900, 1003520 // 900 * 2 + 1)]:
        rows = tile_rows(width, height, 1003520)
        assert rows[0][0] == 0 and rows[-1][1] == height and all(a[1] == b[0] for a, b in zip(rows, rows[1:]))
        heights = [b - t for t, b in rows]
        assert max(heights) - min(heights) <= 1 and all(width * h <= 1003520 for h in heights)
        assert max(width, min(heights)) / min(width, min(heights)) < 200  # the processor accepts every tile
    assert HtmlOptions(mode="screenshot").tile_pixels == 1280 * 28 * 28  # --html-mode screenshot tiles as the preset does


def test_the_sandbox_loads_only_what_a_page_needs(tmp_path):
    from mmlong.ingest.web import _page_needs

    assert _page_needs(tmp_path / "pic.png", "image") and _page_needs(tmp_path / "s.css", "stylesheet")
    assert _page_needs(tmp_path / "frame.html", "document") and _page_needs(tmp_path / "f.woff2", "font")
    for name, kind in [(".ssh/id_rsa", "document"), ("notes.txt", "document"), ("secret.json", "other"),
                       ("key.pem", "image"), ("data.csv", "xhr")]:
        assert not _page_needs(tmp_path / name, kind), name


def test_html_oddities_fail_only_themselves(tmp_path):
    from mmlong.ingest.web import read_html

    (tmp_path / "u16.html").write_bytes(b'<html><head><meta charset="utf-16"></head><body><p>plain ASCII text</p></body></html>')
    text, _ = read_html(tmp_path / "u16.html", HtmlOptions())
    assert "plain ASCII text" in text
    long = "x" * 300 + ".png"
    (tmp_path / "odd.html").write_text(f"<html><body><article><h1>Title</h1><p>{'Some words here. ' * 20}</p>"
                                       f"<img src='{long}'><img src='http://[::1'><img src='ok.png'></article></body></html>")
    (tmp_path / "ok.png").write_bytes(png_bytes(40, 40))
    report = ingest([str(tmp_path / "odd.html")], tmp_path / "ds", preset="web-interleaved", workers=1, progress=False)
    assert report.ok
    doc = next(iter(store.iter_documents(tmp_path / "ds")))
    assert [it.meta["src"] for it in doc.items if it.kind == FIGURE] == ["ok.png"]
    assert len(doc.metadata["warnings"]) == 2


def test_lines_on_most_pages_of_a_site_are_navigation(tmp_path):
    """Prev/Next lines inside the main content, unmarked, naming other pages on every page:
    they stand on most pages of the site, so they are left out (and said so); content that
    only looks alike (a sentence with a link in it) stays."""
    root = tmp_path / "site"
    root.mkdir()
    for p in range(5):
        (root / f"node{p}.html").write_text(f"""<html><body><div id="content">
<p>Next: <a href="node{p + 1}.html">Section {p + 1}</a>, Previous: <a href="node{p - 1}.html">Section {p - 1}</a>,
Up: <a href="index.html">Top</a></p>
<h1>Section {p}</h1><p>Section {p} tells how the pump number {p} is primed before the first start.</p>
<p>The valve of pump {p} is described in <a href="v{p}.html">its own chapter</a>, with drawings.</p>
</div></body></html>""")
    ingest([str(root)], tmp_path / "ds", preset="web-interleaved", workers=1, progress=False)
    docs = list(store.iter_documents(tmp_path / "ds", images=False))
    assert len(docs) == 5
    for doc in docs:
        text = "\n".join(it.text for it in doc.items if it.kind == TEXT)
        assert "Next:" not in text and "is primed before the first start" in text and "its own chapter" in text
        assert any("most pages of the site" in w for w in doc.metadata["warnings"])
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "node1.html").write_text((root / "node1.html").read_text())
    ingest([str(alone)], tmp_path / "one", preset="web-interleaved", workers=1, progress=False)
    doc = next(iter(store.iter_documents(tmp_path / "one", images=False)))
    assert "Next:" in doc.items[0].text  # one page is no site: nothing repeats
