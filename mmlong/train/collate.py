"""Samples into model inputs: tokenized by the processor, loss on the answer span only, and
packed into one row whose samples keep their own positions.

Packing follows what transformers 5.x needs to keep packed Qwen2.5-VL samples apart
(shared/NOTES.md, Packing): `position_ids` of shape (4, 1, L) where row 0 holds text positions
restarting at 0 for every sample and rows 1-3 each sample's own M-RoPE positions (the
model's `get_rope_index` run on that sample alone); call the model with
`attention_mask=None` and `use_cache=False`. The first token of every sample carries no
label, so nothing is predicted across a boundary.
"""

from __future__ import annotations

from typing import Any

from mmlong.messages import resolve_images
from mmlong.train.samples import Sample

IGNORE = -100


def encode(sample: Sample, processor) -> dict[str, Any]:
    """Processor inputs of one sample (batch of one, tensors without the batch axis) with
    labels on [answer_start, answer_end) only. The processor's image bounds must be those the
    sample was counted with; a length mismatch is an error, never silently trained on."""
    import torch

    messages = resolve_images(sample.messages, sample.dataset)
    images = [e["image"] for m in messages if not isinstance(m["content"], str) for e in m["content"]
              if e.get("type") == "image"]
    images = [_rgb(im) for im in images]
    text = processor.apply_chat_template(messages, tokenize=False)
    out = processor(text=[text], images=images or None, return_tensors="pt")
    ids = out["input_ids"][0]
    if len(ids) != sample.total_tokens:
        raise ValueError(f"sample {sample.sample_id}: the processor gives {len(ids)} tokens where the sample counted "
                         f"{sample.total_tokens}; configure its min/max pixels as the dataset's token budget")
    labels = torch.full_like(ids, IGNORE)
    labels[sample.answer_start : sample.answer_end] = ids[sample.answer_start : sample.answer_end]
    encoded = {"input_ids": ids, "labels": labels, "mm_token_type_ids": out["mm_token_type_ids"][0]}
    if images:
        encoded["pixel_values"] = out["pixel_values"]
        encoded["image_grid_thw"] = out["image_grid_thw"]
    return encoded


def _rgb(image):
    from PIL import Image

    if isinstance(image, Image.Image) and image.mode != "RGB":
        return image.convert("RGB")
    return image


def sample_positions(encoded: dict[str, Any], model) -> Any:
    """(4, L) positions of one sample: text positions, then its M-RoPE (t, h, w) positions.
    Shape: (4, L)."""
    import torch

    ids = encoded["input_ids"][None]
    rope, _ = model.model.get_rope_index(
        ids, encoded["mm_token_type_ids"][None], image_grid_thw=encoded.get("image_grid_thw")
    )
    text = torch.arange(ids.shape[1], dtype=rope.dtype)[None, None]
    return torch.cat([text, rope], dim=0)[:, 0]


def pack_inputs(encoded: list[dict[str, Any]], model) -> dict[str, Any]:
    """One packed row of several encoded samples, for `model(**row, attention_mask=None,
    use_cache=False)`. Shapes: input_ids, labels (1, L); position_ids (4, 1, L)."""
    import torch

    labels = []
    for e in encoded:
        lab = e["labels"].clone()
        lab[0] = IGNORE  # never predict a sample's first token from the previous sample
        labels.append(lab)
    row = {
        "input_ids": torch.cat([e["input_ids"] for e in encoded])[None],
        "labels": torch.cat(labels)[None],
        "position_ids": torch.cat([sample_positions(e, model) for e in encoded], dim=1)[:, None],
        "mm_token_type_ids": torch.cat([e["mm_token_type_ids"] for e in encoded])[None],
    }
    with_images = [e for e in encoded if "pixel_values" in e]
    if with_images:
        row["pixel_values"] = torch.cat([e["pixel_values"] for e in with_images])
        row["image_grid_thw"] = torch.cat([e["image_grid_thw"] for e in with_images])
    return row
