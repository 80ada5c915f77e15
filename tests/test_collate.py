"""Packed samples keep their own positions: a packed row computes what each sample alone does.

A tiny Qwen2.5-VL (random weights, the real Qwen vocabulary size so the processor's token ids
fit) is saved with save_pretrained and loaded back through from_pretrained.
"""

from __future__ import annotations

import pytest
import torch

from mmlong.train.collate import IGNORE, Collator, encode, pack_row
from mmlong.train.positions import rope_index, sample_positions
from mmlong.train.processor import build_processor


def forward(model, row):
    with torch.no_grad():
        return model.model(input_ids=row["input_ids"][None], position_ids=row["position_ids"][:, None],
                           pixel_values=row.get("pixel_values"), image_grid_thw=row.get("image_grid_thw"),
                           attention_mask=None, use_cache=False).last_hidden_state[0]


def test_encode_labels_only_the_answer(page_samples):
    proc = build_processor(page_samples[0].budget)
    for s in page_samples:
        e = encode(s, proc)
        assert len(e["input_ids"]) == s.total_tokens
        kept = (e["labels"] != IGNORE).nonzero().flatten().tolist()
        assert kept == list(range(s.answer_start, s.answer_end))
        assert proc.tokenizer.decode(e["input_ids"][kept]) == "1<|im_end|>"


def test_positions_without_the_model_equal_get_rope_index(page_samples, tiny_vlm):
    proc = build_processor(page_samples[0].budget)
    for s in page_samples:
        e = encode(s, proc)
        ours = rope_index(e["mm_token_type_ids"].tolist(), e["image_grid_thw"].tolist())
        theirs, _ = tiny_vlm.model.get_rope_index(e["input_ids"][None], e["mm_token_type_ids"][None],
                                                  image_grid_thw=e["image_grid_thw"])
        assert torch.equal(ours, theirs[:, 0])
    # a video grid and a second image, with fractional seconds per grid
    types = [0] * 3 + [2] * (3 * 2 * 3) + [0] * 2 + [1] * (2 * 2) + [0] * 4
    ids = torch.zeros(1, len(types), dtype=torch.long)
    video, image = torch.tensor([[3, 4, 6]]), torch.tensor([[1, 4, 4]])
    theirs, _ = tiny_vlm.model.get_rope_index(ids, torch.tensor([types]), image_grid_thw=image, video_grid_thw=video,
                                              second_per_grid_ts=torch.tensor([1.5]))
    assert torch.equal(rope_index(types, image.tolist(), video.tolist(), [1.5]), theirs[:, 0])


def test_packed_row_equals_each_sample_alone(page_samples, tiny_vlm):
    proc = build_processor(page_samples[0].budget)
    encoded = [encode(s, proc) for s in page_samples]
    row = pack_row(encoded)
    assert row["position_ids"].shape == (4, sum(s.total_tokens for s in page_samples))
    packed = forward(tiny_vlm, row)
    start = 0
    for e in encoded:
        alone = forward(tiny_vlm, {**e, "position_ids": sample_positions(e)})
        n = len(e["input_ids"])
        assert torch.allclose(packed[start : start + n], alone, atol=1e-5), (packed[start : start + n] - alone).abs().max()
        start += n
    firsts = [sum(len(e["input_ids"]) for e in encoded[:i]) for i in range(len(encoded))]
    assert all(row["labels"][f] == IGNORE for f in firsts)
    assert (row["position_ids"][0, firsts] == 0).all()


def test_positions_restart_matter(page_samples, tiny_vlm):
    """Without per-sample positions the second sample reads the first one: the check above can fail."""
    proc = build_processor(page_samples[0].budget)
    encoded = [encode(s, proc) for s in page_samples[:2]]
    row = pack_row(encoded)
    n0 = len(encoded[0]["input_ids"])
    flat = {**row, "position_ids": torch.arange(len(row["input_ids"])).expand(4, -1)}
    wrong = forward(tiny_vlm, flat)
    alone = forward(tiny_vlm, {**encoded[1], "position_ids": sample_positions(encoded[1])})
    assert not torch.allclose(wrong[n0:], alone, atol=1e-3)


def test_batches_of_padded_rows_stay_isolated(page_samples, tiny_vlm):
    proc = build_processor(page_samples[0].budget)
    batch = Collator(proc)([[page_samples[0], page_samples[1]], [page_samples[2]]])
    assert batch["input_ids"].shape[0] == 2 and batch["position_ids"].shape[:2] == (4, 2)
    with torch.no_grad():
        both = tiny_vlm.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                              pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"],
                              attention_mask=None, use_cache=False).last_hidden_state
    e = encode(page_samples[2], proc)
    alone = forward(tiny_vlm, {**e, "position_ids": sample_positions(e)})
    assert torch.allclose(both[1, : len(e["input_ids"])], alone, atol=1e-5)
    assert batch["label_tokens"] == sum(s.answer_end - s.answer_start for s in page_samples)


def test_a_processor_with_other_bounds_is_refused(page_samples):
    from mmlong import tokens as tk

    with pytest.raises(ValueError, match="pixel budget"):
        encode(page_samples[1], build_processor(tk.PixelBudget(3136 * 4, 12845056)))


def test_sdpa_packed_equals_sdpa_without_building_a_mask(page_samples, tiny_vlm):
    """`sdpa_packed` (the training default) runs each packed sample alone: logits and gradients
    equal transformers' masked `sdpa`, no (L x L) mask is built, and cached decoding (which
    falls back to `sdpa`) generates the same tokens."""
    from transformers.masking_utils import sdpa_mask

    from mmlong.train.attention import packed_mask
    from mmlong.train.model import ModelSettings, build_model

    assert tiny_vlm.config.text_config._attn_implementation == "sdpa_packed"
    reference = build_model(ModelSettings(path=tiny_vlm.config._name_or_path, attn_implementation="sdpa"))
    ours = build_model(ModelSettings(path=tiny_vlm.config._name_or_path))
    batch = Collator(build_processor(page_samples[0].budget))([[page_samples[0], page_samples[1]], [page_samples[2]]])
    inputs = {k: batch[k] for k in ("input_ids", "position_ids", "mm_token_type_ids", "pixel_values", "image_grid_thw")}
    grads = []
    for model in (reference, ours):
        logits = model(**inputs, attention_mask=None, use_cache=False).logits
        logits[batch["labels"] != IGNORE].float().logsumexp(-1).sum().backward()
        grads.append((logits.detach(), model.model.language_model.layers[0].self_attn.q_proj.weight.grad.clone()))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-5)
    n = batch["input_ids"].shape[1]
    assert packed_mask(2, n, n) is None and sdpa_mask(2, n, n, allow_is_causal_skip=False).shape == (2, 1, n, n)
    prompt = batch["input_ids"][1:, :12]
    outs = [m.eval().generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False,
                              use_cache=True)
            for m in (reference, ours)]
    assert torch.equal(outs[0], outs[1])
