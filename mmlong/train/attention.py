"""`sdpa_packed`: variable-length attention for packed rows without FlashAttention.

transformers' `sdpa` keeps packed samples apart with a block-diagonal (B, 1, L, L) mask built
from the text position ids, so every packed row pays attention over its whole length and holds
an L x L mask (16 GiB of booleans at 128K). `sdpa_packed` cuts each row where its text
positions restart and runs causal SDPA on every sample alone, as flash-attention's varlen
kernel does on GPU: the cost is the sum of the samples' squared lengths, no mask is built, and
the result equals `sdpa`'s. Anything else (a padding mask, a KV cache, the vision tower's
non-causal blocks) goes to transformers' own `sdpa`. Pass `attn_implementation="sdpa_packed"`
to `ModelSettings` (importing this module registers it)."""

from __future__ import annotations

NAME = "sdpa_packed"


def segment_bounds(positions) -> list[int]:
    """Where the samples of one packed row start, and its length: the indices where a text
    position does not follow the previous one. Shape: positions (L,)."""
    import torch

    starts = torch.nonzero(positions[1:] != positions[:-1] + 1).flatten() + 1
    return [0, *starts.tolist(), int(positions.shape[0])]


def packed_attention(module, query, key, value, attention_mask, position_ids=None, is_causal=None, **kwargs):
    """The attention of every packed sample on its own. Shapes: query (B, H, L, D), key and
    value (B, Hkv, L, D), position_ids (B, L) -> (B, L, H, D), None."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if attention_mask is not None or position_ids is None or not causal or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, is_causal=is_causal, **kwargs)
    scale, dropout = kwargs.get("scaling"), kwargs.get("dropout", 0.0)
    gqa = query.shape[1] != key.shape[1]
    rows = []
    for b in range(query.shape[0]):
        bounds = segment_bounds(position_ids[b])
        rows.append(torch.cat([
            torch.nn.functional.scaled_dot_product_attention(
                query[b : b + 1, :, s:e], key[b : b + 1, :, s:e], value[b : b + 1, :, s:e], dropout_p=dropout,
                is_causal=e - s > 1, scale=scale, enable_gqa=gqa)
            for s, e in zip(bounds[:-1], bounds[1:])], dim=2))
    return torch.cat(rows).transpose(1, 2).contiguous(), None


def packed_mask(batch_size: int, q_length: int, kv_length: int, attention_mask=None, **kwargs):
    """No mask for a packed prefill without padding (the attention cuts rows itself); else
    the mask `sdpa` would get."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None and q_length == kv_length and not kwargs.get("kv_offset", 0):
        return None
    return sdpa_mask(batch_size, q_length, kv_length, attention_mask=attention_mask, **kwargs)


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, packed_attention)
    AttentionMaskInterface.register(NAME, packed_mask)
