"""Needles: positions and lengths exact, every variant answerable from what was inserted."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from mmlong import store
from mmlong import tokens as tk
from mmlong.cli import main
from mmlong.messages import resolve_images
from mmlong.synthesis.needles import NeedleSpec, build_needle_sample, haystack, insert_needles, needle_dataset
from mmlong.schema import FIGURE, TEXT, VIDEO_FRAME, Document, Item
from mmlong.samples import read_samples
from tests.conftest import png_bytes


def docs(root):
    return list(store.iter_documents(root, images=False))


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_text_needle_is_exact(report_dataset, depth, hf_processor, qwen_vl_utils):
    items = haystack(docs(report_dataset), 8192 - 300)
    assert sum(it.tokens for it in items) <= 8192 - 300
    spec = NeedleSpec("single", "text", depth, 8192)
    sample, doc = build_needle_sample(items, spec, random.Random(1), str(report_dataset), tk.PixelBudget(3136, 1003520))
    assert sample.total_tokens <= 8192 and sample.task == "needle" and sample.kind == "needle-text-single"
    (offset,) = sample.extra["needle_offsets"]
    # the processor's real input: same length, and the needle's tokens where the offset says
    messages = resolve_images(sample.messages, report_dataset)
    images, _ = qwen_vl_utils.process_vision_info(messages)
    proc = hf_processor(3136, 1003520)
    ids = proc(text=[proc.apply_chat_template(messages, tokenize=False)], images=images, return_tensors="np")["input_ids"][0]
    assert len(ids) == sample.total_tokens
    needle = next(it.text for it in doc.items if (it.meta or {}).get("generated"))
    assert tk.load_tokenizer().decode(ids[offset : offset + 40].tolist()).startswith(needle)
    # depth: within one item of the request (items are never cut)
    largest = max(it.tokens for it in items)
    assert abs(offset / sample.total_tokens - depth) <= (largest + 120) / sample.total_tokens
    hay_tokens = sum(it.tokens for it in items)
    assert sample.extra["requested_depth"] == depth and abs(sample.extra["depth"] - depth) <= largest / hay_tokens
    before = sum(it.tokens for it in doc.items[: next(i for i, it in enumerate(doc.items) if (it.meta or {}).get("generated"))])
    assert abs(sample.extra["depth"] - before / hay_tokens) < 0.01  # the depth reached, in haystack tokens
    assert str(sample.answer) in needle


def test_multi_value_answers_follow_the_context_order(report_dataset):
    """Needles that land on one item boundary (a short haystack) keep the answer's order."""
    items = haystack(docs(report_dataset), 6000)[:2]
    for seed in range(10):
        out, qa = insert_needles(items, NeedleSpec("multi-value", "text", 0.9, 8192, count=4), random.Random(seed))
        shown = [int(it.text.rsplit(" ", 1)[1].rstrip(".")) for it in out if (it.meta or {}).get("generated")]
        assert qa.answer == shown


def test_text_variants(report_dataset):
    items = haystack(docs(report_dataset), 6000)
    rng = random.Random(0)
    for variant in ["multi-key", "multi-value", "multi-query", "count", "sum"]:
        out, qa = insert_needles(items, NeedleSpec(variant, "text", 0.2, 8192, count=3), rng)
        needles = [it.text for it in out if (it.meta or {}).get("generated")]
        pairs = [(t.split(" for ")[1].split(" is: ")[0], int(t.rsplit(" ", 1)[1].rstrip("."))) for t in needles]
        keys = [k for k, _ in pairs]
        assert len(out) == len(items) + len(needles)
        if variant == "multi-key":
            assert len(set(keys)) == 3 and qa.answer == pairs[0][1] and keys[0] in qa.question
        elif variant == "multi-value":
            assert len(set(keys)) == 1 and qa.answer == [v for _, v in pairs] and qa.answer_format == "List"
        elif variant == "multi-query":
            assert all(k in qa.question for k in keys) and qa.answer == [v for _, v in pairs]
        elif variant == "count":
            assert len(set(keys)) == 1 and qa.answer == 3 and "How many" in qa.question
        else:
            assert len(needles) == 2 and qa.answer == pairs[0][1] + pairs[1][1] and "sum" in qa.question


def test_image_needles(report_dataset):
    items = haystack(docs(report_dataset), 7000)
    out, qa = insert_needles(items, NeedleSpec("single", "image", 0.5, 8192), random.Random(2), tk.PixelBudget(3136, 1003520))
    (needle,) = [it for it in out if (it.meta or {}).get("generated")]
    assert needle.kind == FIGURE and Image.open(io.BytesIO(needle.image)).size == (336, 224)
    assert needle.tokens == tk.image_tokens(224, 336, tk.PixelBudget(3136, 1003520)) and qa.answer == int(needle.meta["needle"])
    out, qa = insert_needles(items, NeedleSpec("count", "image", 0.1, 8192, count=3), random.Random(2))
    stars = [it for it in out if (it.meta or {}).get("generated")]
    red = Image.open(io.BytesIO(stars[0].image)).convert("RGB").getpixel((168, 112))
    assert len(stars) == 3 and qa.answer == 3 and red[0] > 200 and red[1] < 60


def _video_dataset(root, size=(336, 196)):
    w = store.DatasetWriter(root, {"video": {"fps": 1}})
    fw, fh = size
    frames = [Item(VIDEO_FRAME, image=png_bytes(fw, fh, (i * 9 % 256, 80, 80)), image_format="png", width=fw, height=fh,
                   timestamp=float(i), tokens=tk.image_tokens(fh, fw)) for i in range(40)]
    sink = w.open("video0000", "/data/clip.mp4")
    sink.write(frames)
    w.commit(sink, Document("video0000", "/data/clip.mp4", "video", "0" * 64))
    w.close()
    return root


def test_video_needle_frame(tmp_path):
    root = _video_dataset(tmp_path / "video")
    items = haystack(docs(root), 2000)
    out, qa = insert_needles(items, NeedleSpec("single", "video", 0.5, 2400), random.Random(0))
    pos = next(i for i, it in enumerate(out) if (it.meta or {}).get("generated"))
    needle = out[pos]
    assert (needle.kind, needle.width, needle.height) == (VIDEO_FRAME, 336, 196)
    assert out[pos - 1].timestamp < needle.timestamp < out[pos + 1].timestamp
    assert abs(pos / len(out) - 0.5) < 0.1 and isinstance(qa.answer, int)
    with pytest.raises(ValueError, match="video frames"):
        insert_needles([Item(TEXT, text="x", tokens=1)], NeedleSpec("single", "video"), random.Random(0))


def test_video_needles_sit_between_frame_pairs_never_after_a_timestamp():
    """With time markers before every frame, no needle lands between a marker and its frame,
    and each lands after an even number of frames (a Qwen2.5-VL temporal patch is 2 frames)."""
    items = []
    for i in range(30):
        items.append(Item(TEXT, text=f"<{i}.0 seconds>", timestamp=float(i), tokens=6, meta={"marker": True}))
        items.append(Item(VIDEO_FRAME, image=png_bytes(56, 56), image_format="png", width=56, height=56,
                          timestamp=float(i), tokens=4))
    for depth in [i / 24 for i in range(25)]:
        out, _ = insert_needles(items, NeedleSpec("single", "video", depth, 400), random.Random(0))
        pos = next(i for i, it in enumerate(out) if (it.meta or {}).get("generated"))
        assert pos == 0 or not (out[pos - 1].meta or {}).get("marker")
        assert sum(it.kind == VIDEO_FRAME for it in out[:pos]) % 2 == 0


def test_needle_samples_never_exceed_their_length(tmp_path):
    """Large needle frames (644x364: 299 tokens each) still fit: the haystack gives way."""
    root = _video_dataset(tmp_path / "video", size=(644, 364))
    needle_dataset(str(root), str(tmp_path / "n"), [3000, 5000], [0.0, 1.0], ["count"], modality="video", count=3)
    samples = read_samples(tmp_path / "n" / "samples.parquet")
    assert len(samples) == 4
    for s in samples:
        assert s.extra["target_tokens"] - 700 < s.total_tokens <= s.extra["target_tokens"]
        assert len(s.extra["needle_offsets"]) == 3


def test_webpage_haystack(tmp_path):
    """Ingested HTML sequences (text and figures) take needles like any document."""
    w = store.DatasetWriter(tmp_path / "web", {"html": {}})
    items = [Item(TEXT, text=f"Paragraph {i} of the saved page about harbours and ships.", tokens=12) for i in range(30)]
    items.insert(10, Item(FIGURE, image=png_bytes(56, 56), image_format="png", width=56, height=56, tokens=4))
    sink = w.open("page0001", "/site/index.html")
    sink.write(items)
    w.commit(sink, Document("page0001", "/site/index.html", "html", "1" * 64))
    w.close()
    summary = needle_dataset(str(tmp_path / "web"), str(tmp_path / "n"), [600], [0.5], ["single", "multi-key"], count=2)
    samples = read_samples(tmp_path / "n" / "samples.parquet")
    assert summary["samples"] == 2 and all(s.total_tokens <= 600 for s in samples)
    assert any(c["type"] == "image" and c["image"] == "mmlong://page0001/10" for c in samples[0].messages[0]["content"])


def test_needles_command_grid(report_dataset, tmp_path, capsys):
    code = main(["needles", str(report_dataset), "--out", str(tmp_path / "n"), "--lengths", "4096", "8192", "--depths", "0", "50",
                 "100", "--variants", "single", "multi-query", "--count", "2"])
    assert code == 0 and '"samples": 12' in capsys.readouterr().out
    samples = read_samples(tmp_path / "n" / "samples.parquet")
    for s in samples:
        assert s.total_tokens <= s.extra["target_tokens"]
        assert len(s.extra["needle_offsets"]) == (1 if s.extra["variant"] == "single" else 2)
        assert 0 < s.answer_start < s.answer_end == s.total_tokens - 1


def test_page_crops_put_needles_within_five_percent_of_their_depth(tmp_path, hf_processor, qwen_vl_utils):
    """At 8K tokens over page images (~2.5K tokens each), whole pages put a 25% needle far off;
    strips of <= 256 tokens keep every depth within 5%, and the sample's count stays exact."""
    from mmlong.ingest import ingest
    from tests.conftest import LOREM, write_pdf

    write_pdf(tmp_path / "p.pdf", [f"Page {i}. {LOREM}" for i in range(8)])
    ingest([str(tmp_path / "p.pdf")], tmp_path / "ds", preset="pdf-pages", workers=1, progress=False)
    depths = [0.1, 0.25, 0.5, 0.75, 0.9]
    with pytest.raises(ValueError, match="too large or too few"):  # whole pages cannot even fill 8K to 95%
        needle_dataset(str(tmp_path / "ds"), str(tmp_path / "item"), [8192], depths, ["single"], unit="item")
    needle_dataset(str(tmp_path / "ds"), str(tmp_path / "crop"), [8192], depths, ["single"], unit="crop")
    samples = read_samples(tmp_path / "crop" / "samples.parquet")
    assert max(abs(s.extra["depth"] - s.extra["requested_depth"]) for s in samples) <= 0.05
    assert all(0.95 * 8192 <= s.total_tokens <= 8192 for s in samples)
    sample = samples[1]
    strips = [it for it in sample.items if it["kind"] == "page-image"]
    assert strips and max(it["tokens"] for it in strips) <= 256 and all(it["doc_id"] for it in strips)  # provenance kept
    messages = resolve_images(sample.messages, tmp_path / "ds")
    images, _ = qwen_vl_utils.process_vision_info(messages)
    proc = hf_processor(3136, 12845056)
    ids = proc(text=[proc.apply_chat_template(messages, tokenize=False)], images=images, return_tensors="np")["input_ids"][0]
    assert len(ids) == sample.total_tokens
