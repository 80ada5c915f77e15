"""Golden tests: mmlong's token counts against qwen-vl-utils and the HF Qwen2.5-VL processor."""

from __future__ import annotations

import pytest
from PIL import Image

from mmlong import tokens as tk

# (height, width): tiny, odd, square, documents, photos, huge, and aspect ratios up to 200.
SIZES = [
    (1, 1), (3, 7), (10, 500), (27, 29), (28, 28), (33, 77), (56, 56), (100, 100), (224, 224),
    (499, 501), (300, 1000), (1000, 300), (600, 800), (1080, 1920), (1684, 1190), (1190, 1684),
    (3508, 2480), (4000, 3000), (5000, 5000), (123, 4567), (60, 12000), (14, 2800), (2800, 14),
]
BUDGETS = [(3136, 12845056), (3136, 1003520), (3136, 256 * 784), (512 * 784, 12845056)]


@pytest.mark.parametrize("min_pixels,max_pixels", BUDGETS)
def test_smart_resize_equals_qwen_vl_utils(qwen_vl_utils, min_pixels, max_pixels):
    for h, w in SIZES:
        expected = qwen_vl_utils.smart_resize(h, w, factor=28, min_pixels=min_pixels, max_pixels=max_pixels)
        assert tk.smart_resize(h, w, min_pixels, max_pixels) == expected, (h, w)


@pytest.mark.parametrize("min_pixels,max_pixels", [(3136, 12845056), (3136, 1003520), (512 * 784, 1003520)])
def test_image_tokens_equal_processor_grid(qwen_vl_utils, hf_processor, min_pixels, max_pixels):
    """The pipeline users run: qwen-vl-utils fetch_image, then the HF image processor."""
    ip = hf_processor(min_pixels, max_pixels).image_processor
    checked = 0
    for h, w in SIZES:
        image = Image.new("RGB", (w, h), (120, 30, 200))
        fetched = qwen_vl_utils.fetch_image({"image": image, "min_pixels": min_pixels, "max_pixels": max_pixels})
        try:
            grid = ip(images=[fetched], return_tensors="np")["image_grid_thw"][0].tolist()
        except ValueError as e:  # the processor rejects it: so must mmlong
            assert "aspect ratio" in str(e)
            with pytest.raises(ValueError, match="aspect ratio"):
                tk.image_tokens(h, w, tk.PixelBudget(min_pixels, max_pixels))
            continue
        checked += 1
        assert tuple(grid) == tk.image_grid(h, w, tk.PixelBudget(min_pixels, max_pixels)), (h, w)
        assert grid[0] * grid[1] * grid[2] // 4 == tk.image_tokens(h, w, tk.PixelBudget(min_pixels, max_pixels)), (h, w)
    assert checked >= 20


def test_image_tokens_equal_raw_processor_for_normal_images(hf_processor):
    """Without qwen-vl-utils the processor resizes the same way once both sides reach 28 px."""
    ip = hf_processor(3136, 1003520).image_processor
    for h, w in SIZES:
        if min(h, w) < 28 or max(h, w) / min(h, w) > 150:  # qwen-vl-utils' pre-resize differs there
            continue
        grid = ip(images=[Image.new("RGB", (w, h))], return_tensors="np")["image_grid_thw"][0].tolist()
        assert tuple(grid) == tk.image_grid(h, w, tk.PixelBudget(3136, 1003520)), (h, w)


def test_image_pad_count_in_processor_input_ids(hf_processor):
    proc = hf_processor(3136, 1003520)
    pad = proc.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    sizes = [(28, 28), (1684, 1190), (300, 1000), (60, 6000), (4000, 3000), (499, 501)]
    images = [Image.new("RGB", (w, h), "white") for h, w in sizes]
    text = "".join(f"page {i}<|vision_start|><|image_pad|><|vision_end|>" for i in range(len(images)))
    ids = proc(text=[text], images=images, return_tensors="np")["input_ids"][0].tolist()
    assert ids.count(pad) == sum(tk.image_tokens(h, w, tk.PixelBudget(3136, 1003520)) for h, w in sizes)


def test_a4_page_at_144_dpi():
    # 1190 x 1684 px -> 1176 x 1680 (42 x 60 tokens)
    assert tk.smart_resize(1684, 1190) == (1680, 1176)
    assert tk.image_tokens(1684, 1190) == 2520


def test_extreme_aspect_ratio_is_a_clear_error(qwen_vl_utils):
    with pytest.raises(ValueError, match="aspect ratio"):
        qwen_vl_utils.smart_resize(10, 2500, factor=28)
    with pytest.raises(ValueError, match="aspect ratio"):
        tk.image_tokens(10, 2500)
    with pytest.raises(ValueError, match="positive"):
        tk.image_tokens(0, 10)


@pytest.mark.parametrize("fps", [2.0, 1.0, 0.5, 4.0])
def test_video_frame_count_equals_smart_nframes(qwen_vl_utils, fps):
    cases = [(30, 30.0), (100, 25.0), (1800, 30.0), (9000, 29.97), (108000, 30.0), (7, 30.0), (4, 1.0), (250, 24.0)]
    for total, video_fps in cases:
        for min_frames, max_frames in [(4, 768), (8, 64), (3, 31)]:
            ele = {"fps": fps, "min_frames": min_frames, "max_frames": max_frames}
            expected = qwen_vl_utils.smart_nframes(ele, total_frames=total, video_fps=video_fps)
            assert tk.video_frame_count(total, video_fps, fps, min_frames, max_frames) == expected, (total, video_fps)


def test_hour_long_video_plan_matches_measured_qwen_defaults():
    # qwen-vl-utils defaults: a 1 h 640x360 video gives 768 frames at 644x364, 114,816 video tokens.
    plan = tk.plan_video(total_frames=108000, video_fps=30.0, height=360, width=640)
    assert plan == tk.VideoPlan(nframes=768, height=364, width=644, tokens=114816)


def test_video_frame_size_follows_fetch_video_budget(qwen_vl_utils):
    """fetch_video: per-frame max = max(min(768*784, total_pixels / n * 2), 1.05 * min_pixels)."""
    vp = qwen_vl_utils
    for n, (h, w) in [(120, (360, 640)), (768, (720, 1280)), (4, (1080, 1920)), (768, (2160, 3840)), (500, (100, 100))]:
        min_px, frame_max = vp.VIDEO_MIN_TOKEN_NUM * 784, vp.VIDEO_MAX_TOKEN_NUM * 784
        total = vp.MODEL_SEQ_LEN * 784 * 0.9
        budget = max(min(frame_max, total / n * 2), int(min_px * 1.05))
        expected = vp.smart_resize(h, w, factor=28, min_pixels=min_px, max_pixels=budget)
        assert tk.video_frame_size(n, h, w) == expected, (n, h, w)
        eh, ew = expected
        assert tk.video_tokens(n, eh, ew) == n // 2 * (eh // 28) * (ew // 28)
    assert tk.video_tokens(3, 28, 28) == 2  # odd frame counts are padded to even
    with pytest.raises(ValueError, match="multiples of 28"):
        tk.video_tokens(4, 30, 28)


TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog. " * 20,
    "长文档多模态理解：页面、表格和图表。",
    "def f(x):\n    return x ** 2  # squares\n\n\n",
    "Émojis 🚀🔥 and accents: naïve café, Straße",
    "   leading and trailing   ",
    "Numbers 3.14159, 2,718,281 and dates 2026-11-24.",
]


def test_text_tokens_equal_hf_tokenizer(hf_tokenizer):
    for text in TEXTS:
        assert tk.text_tokens(text) == len(hf_tokenizer(text, add_special_tokens=False)["input_ids"]), text
    assert tk.text_tokens("") == 0


def test_missing_tokenizer_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(tk.TokenizerNotFound, match="tokenizer.json"):
        tk.load_tokenizer(str(tmp_path))
    monkeypatch.setenv(tk.TOKENIZER_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(tk.TokenizerNotFound, match="nowhere"):
        tk.load_tokenizer.__wrapped__()
