"""The sample as a data model: its token layout equals the processor's real input_ids on pages,
figures, video frames and needles; budgets and dataset references travel with it."""

from __future__ import annotations

import random
import shutil

import pytest

from mmlong import store
from mmlong import tokens as tk
from mmlong.ingest import IngestOptions, ingest
from mmlong.ingest.pdf import PdfOptions
from mmlong.ingest.video import VideoOptions
from mmlong.messages import View, resolve_images
from mmlong.mixtures.packing import pack
from mmlong.samples import QA, Segment, build_sample, layout, read_samples, write_samples
from mmlong.synthesis.needles import NeedleSpec, build_needle_sample, haystack
from tests.conftest import make_video, write_pdf

VISION_START, VISION_END, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"


def processor_ids(sample, hf_processor, qwen_vl_utils) -> list[int]:
    messages = resolve_images(sample.messages, sample.dataset)
    images, _ = qwen_vl_utils.process_vision_info(messages)
    proc = hf_processor(sample.budget.min_pixels, sample.budget.max_pixels)
    return proc(text=[proc.apply_chat_template(messages, tokenize=False)], images=images,
                return_tensors="np")["input_ids"][0].tolist()


def check_layout(sample, ids: list[int]) -> None:
    """Every span of the layout against the processor's input_ids."""
    tok = tk.load_tokenizer()
    start, end, pad = (tok.token_to_id(t) for t in (VISION_START, VISION_END, IMAGE_PAD))
    lay = layout(sample)
    assert lay.length == len(ids) == sample.total_tokens
    content = sample.user_content()
    assert len(lay.items) == len(sample.items) == len(content) - 1
    covered = lay.items[0].start  # after the system turn and <|im_start|>user
    for span, element, prov in zip(lay.items, content, sample.items):
        assert span.start == covered or tok.decode(ids[covered : span.start]).strip() == "", (covered, span)
        if prov["kind"] == "text":
            assert tok.decode(ids[span.start : span.end]) == element["text"], span
        else:
            assert ids[span.start] == start and ids[span.end - 1] == end, span
            assert ids[span.start + 1 : span.end - 1] == [pad] * prov["tokens"]
        covered = span.end
    assert tok.decode(ids[lay.question.start : lay.question.end]) == sample.question
    assert tok.decode(ids[lay.answer.start : lay.answer.end], skip_special_tokens=False) == sample.messages[-1]["content"][0]["text"] + "<|im_end|>"
    assert (lay.answer.start, lay.answer.end) == (sample.answer_start, sample.answer_end)


@pytest.fixture(scope="module")
def figures_dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("figs")
    write_pdf(d / "figs.pdf", [f"Page {p}. Results of quarter {p} are in the figure below." for p in range(3)],
              images={0: [(100, 300, 400, 500)], 2: [(100, 300, 300, 450), (320, 300, 520, 450)]})
    opts = IngestOptions(pdf=PdfOptions(mode="interleaved", dpi=36, figures=True), tokens=tk.PixelBudget(3136, 200704))
    ingest([str(d / "figs.pdf")], d / "ds", options=opts, workers=1, progress=False)
    return d / "ds"


def test_layout_of_pages_and_figures(figures_dataset, hf_processor, qwen_vl_utils):
    doc = next(store.iter_documents(figures_dataset, images=False))
    kinds = {it.kind for it in doc.items}
    assert {"page-image", "figure", "text"} <= kinds
    qa = QA("Which page holds two figures?", 3, "Int", [3], "extract-single", "test", "two figures")
    sample = build_sample(doc, qa, str(figures_dataset), "test", Segment(0, 3))
    assert sample.budget == tk.PixelBudget(3136, 200704)  # the dataset's budget, recorded in the sample
    check_layout(sample, processor_ids(sample, hf_processor, qwen_vl_utils))
    pages = layout(sample).pages()
    assert sorted(pages) == [0, 1, 2] and pages[0][1] <= pages[1][0] <= pages[1][1] <= pages[2][0]
    figures = [s for s in layout(sample).items if s.kind == "figure"]
    assert [s.page for s in figures] == [0, 2, 2] and all(s.doc_id == doc.doc_id for s in figures)


def test_layout_of_video_frames_with_segments(tmp_path, hf_processor, qwen_vl_utils):
    """Frames shown as images, one span each (native video input: tests/test_video_input.py)."""
    make_video(tmp_path / "clip.mp4", 24, scene_seconds=12)
    opts = IngestOptions(video=VideoOptions(fps=0.5, min_segment=4, max_segment=30))
    ingest([str(tmp_path / "clip.mp4")], tmp_path / "ds", options=opts, workers=1, progress=False)
    doc = next(store.iter_documents(tmp_path / "ds", images=False))
    qa = QA("What colour is the second scene?", "green", "Str", [], "extract-single", "test", "second scene")
    sample = build_sample(doc, qa, str(tmp_path / "ds"), "test", Segment(0, 0), view=View(frames="images"))
    check_layout(sample, processor_ids(sample, hf_processor, qwen_vl_utils))
    frames = [s for s in layout(sample).items if s.kind == "video-frame"]
    assert len(frames) == 12 and [s.timestamp for s in frames] == sorted(s.timestamp for s in frames)
    assert [s.segment for s in frames] == [0] * 6 + [1] * 6  # the scene cut at 12 s


@pytest.mark.parametrize("modality", ["text", "image"])
def test_layout_of_needles(report_dataset, modality, hf_processor, qwen_vl_utils):
    items = haystack(store.iter_documents(report_dataset, images=False), 3000)
    spec = NeedleSpec("single" if modality == "image" else "multi-key", modality, 0.5, 4096, count=3)
    sample, doc = build_needle_sample(items, spec, random.Random(3), str(report_dataset), tk.PixelBudget(3136, 1003520))
    ids = processor_ids(sample, hf_processor, qwen_vl_utils)
    check_layout(sample, ids)
    needles = layout(sample).needles()
    assert [s.start for s in needles] == sample.extra["needle_offsets"] and len(needles) == (1 if modality == "image" else 3)
    haystack_spans = [s for s in layout(sample).items if not s.needle]
    assert all(s.doc_id and s.seq is not None for s in haystack_spans)  # provenance of the haystack's items


def test_samples_move_with_their_dataset_and_keep_their_budget(report_dataset, report_doc, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(report_dataset, root / "ds")
    qa = QA("On which page does the section \"Method\" begin?", 4, "Int", [4], "extract-single", "section-start", "Method")
    sample = build_sample(report_doc, qa, str(root / "ds"), "template", Segment(0, 12))
    write_samples([sample], root / "samples" / "samples.parquet")
    moved = tmp_path / "elsewhere"
    shutil.move(root, moved)
    (back,) = read_samples(moved / "samples")
    assert back.dataset == str((moved / "ds").resolve()) and back.budget == tk.PixelBudget(3136, 1003520)
    assert resolve_images(back.messages, back.dataset)[0]["content"][0]["image"].size[0] > 0
    assert back.items == sample.items and back.total_tokens == sample.total_tokens


def test_packs_record_window_and_budget(tmp_path):
    import pyarrow.parquet as pq

    packed = pack([("a", 100), ("b", 60), ("c", 40)], 128, tk.PixelBudget(3136, 200704))
    packed.write(tmp_path / "packs.parquet")
    rows = pq.read_table(tmp_path / "packs.parquet").to_pylist()
    assert {(r["max_length"], r["min_pixels"], r["max_pixels"]) for r in rows} == {(128, 3136, 200704)}
    with pytest.raises(ValueError, match="more than the window"):
        pack([("long", 129)], 128)


def test_one_definition_of_length_bins(report_dataset):
    from mmlong.mixtures.mix import MixtureSpec
    from mmlong.store import length_histogram

    spec = MixtureSpec(max_length=16384, bins=[8192, 16384])
    for n, expected in [(8191, "0K-8K"), (8192, "0K-8K"), (8193, "8K-16K"), (16384, "8K-16K")]:
        assert spec.bin_label(spec.bin_of(n)) == expected
        (hit,) = [b["bin"] for b in length_histogram([n]) if b["documents"]]
        assert hit == expected
    assert spec.bin_of(16385) is None and tk.bin_label(tk.length_bin(300000)) == ">256K"
