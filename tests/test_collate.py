"""Packed samples keep their own positions: a packed row computes what each sample alone does.

A tiny Qwen2.5-VL (random weights, the real Qwen vocabulary size so the processor's token ids
fit) is saved with save_pretrained and loaded back through from_pretrained.
"""

from __future__ import annotations


import pytest
import torch

from mmlong.train.collate import IGNORE, encode, pack_inputs, sample_positions
from mmlong.train.qa import QA, Segment
from mmlong.train.samples import build_sample
from mmlong import store
from mmlong.ingest import IngestOptions, ingest
from mmlong.ingest.pdf import PdfOptions
from tests.conftest import write_pdf


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
                         tie_word_embeddings=True),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                           temporal_patch_size=2, spatial_merge_size=2, window_size=112, fullatt_block_indexes=[1],
                           tokens_per_second=2),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
    )
    path = tmp_path_factory.mktemp("tiny") / "qwen25vl-tiny"
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(path)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, attn_implementation="sdpa")
    return model.eval()


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    d = tmp_path_factory.mktemp("collate")
    for k, pages in enumerate([2, 3, 1]):
        write_pdf(d / f"d{k}.pdf", [f"Doc {k} page {p}. Short text." for p in range(pages)])
    opts = IngestOptions(pdf=PdfOptions(dpi=10, min_pixels=None))  # pages of ~83x117 px: a few tokens each
    ingest([str(d)], d / "ds", options=opts, workers=1, progress=False)
    out = []
    for doc in store.iter_documents(d / "ds", images=False):
        qa = QA("Which page says Short text?", 1, "Int", [1], "extract-single", "test", "Short text")
        out.append(build_sample(doc, qa, str(d / "ds"), "test", Segment(0, doc.num_pages)))
    return out


def test_encode_labels_only_the_answer(samples, hf_processor):
    proc = hf_processor()
    for s in samples:
        e = encode(s, proc)
        assert len(e["input_ids"]) == s.total_tokens
        kept = (e["labels"] != IGNORE).nonzero().flatten().tolist()
        assert kept == list(range(s.answer_start, s.answer_end))
        assert proc.tokenizer.decode(e["input_ids"][kept]) == "1<|im_end|>"


def test_packed_row_equals_each_sample_alone(samples, hf_processor, tiny_model):
    proc = hf_processor()
    encoded = [encode(s, proc) for s in samples]
    row = pack_inputs(encoded, tiny_model)
    assert row["position_ids"].shape == (4, 1, sum(s.total_tokens for s in samples))
    with torch.no_grad():
        packed = tiny_model.model(input_ids=row["input_ids"], position_ids=row["position_ids"],
                                  pixel_values=row["pixel_values"], image_grid_thw=row["image_grid_thw"],
                                  attention_mask=None, use_cache=False).last_hidden_state[0]
        start = 0
        for e in encoded:
            alone = tiny_model.model(input_ids=e["input_ids"][None], position_ids=sample_positions(e, tiny_model)[:, None],
                                     pixel_values=e["pixel_values"], image_grid_thw=e["image_grid_thw"],
                                     attention_mask=None, use_cache=False).last_hidden_state[0]
            n = len(e["input_ids"])
            assert torch.allclose(packed[start : start + n], alone, atol=1e-5), (packed[start : start + n] - alone).abs().max()
            start += n
    firsts = [sum(len(e["input_ids"]) for e in encoded[:i]) for i in range(len(encoded))]
    assert all(row["labels"][0, f] == IGNORE for f in firsts)
    assert (row["position_ids"][0, 0, firsts] == 0).all()


def test_positions_restart_matter(samples, hf_processor, tiny_model):
    """Without per-sample positions the second sample reads the first one: the check above can fail."""
    proc = hf_processor()
    encoded = [encode(s, proc) for s in samples[:2]]
    row = pack_inputs(encoded, tiny_model)
    n0 = len(encoded[0]["input_ids"])
    flat = torch.arange(row["input_ids"].shape[1])[None, None].expand(4, 1, -1)
    with torch.no_grad():
        wrong = tiny_model.model(input_ids=row["input_ids"], position_ids=flat, pixel_values=row["pixel_values"],
                                 image_grid_thw=row["image_grid_thw"], attention_mask=None, use_cache=False).last_hidden_state[0]
        alone = tiny_model.model(input_ids=encoded[1]["input_ids"][None], position_ids=sample_positions(encoded[1], tiny_model)[:, None],
                                 pixel_values=encoded[1]["pixel_values"], image_grid_thw=encoded[1]["image_grid_thw"],
                                 attention_mask=None, use_cache=False).last_hidden_state[0]
    assert not torch.allclose(wrong[n0:], alone, atol=1e-3)


def test_a_processor_with_other_bounds_is_refused(samples, hf_processor):
    with pytest.raises(ValueError, match="token budget"):
        encode(samples[1], hf_processor(3136 * 4, 12845056))
