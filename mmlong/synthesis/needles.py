"""Needles in long interleaved haystacks, for training and evaluation.

A haystack is a run of the units of one or more documents, filled to a target token length:
text items split at sentence boundaries (so even a 128-token sample is >= 95% full), page
images, figures and video frames whole (an image is never cut). Needles go in at a depth
(0 = start, 1 = end) as whole items:

- text (RULER): "One of the special magic numbers for {key} is: {value}." with the variants
  single, multi-key (distractor keys), multi-value (one key, several values), multi-query
  (several keys asked), count (how many) and sum (reasoning over two values);
- image: a generated card showing the value (or, for count, a red star);
- video (V-NIAH): a generated frame with the value, the size of its neighbours, with a
  timestamp between theirs; in video input (frames paired on one token grid) two such frames
  make a pair of their own, placed between whole pairs, so the video stays one element.

Each needle's exact token offset in the model input is measured after the sample is built.
"""

from __future__ import annotations

import io
import random
import re
from dataclasses import dataclass, replace
from typing import Iterable

from mmlong import tokens as tk
from mmlong.ingest.video import time_marker
from mmlong.messages import image_ref, video_input
from mmlong.schema import FIGURE, TEXT, VIDEO_FRAME, Document, Item
from mmlong.samples import QA, Segment, build_with_layout, write_samples

VARIANTS = ("single", "multi-key", "multi-value", "multi-query", "count", "sum")
MODALITIES = ("text", "image", "video")
ADJECTIVES = ["amber", "brisk", "calm", "dusty", "eager", "frosty", "gentle", "hollow", "ivory", "jolly", "keen",
              "lunar", "misty", "noble", "olive", "proud", "quiet", "rusty", "silent", "tidy", "urban", "vivid"]
NOUNS = ["anchor", "badger", "canyon", "dynamo", "ember", "falcon", "glacier", "harbor", "island", "jungle", "kettle",
         "lantern", "meadow", "nebula", "orchard", "pebble", "quarry", "river", "summit", "tundra", "violin", "willow"]
RULER = "One of the special magic numbers for {key} is: {value}."
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
FILL = 0.95
"""A needle sample holds at least this share of its target length."""


@dataclass
class NeedleSpec:
    """One needle task."""

    variant: str = "single"
    modality: str = "text"
    depth: float = 0.5
    """Where the (first) needle goes, 0..1; further needles spread evenly after it."""
    target_tokens: int = 32768
    """Length of the sample (haystack, needles, question and answer), in tokens."""
    count: int = 4
    """Needles (keys, values or hidden items) for the multi, count and sum variants."""
    digits: int = 7
    """Digits of a magic number (RULER: 7; fewer make a curriculum for small models)."""
    distinct: bool = False
    """Magic numbers without a repeated digit (a copy then never has two places to continue
    from: a curriculum step for small models; at most 10 digits)."""

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS or self.modality not in MODALITIES:
            raise ValueError(f"variant must be one of {VARIANTS} and modality one of {MODALITIES}")
        if not 0 <= self.depth <= 1 or self.count < 1 or self.target_tokens < 64:
            raise ValueError(f"need depth in [0, 1], count >= 1 and target_tokens >= 64: {self}")
        if not 1 <= self.digits <= (10 if self.distinct else 12):
            raise ValueError(f"need 1 <= digits <= {10 if self.distinct else 12}, got {self.digits}")
        if self.modality != "text" and self.variant not in ("single", "count"):
            raise ValueError(f"{self.modality} needles support the single and count variants, not {self.variant}")


def haystack(docs: Iterable[Document], target_tokens: int) -> list[Item]:
    """Items of `docs` in order, as many whole items as fit in `target_tokens`; each keeps a
    reference to where it lives in the source dataset (`meta["ref"]`)."""
    out: list[Item] = []
    total = 0
    for item in pool(docs, unit="item"):
        if total + item.tokens > target_tokens:
            break
        out.append(item)
        total += item.tokens
    return out


def pool(docs: Iterable[Document], unit: str = "sentence", strip_digits: bool = False, tokenizer=None,
         crop_tokens: int = 256, budget: tk.PixelBudget = tk.DEFAULT_BUDGET) -> list[Item]:
    """The haystack units of `docs`, in order, each with `meta["ref"]` naming the item it comes
    from: whole items, or (unit="sentence") text items split into sentences, or (unit="crop")
    sentences and page images cut into horizontal strips of at most about `crop_tokens` tokens
    (short haystacks of pages then place a needle within a few percent of its depth; needs the
    documents with their images). `strip_digits` removes digits from the text (RULER's
    haystacks hold no numbers a needle could be confused with)."""
    if unit not in ("item", "sentence", "crop"):
        raise ValueError(f"haystack unit must be item, sentence or crop, got {unit!r}")
    tok = tokenizer if tokenizer is not None else tk.load_tokenizer()
    out: list[Item] = []
    for doc in docs:
        for seq, item in enumerate(doc.items):
            meta = {**(item.meta or {}), "ref": image_ref(doc.doc_id, seq)}  # where it lives (images) or came from
            if unit == "crop" and item.is_image and item.kind != VIDEO_FRAME and item.tokens > crop_tokens:
                out += _crops(item, meta, crop_tokens, budget, doc.doc_id)
                continue
            if item.is_image or (unit == "item" and not strip_digits):
                out.append(replace(item, meta=meta))
                continue
            text = item.text or ""
            parts = [p.strip() for p in _SENTENCE_END.split(text)] if unit != "item" else [text]
            if strip_digits:
                parts = [" ".join(re.sub(r"\d", "", p).split()) for p in parts]
            parts = [p for p in parts if p]
            for part, n in zip(parts, tk.texts_tokens(parts, tok)):
                out.append(replace(item, text=part, tokens=n, meta=meta))
    return out


def _crops(item: Item, meta: dict, max_tokens: int, budget: tk.PixelBudget, doc_id: str) -> list[Item]:
    """An image cut into horizontal strips of equal height, each about `max_tokens` tokens or
    fewer (a strip keeps the full width: lines of text stay whole where the cut allows)."""
    import numpy as np
    from PIL import Image

    from mmlong.imaging import encode_pixels, to_rgb

    if item.image is None:
        raise ValueError(f"{doc_id}: crop haystacks need the page images (read the documents with images)")
    image = to_rgb(Image.open(io.BytesIO(item.image)))
    width, height = image.size
    k = 1
    while k < height // tk.FACTOR and tk.image_tokens(-(-height // k), width, budget) > max_tokens:
        k += 1
    edges = [round(i * height / k) for i in range(k + 1)]
    x0, y0, x1, y1 = item.bbox or (0, 0, width, height)
    out = []
    for a, b in zip(edges, edges[1:]):
        strip = np.asarray(image.crop((0, a, width, b)))
        fmt = item.image_format or "png"
        bbox = (x0, round(y0 + (y1 - y0) * a / height, 2), x1, round(y0 + (y1 - y0) * b / height, 2))
        out.append(replace(item, image=encode_pixels(strip, fmt), image_format=fmt, width=width, height=b - a, bbox=bbox,
                           tokens=tk.image_tokens(b - a, width, budget), meta={**meta, "crop": [a, b]}))
    return out


def fill(groups: list[list[Item]], budget: int, start: int = 0, lookahead: int = 64) -> list[list[Item]]:
    """Consecutive groups (`unit_groups`) from `start` within `budget` tokens, cycling through
    them again when they run out (a short corpus makes long haystacks); a group that does not
    fit is passed over for one of the next `lookahead` that does."""
    out: list[list[Item]] = []
    total, skipped, i = 0, 0, start
    while skipped < min(lookahead, len(groups)):
        group = groups[i % len(groups)]
        i += 1
        size = group_tokens(group)
        if total + size <= budget:
            out.append(group)
            total += size
            skipped = 0
        else:
            skipped += 1
    return out


def unit_groups(units: list[Item]) -> list[list[Item]]:
    """Units that a haystack keeps together, in order: a time marker with what it announces,
    and the two frames of a Qwen2.5-VL video pair (one temporal patch: never split, never
    reordered); every other unit alone."""
    out: list[list[Item]] = []
    for u in units:
        last = out[-1][-1] if out else None
        if last is not None and ((last.meta or {}).get("marker") or _same_pair(last, u)):
            out[-1].append(u)
        else:
            out.append([u])
    return out


def group_tokens(group: list[Item]) -> int:
    return sum(u.tokens for u in group)


def _same_pair(a: Item, b: Item) -> bool:
    if not (video_input(a) and video_input(b)) or a.meta["pair"] != b.meta["pair"]:
        return False
    source = lambda it: str(it.meta.get("ref", "")).rsplit("/", 1)[0]  # noqa: E731
    return source(a) == source(b)


@dataclass
class Haystack:
    """Haystack units (from `pool`) in the groups they stay in (`unit_groups`), with an index
    by size, for filling samples to a length."""

    units: list[Item]

    def __post_init__(self) -> None:
        if not self.units:
            raise ValueError("no haystack units to build needle samples from")
        self.groups = unit_groups(self.units)
        self.by_size = sorted(self.groups, key=group_tokens)
        self.sizes = [group_tokens(g) for g in self.by_size]

    def largest_within(self, tokens: int, rng: random.Random, tokenizer) -> list[Item] | None:
        """The largest group of at most `tokens` tokens; when every text unit is larger, the
        longest word prefix of a random one that fits (a short gap is filled all the same)."""
        import bisect

        k = bisect.bisect_right(self.sizes, tokens) - 1
        if k >= 0:
            return self.by_size[k]
        texts = [u for u in self.units if u.kind == TEXT and not (u.meta or {}).get("marker")]
        if not texts or tokens < 1:
            return None
        unit = rng.choice(texts)
        words = unit.text.split()
        lo, hi = 0, len(words)  # the longest prefix within `tokens`, by bisection
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if tk.text_tokens(" ".join(words[:mid]), tokenizer) <= tokens:
                lo = mid
            else:
                hi = mid - 1
        text = " ".join(words[:lo])
        return [replace(unit, text=text, tokens=tk.text_tokens(text, tokenizer))] if lo else None


def needle_sample(hay: Haystack, spec: NeedleSpec, rng: random.Random, dataset: str,
                  budget: tk.PixelBudget = tk.DEFAULT_BUDGET, tokenizer=None):
    """A needle sample of `spec.target_tokens` tokens: needles and question over a run of the
    haystack's units from a random one, filled to at least FILL of the length (a gap left at
    the end takes the largest other unit that fits it); ValueError if text units cannot (whole
    images and frames may leave a larger gap: `extra["fill"]` says how full)."""
    tok = tokenizer if tokenizer is not None else tk.load_tokenizer()
    target = spec.target_tokens
    needles_seed, start = rng.getrandbits(64), rng.randrange(len(hay.groups))

    def build(groups):
        items = [u for g in groups for u in g]
        return build_needle_sample(items, spec, random.Random(needles_seed), dataset, budget, tok)

    frames = [g for g in hay.groups if g[-1].kind == VIDEO_FRAME][:1] if spec.modality == "video" else []
    bare, _ = build(frames)  # a video needle is sized like the haystack's frames
    overhead = bare.total_tokens - sum(map(group_tokens, frames))
    if overhead > target:
        raise ValueError(f"needles, question and answer alone take {overhead} tokens, more than {target}")
    items = fill(hay.groups, target - overhead, start)
    for _ in range(64):
        sample, doc = build(items)
        if sample.total_tokens > target:  # the newlines between items took some tokens too: shed from the end
            excess = sample.total_tokens - target
            while excess > 0 and items:
                excess -= group_tokens(items.pop())
            continue
        if sample.total_tokens >= FILL * target:
            break
        extra = hay.largest_within(target - sample.total_tokens - 1, rng, tok)
        if extra is None:
            break
        items.insert(rng.randrange(len(items) + 1), extra)
    if sample.total_tokens > target or (spec.modality == "text" and sample.total_tokens < FILL * target):
        raise ValueError(f"the haystack fills {sample.total_tokens} of {target} tokens: its units (largest "
                         f"{hay.sizes[-1]} tokens) are too large or too few for this length")
    sample.extra["fill"] = round(sample.total_tokens / target, 4)  # images and frames are never cut: fill may be lower
    return sample, doc


def _key(rng: random.Random, used: set[str]) -> str:
    while (key := f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}") in used:
        pass
    used.add(key)
    return key


def _value(rng: random.Random, digits: int, distinct: bool) -> str:
    if not distinct:
        return str(rng.randint(10 ** (digits - 1), 10**digits - 1))
    first = rng.choice("123456789")
    return first + "".join(rng.sample([d for d in "0123456789" if d != first], digits - 1))


def _card(text: str, size: tuple[int, int], star: bool = False) -> bytes:
    from PIL import Image, ImageDraw, ImageFont

    from mmlong.render.glyph import FONT_DIR

    w, h = size
    img = Image.new("RGB", (w, h), (250, 246, 230))
    draw = ImageDraw.Draw(img)
    if star:
        cx, cy, r = w / 2, h / 2, min(w, h) / 3
        import math

        points = [(cx + (r if i % 2 == 0 else r / 2.5) * math.sin(i * math.pi / 5),
                   cy - (r if i % 2 == 0 else r / 2.5) * math.cos(i * math.pi / 5)) for i in range(10)]
        draw.polygon(points, fill=(220, 30, 30))
    else:
        font = ImageFont.truetype(str(FONT_DIR / "DejaVuSans-Bold.ttf"), max(12, h // 8))
        draw.multiline_text((w / 2, h / 2), text, fill=(20, 20, 20), font=font, anchor="mm", align="center")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _image_needle(kind: str, text: str, size: tuple[int, int], budget: tk.PixelBudget, star: bool, **where) -> Item:
    w, h = size
    return Item(kind, image=_card(text, size, star), image_format="png", width=w, height=h,
                tokens=tk.image_tokens(h, w, budget), meta={"generated": True, "needle": text or "star"}, **where)


def _positions(items: list[Item], depths: list[float]) -> list[int]:
    """Item boundaries whose token offsets are nearest each depth. A needle never goes between
    a timestamp marker and its frame, nor inside a pair of frames (Qwen2.5-VL merges two
    consecutive frames into one temporal patch: video input pairs them by `meta["pair"]`,
    frames as images count in twos)."""
    offsets, allowed, frames = [0], [True], 0
    for i, it in enumerate(items):
        offsets.append(offsets[-1] + it.tokens)
        frames += it.kind == VIDEO_FRAME
        inside = i + 1 < len(items) and _same_pair(it, items[i + 1])
        paired = video_input(it) or frames % 2 == 0
        allowed.append(not (it.meta or {}).get("marker") and paired and not inside)
    total = offsets[-1]
    ok = [i for i in range(len(offsets)) if allowed[i]] or list(range(len(offsets)))
    return [min(ok, key=lambda i: abs(offsets[i] - d * total)) for d in depths]


def _video_needle(frames: list[Item], value: str, star: bool, budget: tk.PixelBudget, pair: int) -> list[Item]:
    """A needle frame sized like the haystack's frames; for video input (the haystack's
    frames pair up) two frames of the card making one pair of their own, costing a pair's
    tokens on its first frame as ingest stores them."""
    first = frames[0]
    card = _image_needle(VIDEO_FRAME, value, (first.width, first.height), budget, star)
    if not video_input(first):
        return [card]
    meta = {**card.meta, "pair": pair}
    tokens = tk.video_tokens(tk.TEMPORAL_PATCH_SIZE, first.height, first.width)
    return [replace(card, tokens=tokens, meta=meta), replace(card, tokens=0, meta=meta)]


def insert_needles(items: list[Item], spec: NeedleSpec, rng: random.Random,
                   budget: tk.PixelBudget = tk.DEFAULT_BUDGET) -> tuple[list[Item], QA]:
    """`items` with the spec's needles inserted, and the question that finds them. A video
    needle goes between two pairs of frames, with timestamps between theirs (and its own
    time marker when the haystack's frames have them)."""
    n = 1 if spec.variant == "single" else spec.count
    if spec.variant == "sum":
        n = 2
    depths = [spec.depth] + [spec.depth + (1 - spec.depth) * (i + 1) / n for i in range(n - 1)]
    used: set[str] = set()
    keys = [_key(rng, used) for _ in range(n)]
    values = [_value(rng, spec.digits, spec.distinct) for _ in range(n)]
    if spec.variant in ("multi-value", "count"):
        keys = [keys[0]] * n
    question, answer, fmt = _question(spec, keys, values)
    needles: list[list[Item]] = []
    frames = [it for it in items if it.kind == VIDEO_FRAME]
    for i in range(n):
        if spec.modality == "text":
            text = RULER.format(key=keys[i], value=values[i])
            needles.append([Item(TEXT, text=text, tokens=tk.text_tokens(text), meta={"generated": True, "needle": keys[i]})])
        elif spec.modality == "image":
            needles.append([_image_needle(FIGURE, values[i], (336, 224), budget, spec.variant == "count")])
        else:
            if not frames:
                raise ValueError("video needles need a haystack of video frames")
            needles.append(_video_needle(frames, values[i], spec.variant == "count", budget, -1 - i))
    markers = any((it.meta or {}).get("marker") for it in items)
    out = list(items)
    placed = sorted(zip(_positions(items, depths), range(n), needles), key=lambda x: (-x[0], -x[1]))
    for pos, _, needle in placed:  # from the end, so that needles at one boundary stay in order
        if needle[0].kind == VIDEO_FRAME:  # between its neighbours in time
            before = next((it.timestamp for it in reversed(out[:pos]) if it.timestamp is not None), 0.0)
            after = next((it.timestamp for it in out[pos:] if it.timestamp is not None), before)
            times = [before + (after - before) * (j + 1) / (len(needle) + 1) for j in range(len(needle))]
            needle = [replace(f, timestamp=round(t, 3)) for f, t in zip(needle, times)]
            if markers:
                text = time_marker(needle[0].timestamp)
                needle.insert(0, Item(TEXT, text=text, timestamp=needle[0].timestamp, tokens=tk.text_tokens(text),
                                      meta={"marker": True, "generated": True}))
        out[pos:pos] = needle
    return out, QA(question, answer, fmt, [], "needle", f"needle-{spec.modality}-{spec.variant}", keys[0])


def _question(spec: NeedleSpec, keys: list[str], values: list[str]) -> tuple[str, object, str]:
    where = {"text": "the provided text", "image": "the images of the document", "video": "the frames of the video"}[spec.modality]
    if spec.modality != "text":
        if spec.variant == "count":
            thing = "images showing a red star" if spec.modality == "image" else "frames showing a red star"
            return f"How many {thing} are there in {where}?", len(values), "Int"
        return f"One of {where} shows a card with a special magic number. What is the number?", int(values[0]), "Int"
    if spec.variant in ("single", "multi-key"):
        return f"What is the special magic number for {keys[0]} mentioned in {where}?", int(values[0]), "Int"
    if spec.variant == "multi-value":
        return f"What are all the special magic numbers for {keys[0]} mentioned in {where}?", [int(v) for v in values], "List"
    if spec.variant == "multi-query":
        asked = ", ".join(keys)
        return f"What are the special magic numbers for {asked} mentioned in {where}? Answer in that order.", [int(v) for v in values], "List"
    if spec.variant == "count":
        return f"How many special magic numbers for {keys[0]} are mentioned in {where}?", len(values), "Int"
    return (f"What is the sum of the special magic numbers for {keys[0]} and {keys[1]} mentioned in {where}?",
            int(values[0]) + int(values[1]), "Int")


def build_needle_sample(items: list[Item], spec: NeedleSpec, rng: random.Random, dataset: str,
                        budget: tk.PixelBudget = tk.DEFAULT_BUDGET, tokenizer=None):
    """A training/evaluation sample: the haystack with its needles, the question, the answer.
    The needles' token offsets (text: their first token; images: their <|vision_start|>) come
    from the sample's layout."""
    hay, qa = insert_needles(items, spec, rng, budget)
    doc = Document(f"needle-{rng.getrandbits(48):012x}", dataset, "needle", "", items=hay)
    sample, lay = build_with_layout(doc, qa, dataset, "needles", Segment(0, 0), tokenizer, budget)
    offsets = [s.start for s in lay.needles()]
    sample.extra = {"variant": spec.variant, "modality": spec.modality, "depth": depth_reached(lay, spec.depth),
                    "requested_depth": spec.depth,
                    "target_tokens": spec.target_tokens, "haystack_tokens": sum(it.tokens for it in items),
                    "needle_offsets": offsets, "needle_depths": [round(o / sample.total_tokens, 4) for o in offsets]}
    return sample, doc


def depth_reached(lay, requested: float) -> float:
    """Where the first needle actually sits: the share of the haystack's tokens before it
    (whole items move a needle off the requested depth; the requested one if no haystack)."""
    needles = lay.needles()
    hay = [s for s in lay.items if not s.needle]
    total = sum(s.end - s.start for s in hay)
    if not needles or not total:
        return requested
    first = min(s.start for s in needles)
    return round(sum(s.end - s.start for s in hay if s.end <= first) / total, 4)


def needle_dataset(dataset: str, out: str, lengths: list[int], depths: list[float], variants: list[str],
                   modality: str = "text", count: int = 4, seed: int = 0, unit: str = "sentence",
                   strip_digits: bool = False) -> dict:
    """Needle samples for every (length, depth, variant) over the documents of `dataset` (a
    haystack run starting at a random unit, cycled when shorter than the length), written to
    out/samples.parquet."""
    import itertools
    import json
    from collections import Counter
    from pathlib import Path

    from mmlong.store import atomic_write_text, iter_documents

    dataset = str(Path(dataset).resolve())
    docs = list(iter_documents(Path(dataset), images=unit == "crop"))
    if not docs or not any(d.items for d in docs):
        raise ValueError(f"{dataset}: no documents with items to build haystacks from")
    budget = tk.PixelBudget.from_options(docs[0].options)
    if modality == "video":
        docs = [d for d in docs if any(it.kind == VIDEO_FRAME for it in d.items)]
        if not docs:
            raise ValueError(f"{dataset}: video needles need documents of video frames")
    rng = random.Random(seed)
    tok = tk.load_tokenizer()
    hay = Haystack(pool(docs, unit, strip_digits, tok, budget=budget))
    samples = []
    for length, depth, variant in itertools.product(lengths, depths, variants):
        sample, _ = needle_sample(hay, NeedleSpec(variant, modality, depth, length, count), rng, dataset, budget, tok)
        samples.append(sample)
    write_samples(samples, Path(out) / "samples.parquet")
    summary = {"dataset": dataset, "samples": len(samples), "modality": modality,
               "kinds": dict(Counter(s.kind for s in samples)),
               "tokens": {"min": min(s.total_tokens for s in samples), "max": max(s.total_tokens for s in samples)},
               "fill": round(min(s.total_tokens / s.extra["target_tokens"] for s in samples), 4)}
    atomic_write_text(Path(out) / "needles.json", json.dumps(summary, indent=2))
    return summary
