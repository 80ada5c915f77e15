"""Shared fixtures: generated PDFs, the real HF Qwen2.5-VL processor and qwen-vl-utils."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pymupdf
import pytest
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
SHARED_DOC = ROOT.parent / "shared" / "benchmarks" / "mmlongbench-doc"

LOREM = (
    "The committee reviewed the annual figures and found that revenue grew by twelve percent while costs "
    "stayed flat. Members asked for a breakdown by region before the next meeting."
)


def completion(content: str) -> bytes:
    """The body of an OpenAI chat completion whose reply is `content`."""
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()


class ChatServer(ThreadingHTTPServer):
    """An OpenAI-compatible server on loopback: each POST takes the next step of `script`
    (status, headers, body, delay), else `respond(request body)` gives one. It records what
    it received and the most requests it had in flight at once."""

    def __init__(self, script=(), respond=None):
        self.script, self.respond, self.received = list(script), respond, []
        self.active = self.peak = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ChatHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


class _ChatHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        srv = self.server
        with srv.lock:
            srv.active += 1
            srv.peak = max(srv.peak, srv.active)
        try:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            srv.received.append((self.path, self.headers.get("Authorization"), body))
            with srv.lock:
                step = srv.script.pop(0) if srv.script else None
            status, headers, payload, delay = step if step is not None else srv.respond(body)
            time.sleep(delay)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            try:
                self.wfile.write(payload)
            except BrokenPipeError:  # the client gave up (timeout)
                pass
        finally:
            with srv.lock:
                srv.active -= 1


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=f"needs {SHARED_DOC} (absent)")
    for item in items:
        if "shared" in item.keywords and not SHARED_DOC.is_dir():
            item.add_marker(skip)


def png_bytes(width: int, height: int, color=(200, 60, 60), label: str = "") -> bytes:
    img = Image.new("RGB", (width, height), color)
    if label:
        ImageDraw.Draw(img).text((10, 10), label, fill="white")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def write_pdf(path: Path, pages: list[str], toc=None, labels=None, images=None, size=(595, 842)) -> Path:
    """A PDF with one text block per page; `images` maps page index -> list of rects."""
    doc = pymupdf.open()
    for i, text in enumerate(pages):
        page = doc.new_page(width=size[0], height=size[1])
        page.insert_textbox(pymupdf.Rect(50, 50, size[0] - 50, 250), text, fontsize=11)
        for j, rect in enumerate((images or {}).get(i, [])):
            page.insert_image(pymupdf.Rect(rect), stream=png_bytes(300, 200, label=f"img {i}.{j}"))
    if toc:
        doc.set_toc(toc)
    if labels:
        doc.set_page_labels(labels)
    doc.save(path)
    return path


def two_column_pdf(path: Path, left: list[str], right: list[str], title: str) -> Path:
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_textbox(pymupdf.Rect(50, 40, 545, 80), title, fontsize=16)
    for k, text in enumerate(left):
        page.insert_textbox(pymupdf.Rect(50, 100 + 150 * k, 285, 230 + 150 * k), text, fontsize=10)
    for k, text in enumerate(right):
        page.insert_textbox(pymupdf.Rect(310, 100 + 150 * k, 545, 230 + 150 * k), text, fontsize=10)
    doc.save(path)
    return path


@pytest.fixture
def pdf_dir(tmp_path: Path) -> Path:
    """A folder of good PDFs: a 3-page report with outline and page labels, a 1-page note."""
    d = tmp_path / "pdfs"
    d.mkdir()
    write_pdf(
        d / "report.pdf",
        [f"Page {i + 1}. {LOREM}" for i in range(3)],
        toc=[[1, "Introduction", 1], [1, "Results", 2], [2, "Tables", 3]],
        labels=[{"startpage": 0, "prefix": "", "style": "r", "firstpagenum": 1},
                {"startpage": 1, "prefix": "A-", "style": "D", "firstpagenum": 1}],
    )
    write_pdf(d / "note.pdf", ["A single page note about ingest."])
    return d


@pytest.fixture
def bad_dir(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Bad inputs: name -> (path, words its failure reason must contain)."""
    d = tmp_path / "bad"
    d.mkdir()
    good = write_pdf(tmp_path / "good.pdf", [f"Page {i}. {LOREM}" for i in range(4)])
    (d / "empty.pdf").write_bytes(b"")
    (d / "notes.pdf").write_text("just some text, not a pdf\n")
    (d / "garbage.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 20)
    data = good.read_bytes()
    (d / "truncated.pdf").write_bytes(data[: len(data) // 2])
    (d / "nopages.pdf").write_bytes(
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )
    doc = pymupdf.open(good)
    doc.save(d / "encrypted.pdf", encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="secret", owner_pw="owner")
    expected = {  # a regular expression the reason must match
        "empty.pdf": "^empty file",
        "notes.pdf": "^not a PDF",
        "garbage.pdf": "^corrupt PDF: .+",
        "truncated.pdf": "^(corrupt PDF: .+|no pages)",  # MuPDF's repair decides which
        "nopages.pdf": "^no pages",
        "encrypted.pdf": "^encrypted PDF: a password is required",
    }
    return {name: (d / name, reason) for name, reason in expected.items()}


@pytest.fixture(scope="session")
def qwen_vl_utils():
    """The real qwen_vl_utils module. It imports torchvision at module level, which has no CPU
    build here; its image functions (smart_resize, smart_nframes, fetch_image,
    process_vision_info on images) never touch it, so a module that fails on any use stands in
    when torchvision cannot be imported."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]

        class _Unavailable(types.ModuleType):
            def __getattr__(self, name):
                raise AttributeError(f"torchvision is not installed ({self.__name__}.{name})")

        transforms = _Unavailable("torchvision.transforms")
        transforms.InterpolationMode = types.SimpleNamespace(BICUBIC="bicubic")
        tv = _Unavailable("torchvision")
        tv.__version__, tv.io, tv.transforms = "0.0.0", _Unavailable("torchvision.io"), transforms
        stand_ins = {"torchvision": tv, "torchvision.io": tv.io, "torchvision.transforms": transforms}
        sys.modules.update(stand_ins)
        try:
            import qwen_vl_utils.vision_process as vp
        finally:  # only qwen-vl-utils sees the stand-in; transformers still finds no torchvision
            for name in stand_ins:
                sys.modules.pop(name, None)
        return vp
    import qwen_vl_utils.vision_process as vp

    return vp


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    """A tiny Qwen2.5-VL over the real Qwen vocabulary (random weights, seed 0), saved with
    save_pretrained and loaded back through the real loading code, in eval mode."""
    from mmlong.train.model import ModelSettings, build_model, tiny_config

    path = tmp_path_factory.mktemp("tiny") / "qwen25vl-tiny"
    build_model(ModelSettings(config=tiny_config())).save_pretrained(path)
    return build_model(ModelSettings(path=str(path))).eval()


@pytest.fixture(scope="session")
def hf_tokenizer():
    from transformers import AutoTokenizer

    from mmlong.tokens import _default_tokenizer_dir

    return AutoTokenizer.from_pretrained(str(_default_tokenizer_dir()))


@pytest.fixture(scope="session")
def hf_processor(hf_tokenizer):
    """The real HF Qwen2.5-VL processor (PIL image backend) with the Qwen2.5-VL chat template.
    Its video processor needs torchvision, so this one handles text and images only."""
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from mmlong.messages import TEMPLATE_FILE

    class ImageTextProcessor(Qwen2_5_VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template)

    def make(min_pixels: int = 3136, max_pixels: int = 12845056):
        ip = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
        return ImageTextProcessor(ip, hf_tokenizer, chat_template=TEMPLATE_FILE.read_text())

    return make


BITS = 12
SCENES = [(200, 40, 40), (40, 160, 60), (40, 60, 200), (220, 200, 40)]


def make_video(path, seconds: float, fps: int = 10, size=(320, 180), scene_seconds: float | None = None,
               pts_step: int = 1, codec: str = "libx264"):
    """An x264 video whose every frame shows its index as BITS binary squares, in scenes of solid colour.
    `pts_step` > 1 leaves gaps between frame timestamps: an AVI stores them as null frames."""
    import av
    import numpy as np

    w, h = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(fps * 5)} if codec == "libx264" else {"qscale": "2"}
        for i in range(int(seconds * fps)):
            scene = int(i / fps // scene_seconds) if scene_seconds else 0
            img = np.full((h, w, 3), SCENES[scene % len(SCENES)], np.uint8)
            side = w // (BITS + 4)
            for b in range(BITS):
                x = side // 2 + b * (side + 2)
                img[side // 2 : side // 2 + side, x : x + side] = 255 if (i >> b) & 1 else 0
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i * pts_step
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


SECTIONS = [(1, "Introduction", 1), (1, "Method", 4), (2, "Data collection", 5), (1, "Results", 8), (1, "Discussion", 11)]
CAPTIONS = {2: "Figure 1: Pages ingested per quarter.", 6: "Figure 2: Token counts by document type.",
            9: "Table 1: Accuracy at four lengths.", 10: "Figure 3: Retrieval heads by layer."}


def sentence(page: int, k: int) -> str:
    return (f"On page {page} the committee recorded observation number {k} about the "
            f"{['north', 'south', 'east', 'west'][k % 4]} archive and its {page * 7 + k} boxes.")


def make_report(path):
    doc = pymupdf.open()
    for p in range(1, 13):
        page = doc.new_page(width=595, height=842)
        body = " ".join(sentence(p, k) for k in range(3))
        page.insert_textbox(pymupdf.Rect(50, 60, 545, 220), body, fontsize=10)
        if p in CAPTIONS:
            page.insert_image(pymupdf.Rect(150, 260, 450, 460), stream=png_bytes(300, 200))
            page.insert_textbox(pymupdf.Rect(150, 470, 450, 500), CAPTIONS[p], fontsize=9)
    doc.set_toc([list(s) for s in SECTIONS])
    doc.set_page_labels([{"startpage": 0, "prefix": "", "style": "r", "firstpagenum": 1},
                         {"startpage": 2, "prefix": "", "style": "D", "firstpagenum": 1}])
    doc.save(path)
    return path


@pytest.fixture(scope="session")
def report_dataset(tmp_path_factory):
    """A 12-page report (outline, captions, figures, page labels) ingested with pdf-budget."""
    from mmlong.ingest import ingest

    d = tmp_path_factory.mktemp("synth")
    make_report(d / "report.pdf")
    ingest([str(d / "report.pdf")], d / "ds", preset="pdf-budget", workers=1, progress=False)
    return d / "ds"


@pytest.fixture(scope="session")
def report_doc(report_dataset):
    from mmlong import store

    return next(iter(store.iter_documents(report_dataset, images=False)))


@pytest.fixture(scope="session")
def page_samples(tmp_path_factory):
    """Three samples over one-to-three-page PDFs rendered at 10 dpi (pages of a few tokens each)."""
    from mmlong import store
    from mmlong.ingest import IngestOptions, ingest
    from mmlong.ingest.pdf import PdfOptions
    from mmlong.samples import QA, Segment, build_sample

    d = tmp_path_factory.mktemp("collate")
    for k, pages in enumerate([2, 3, 1]):
        write_pdf(d / f"d{k}.pdf", [f"Doc {k} page {p}. Short text." for p in range(pages)])
    opts = IngestOptions(pdf=PdfOptions(dpi=10, min_pixels=None))  # pages of ~83x117 px: a few tokens each
    ingest([str(d)], d / "ds", options=opts, workers=1, progress=False)
    out = []
    for doc in store.iter_documents(d / "ds", images=False):
        qa = QA("Which page says Short text?", 1, "Int", [1], "extract-single", "test", "Short text")
        out.append(build_sample(doc, qa, str(d / "ds"), "test", Segment(0, doc.num_pages)))
    return out
