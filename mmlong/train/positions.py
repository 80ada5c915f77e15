"""Qwen2.5-VL M-RoPE positions without the model: a pure function of the token types and the
vision grids, so DataLoader workers can compute them (the model's `get_rope_index` needs the
model object). Tested equal to `model.model.get_rope_index`.

The rule (transformers 5.x): positions run over groups of equal `mm_token_type_ids`
(0 text, 1 image, 2 video). A text group of n tokens gets positions cur..cur+n-1 on all three
axes. A vision group takes the next (t, h, w) grid: its merged tokens get t = cur + k * interval
(interval = tokens_per_second * seconds per grid for videos, 1 for images), h = cur + row,
w = cur + column, t-major; the text after it continues at cur + max(h, w) / merge.
"""

from __future__ import annotations

import itertools
from typing import Any


def rope_index(
    mm_token_type_ids: list[int],
    image_grid_thw: list[list[int]] | None = None,
    video_grid_thw: list[list[int]] | None = None,
    second_per_grid_ts: list[float] | None = None,
    spatial_merge_size: int = 2,
    tokens_per_second: float = 2,
):
    """(3, L) M-RoPE positions of one sample. Shape: (3, L), int64."""
    import torch

    images = iter(image_grid_thw or [])
    videos = iter(video_grid_thw or [])
    seconds = iter(second_per_grid_ts or [])
    chunks, cur = [], 0
    for kind, group in itertools.groupby(mm_token_type_ids):
        n = len(list(group))
        if kind == 0:
            chunks.append(torch.arange(cur, cur + n).expand(3, -1))
            cur += n
            continue
        t, h, w = next(images) if kind == 1 else next(videos)
        interval = tokens_per_second * next(seconds, 1.0) if kind == 2 else 1
        gh, gw = h // spatial_merge_size, w // spatial_merge_size
        if t * gh * gw != n:
            raise ValueError(f"a vision run of {n} tokens does not match its grid {t}x{h}x{w} (merge {spatial_merge_size})")
        tt = (torch.arange(t) * interval).long() + cur
        grid = torch.meshgrid(tt, torch.arange(gh) + cur, torch.arange(gw) + cur, indexing="ij")
        chunks.append(torch.stack(grid).reshape(3, -1))
        cur += max(h, w) // spatial_merge_size
    return torch.cat(chunks, dim=1) if chunks else torch.zeros(3, 0, dtype=torch.long)


def sample_positions(encoded: dict[str, Any], spatial_merge_size: int = 2, tokens_per_second: float = 2):
    """Positions of one encoded sample for packing: text positions 0..L-1, then its M-RoPE
    (t, h, w) positions. Shape: (4, L)."""
    import torch

    grid = encoded.get("image_grid_thw")
    vgrid = encoded.get("video_grid_thw")
    rope = rope_index(encoded["mm_token_type_ids"].tolist(), grid.tolist() if grid is not None else None,
                      vgrid.tolist() if vgrid is not None else None, encoded.get("second_per_grid_ts"),
                      spatial_merge_size, tokens_per_second)
    text = torch.arange(rope.shape[1])[None]
    return torch.cat([text, rope], dim=0)
