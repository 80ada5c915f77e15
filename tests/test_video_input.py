"""Videos as Qwen2.5-VL consumes video: frames in pairs on one token grid, `{"type": "video"}`
elements, counts exact for whole videos and for segments. Where torchvision imports, the
counts are also checked against qwen-vl-utils and the HF processor's video part (the whole
pipeline a user runs); everywhere, against the chat template's own `<|video_pad|>` expansion."""

from __future__ import annotations

import dataclasses
import random
import pytest

from mmlong import store
from mmlong import tokens as tk
from mmlong.ingest import IngestOptions, ingest
from mmlong.ingest.video import VideoOptions
from mmlong.messages import View, image_ref, render_chat, resolve_images
from mmlong.samples import QA, Segment, build_with_layout
from mmlong.schema import VIDEO_FRAME, Document
from mmlong.synthesis.needles import Haystack, NeedleSpec, needle_sample, pool
from mmlong.train.processor import can_video
from tests.conftest import make_video

GRID = (252 // 28) * (448 // 28)  # tokens of one pair of 448x252 frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A minute of video (scenes of 15 s) ingested at 1 fps as video input, with and without
    time markers, and as separate images."""
    d = tmp_path_factory.mktemp("vinput")
    path = make_video(d / "minute.mp4", 60, scene_seconds=15)
    out = {}
    for name, opts in {"plain": VideoOptions(fps=1.0, time_markers=False, min_segment=5, max_segment=40),
                       "markers": VideoOptions(fps=1.0), "images": VideoOptions(fps=1.0, as_video=False)}.items():
        ingest([str(path)], d / name, options=IngestOptions(video=opts), workers=1, progress=False, chunk_frames=16)
        out[name] = (d / name, next(iter(store.iter_documents(d / name))))
    return out


QUESTION = QA("Which colour comes first?", "red", "Str", [], "extract-single", "test")


def template_count(sample, tok) -> int:
    """The template's prompt tokenized, each video's one <|video_pad|> expanded to (frames
    padded to even) / 2 pairs of GRID tokens: the count computed apart from mmlong's own."""
    base = len(tok.encode(render_chat(sample.messages), add_special_tokens=False).ids)
    for e in sample.user_content():
        if e["type"] == "video":
            base += (len(e["video"]) + 1) // 2 * GRID - 1
        elif e["type"] == "image":
            base += GRID - 1
    return base


def test_video_input_pairs_frames_on_one_grid(videos):
    tok = tk.load_tokenizer()
    path, doc = videos["plain"]
    assert doc.vision_tokens == 30 * GRID  # half of 60 frames as separate images
    sample, lay = build_with_layout(doc, QUESTION, str(path), "test", Segment(0, 0))
    content = sample.user_content()
    assert [e["type"] for e in content] == ["video", "text"] and len(content[0]["video"]) == 60
    assert content[0]["sample_fps"] == pytest.approx(1.0) and (content[0]["resized_height"], content[0]["resized_width"]) == (252, 448)
    assert sample.total_tokens == template_count(sample, tok)
    pairs = [s for s in lay.items if s.kind == "video-frame"]
    assert [s.part for s in pairs] == list(range(30)) and all(a.end == b.start for a, b in zip(pairs, pairs[1:]))
    assert pairs[-1].end - pairs[0].start == 30 * GRID + 2  # the pads between <|vision_start|> and <|vision_end|>
    assert [s.timestamp for s in pairs] == [doc.items[2 * k].timestamp for k in range(30)]
    resolved = resolve_images(sample.messages, sample.dataset)
    assert len(resolved[0]["content"][0]["video"]) == 60 and resolved[0]["content"][0]["video"][0].size == (448, 252)

    marked, _ = build_with_layout(videos["markers"][1], QUESTION, str(videos["markers"][0]), "test", Segment(0, 0))
    kinds = [e["type"] for e in marked.user_content()]
    assert kinds == ["text", "video"] * 30 + ["text"]  # "<HH:MM:SS>" before each pair: a video element each
    assert marked.total_tokens == template_count(marked, tok)

    as_images, _ = build_with_layout(doc, QUESTION, str(path), "test", Segment(0, 0), view=View(frames="images"))
    assert sum(e["type"] == "image" for e in as_images.user_content()) == 60
    assert as_images.total_tokens == template_count(as_images, tok) > sample.total_tokens + 29 * GRID
    frames_doc = videos["images"][1]
    assert frames_doc.vision_tokens == 60 * GRID and all("pair" not in it.meta for it in frames_doc.items)


def segment_doc(doc: Document, segment: dict) -> Document:
    """The items of one scene segment, referring back to the dataset (as haystacks gather items)."""
    items = [dataclasses.replace(it, meta={**it.meta, "ref": image_ref(doc.doc_id, seq)}) if it.is_image else it
             for seq, it in enumerate(doc.items) if segment["first_seq"] <= seq <= segment["last_seq"]]
    return dataclasses.replace(doc, doc_id=f"{doc.doc_id}-s{segment['segment']}", items=items)


def test_segments_start_on_a_pair_and_count_exactly(videos):
    tok = tk.load_tokenizer()
    path, doc = videos["plain"]
    segments = doc.metadata["segments"]
    assert len(segments) >= 3
    for seg in segments:
        part = segment_doc(doc, seg)
        frames = [it for it in part.items if it.kind == VIDEO_FRAME]
        seq = int(frames[0].meta["ref"].rsplit("/", 1)[1])
        assert frames[0].meta["pair"] * 2 == sum(it.kind == VIDEO_FRAME for it in doc.items[:seq])  # never half a pair
        sample, _ = build_with_layout(part, QUESTION, str(path), "test", Segment(0, 0))
        assert sample.total_tokens == template_count(sample, tok)


@pytest.mark.skipif(not can_video(), reason="the HF video processor and qwen-vl-utils import torchvision")
def test_qwen_vl_utils_and_the_processor_agree(videos, tiny_vlm):
    """The user's pipeline: qwen-vl-utils' process_vision_info on the messages, then the HF
    processor with its video part: len(input_ids) equals the sample's count, for the whole
    video, with markers, and for each segment; mmlong's own encode agrees, its positions equal
    the model's get_rope_index and a packed row of video samples computes what each alone does."""
    import torch
    from qwen_vl_utils import process_vision_info

    from mmlong.train.collate import encode, pack_row
    from mmlong.train.positions import sample_positions
    from mmlong.train.processor import build_processor

    processor = build_processor()
    assert processor.video_processor is not None
    path, doc = videos["plain"]
    cases = [(doc, path), (videos["markers"][1], videos["markers"][0])]
    cases += [(segment_doc(doc, seg), path) for seg in doc.metadata["segments"]]
    encoded = []
    for d, p in cases:
        sample, _ = build_with_layout(d, QUESTION, str(p), "test", Segment(0, 0))
        messages = resolve_images(sample.messages, sample.dataset)
        images, vids, kwargs = process_vision_info(messages, return_video_kwargs=True, return_video_metadata=True)
        vids, metadata = zip(*vids) if vids else (None, None)
        text = processor.apply_chat_template(messages, tokenize=False)
        out = processor(text=[text], images=images, videos=list(vids) if vids else None,
                        video_metadata=list(metadata) if metadata else None, return_tensors="pt", **kwargs)
        assert out["input_ids"].shape[1] == sample.total_tokens
        e = encode(sample, processor)
        assert len(e["input_ids"]) == sample.total_tokens
        assert e["second_per_grid_ts"] == pytest.approx([2.0] * len(e["second_per_grid_ts"]))  # 2 frames at 1 fps
        theirs, _ = tiny_vlm.model.get_rope_index(e["input_ids"][None], e["mm_token_type_ids"][None],
                                                  video_grid_thw=e["video_grid_thw"],
                                                  second_per_grid_ts=torch.tensor(e["second_per_grid_ts"]))
        assert torch.equal(sample_positions(e)[1:], theirs[:, 0])
        encoded.append(e)
    row = pack_row(encoded[:2])

    def hidden(r, positions):
        with torch.no_grad():
            return tiny_vlm.model(input_ids=r["input_ids"][None], position_ids=positions[:, None],
                                  mm_token_type_ids=r["mm_token_type_ids"][None], pixel_values_videos=r["pixel_values_videos"],
                                  video_grid_thw=r["video_grid_thw"], attention_mask=None, use_cache=False).last_hidden_state[0]

    packed, n = hidden(row, row["position_ids"]), len(encoded[0]["input_ids"])
    assert torch.allclose(packed[n:], hidden(encoded[1], sample_positions(encoded[1])), atol=1e-5)


@pytest.mark.parametrize("name", ["plain", "markers"])
def test_video_needles_are_a_pair_of_their_own_inside_the_video(videos, name):
    """A needle in a video-input haystack is two frames of the card making one pair (a pair's
    tokens), between two whole haystack pairs, with timestamps between theirs and, when the
    haystack has time markers, its own marker: without markers the sample keeps one video
    element, and every count stays exact."""
    tok = tk.load_tokenizer()
    path, doc = videos[name]
    hay = Haystack(pool([doc]))
    for k, depth in enumerate([0.0, 0.3, 0.5, 0.8, 1.0]):
        sample, needle_doc = needle_sample(hay, NeedleSpec("single", "video", depth, 40 * GRID), random.Random(k), str(path))
        items = needle_doc.items
        pos = [i for i, it in enumerate(items) if it.kind == VIDEO_FRAME and it.meta.get("generated")]
        assert len(pos) == 2 and pos[1] == pos[0] + 1
        first, second = items[pos[0]], items[pos[1]]
        assert (first.tokens, second.tokens, first.meta["pair"]) == (GRID, 0, second.meta["pair"])
        frames = [it for it in items if it.kind == VIDEO_FRAME and not it.meta.get("generated")]
        assert all(a.meta["pair"] == b.meta["pair"] for a, b in zip(frames[::2], frames[1::2]))  # haystack pairs whole
        before = [it.timestamp for it in items[: pos[0]] if it.kind == VIDEO_FRAME]
        after = [it.timestamp for it in items[pos[1] + 1 :] if it.kind == VIDEO_FRAME]
        assert (not before or before[-1] <= first.timestamp) and first.timestamp <= second.timestamp
        assert not after or second.timestamp <= after[0]
        content = sample.user_content()
        if name == "plain":
            assert [e["type"] for e in content] == ["video", "text"] and len(content[0]["video"]) == len(frames) + 2
        else:
            assert items[pos[0] - 1].meta.get("marker") and items[pos[0] - 1].text.startswith("<00:")
            assert all(e["type"] == "text" for e in content[::2]) and all(len(e["video"]) == 2 for e in content[1:-1:2])
        assert sample.total_tokens == template_count(sample, tok) <= 40 * GRID
        needle_spans = [s for s in sample_layout(sample, tok) if s.needle]
        assert len(needle_spans) == 1 and needle_spans[0].end - needle_spans[0].start in (GRID, GRID + 1, GRID + 2)
        assert abs(sample.extra["depth"] - depth) <= 0.05


def sample_layout(sample, tok):
    from mmlong.samples import layout

    return layout(sample, tok).items
