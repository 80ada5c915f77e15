"""Samples into model inputs: encoded by the processor, loss on the answer span only, packed
into rows whose samples keep their own positions. Runs in DataLoader workers: positions come
from `positions.rope_index`, not from the model.

Packing follows what transformers 5.x needs to keep packed Qwen2.5-VL samples apart:
`position_ids` of shape (4, B, L) where row 0 holds text positions restarting at 0 for every
sample and rows 1-3 each sample's own M-RoPE positions; call the model with
`attention_mask=None` and `use_cache=False` (with a cache, packed samples see each other).
The first token of every sample carries no label, so nothing is predicted across a boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmlong.imaging import to_rgb
from mmlong.messages import open_image, resolve_images
from mmlong.samples import Sample, layout
from mmlong.train.loss import IGNORE
from mmlong.train.positions import sample_positions


def encode(sample: Sample, processor, images: dict[str, Any] | None = None) -> dict[str, Any]:
    """Processor inputs of one sample (tensors without the batch axis) with labels on
    [answer_start, answer_end) only. The processor must resize images under the sample's
    budget: a length or vision-span mismatch is an error, never silently trained on."""
    import torch

    messages = resolve_images(sample.messages, sample.dataset)
    text = processor.apply_chat_template(messages, tokenize=False)
    vision = vision_inputs([messages], processor, f"sample {sample.sample_id}")
    pictures, videos = vision.get("images"), vision.get("videos")
    out = processor(text=[text], return_tensors="pt", **vision)
    ids = out["input_ids"][0]
    if len(ids) != sample.total_tokens:
        raise ValueError(f"sample {sample.sample_id}: the processor gives {len(ids)} tokens where the sample counted "
                         f"{sample.total_tokens}; give the processor the sample's pixel budget {sample.budget}")
    if pictures or videos:  # every vision span where the sample's layout puts it
        vision_start = processor.tokenizer.convert_tokens_to_ids("<|vision_start|>")
        if any(int(ids[s.start]) != vision_start for s in layout(sample).items if s.kind != "text" and not s.part):
            raise ValueError(f"sample {sample.sample_id}: its images are not where its layout puts them")
    labels = torch.full_like(ids, IGNORE)
    labels[sample.answer_start : sample.answer_end] = ids[sample.answer_start : sample.answer_end]
    encoded = {"input_ids": ids, "labels": labels, "mm_token_type_ids": out["mm_token_type_ids"][0]}
    if pictures:
        encoded["pixel_values"] = out["pixel_values"]
        encoded["image_grid_thw"] = out["image_grid_thw"]
    if videos:
        encoded["pixel_values_videos"] = out["pixel_values_videos"]
        encoded["video_grid_thw"] = out["video_grid_thw"]
        encoded["second_per_grid_ts"] = [float(x) for x in out["second_per_grid_ts"]]
    return encoded


def vision_inputs(conversations: list[list[dict[str, Any]]], processor, what: str) -> dict[str, Any]:
    """The processor's image and video arguments for the (resolved) conversations, in order:
    images as RGB, each video as its frames with their sampling fps (never re-sampled)."""
    content = [e for messages in conversations for m in messages if not isinstance(m["content"], str) for e in m["content"]]
    out: dict[str, Any] = {}
    images = [to_rgb(open_image(e["image"])) for e in content if e.get("type") == "image"]
    if images:
        out["images"] = images
    videos = [e for e in content if e.get("type") == "video"]
    if videos:
        if getattr(processor, "video_processor", None) is None:
            raise ValueError(f"{what}: video input needs the processor's video part (transformers' Qwen2.5-VL video "
                             "processor imports torchvision): install torchvision, or show frames as images "
                             "(View(frames='images'))")
        out["videos"] = [[to_rgb(open_image(f)) for f in e["video"]] for e in videos]
        out["video_metadata"] = [{"fps": e.get("sample_fps", 2.0), "total_num_frames": len(e["video"]),
                                  "frames_indices": list(range(len(e["video"])))} for e in videos]
        out["do_sample_frames"] = False
    return out


def pack_row(encoded: list[dict[str, Any]], spatial_merge_size: int = 2, tokens_per_second: float = 2) -> dict[str, Any]:
    """One packed row of several encoded samples. Shapes: input_ids, labels,
    mm_token_type_ids (L,); position_ids (4, L)."""
    import torch

    labels = []
    for e in encoded:
        lab = e["labels"].clone()
        lab[0] = IGNORE  # never predict a sample's first token from the previous sample
        labels.append(lab)
    row = {
        "input_ids": torch.cat([e["input_ids"] for e in encoded]),
        "labels": torch.cat(labels),
        "segments": torch.cat([torch.full((len(e["input_ids"]),), k) for k, e in enumerate(encoded)]),
        "position_ids": torch.cat([sample_positions(e, spatial_merge_size, tokens_per_second) for e in encoded], dim=1),
        "mm_token_type_ids": torch.cat([e["mm_token_type_ids"] for e in encoded]),
    }
    _join_vision(row, encoded)
    return row


VISION = {"pixel_values": "image_grid_thw", "pixel_values_videos": "video_grid_thw"}


def vision_kwargs(encoded: dict[str, Any]) -> dict[str, Any]:
    """The model's image and video arguments found in an encoded sample or batch."""
    return {k: encoded[k] for pair in VISION.items() for k in pair if k in encoded}


def _join_vision(out: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    """The image and video inputs of `parts` (encoded samples or rows), in order, into `out`."""
    import torch

    for pixels, grid in VISION.items():
        having = [p for p in parts if pixels in p]
        if having:
            out[pixels] = torch.cat([p[pixels] for p in having])
            out[grid] = torch.cat([p[grid] for p in having])
    seconds = [x for p in parts for x in p.get("second_per_grid_ts", [])]
    if seconds:
        out["second_per_grid_ts"] = seconds


def stack_rows(rows: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Rows of different lengths as one batch: each padded at its end with `pad_id` tokens that
    form a sample of their own (positions from 0, no labels). `segments` numbers the samples
    across the batch (-1 on padding). Shapes: input_ids, labels, mm_token_type_ids, segments
    (B, L); position_ids (4, B, L)."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    batch: dict[str, Any] = {k: [] for k in ("input_ids", "labels", "mm_token_type_ids", "position_ids", "segments")}
    first = 0
    for r in rows:
        n = width - len(r["input_ids"])
        batch["segments"].append(torch.cat([r["segments"] + first, torch.full((n,), -1, dtype=r["segments"].dtype)]))
        first += int(r["segments"].max()) + 1
        batch["input_ids"].append(torch.cat([r["input_ids"], torch.full((n,), pad_id, dtype=r["input_ids"].dtype)]))
        batch["labels"].append(torch.cat([r["labels"], torch.full((n,), IGNORE, dtype=r["labels"].dtype)]))
        batch["mm_token_type_ids"].append(torch.cat([r["mm_token_type_ids"], r["mm_token_type_ids"].new_zeros(n)]))
        batch["position_ids"].append(torch.cat([r["position_ids"], torch.arange(n).expand(4, n)], dim=1))
    out = {k: torch.stack(v, dim=1 if k == "position_ids" else 0) for k, v in batch.items()}
    _join_vision(out, rows)
    out["label_tokens"] = int((out["labels"][:, 1:] != IGNORE).sum())
    out["real_tokens"] = sum(len(r["input_ids"]) for r in rows)
    return out


@dataclass
class Collator:
    """DataLoader `collate_fn`: a list of windows (each a list of samples) into one batch.
    Picklable, so it runs in worker processes."""

    processor: Any
    spatial_merge_size: int = 2
    tokens_per_second: float = 2

    def __call__(self, windows: list[list[Sample]]) -> dict[str, Any]:
        rows = [pack_row([encode(s, self.processor) for s in window], self.spatial_merge_size, self.tokens_per_second)
                for window in windows]
        batch = stack_rows(rows, self.processor.tokenizer.pad_token_id or 0)
        batch["groups"] = [group(s) for window in windows for s in window]  # per sample, in `segments` order
        return batch


def group(sample: Sample) -> int:
    """The length a sample reports under: its target length (needles), else its own."""
    return int(sample.extra.get("target_tokens", sample.total_tokens))
