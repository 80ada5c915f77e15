"""Ingest of the real MMLongBench-Doc PDFs in ../shared (skipped when absent)."""

from __future__ import annotations

import ast
import json
import re

import pymupdf
import pytest

from mmlong import store
from mmlong import tokens as tk
from mmlong.ingest import ingest
from mmlong.messages import conversation_tokens, to_messages
from mmlong.schema import PAGE_IMAGE, TEXT
from tests.conftest import SHARED_DOC

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def samples():
    return json.loads((SHARED_DOC / "samples.json").read_text())


def test_all_documents_text_layer(tmp_path, samples):
    pdfs = sorted((SHARED_DOC / "documents").glob("*.pdf"))
    report = ingest([str(SHARED_DOC / "documents")], tmp_path / "text", preset="pdf-text", progress=False)
    assert report.ok and len(report.ingested) == len(pdfs) == 30
    docs = {d.source.rsplit("/", 1)[-1]: d for d in store.iter_documents(tmp_path / "text")}
    for pdf in pdfs:
        doc = docs[pdf.name]
        with pymupdf.open(pdf) as ref:
            assert doc.num_pages == ref.page_count
        assert all(it.kind == TEXT and 0 <= it.page < doc.num_pages for it in doc.items)
        assert doc.text_tokens == sum(it.tokens for it in doc.items)
    assert sum(d.text_tokens > 0 for d in docs.values()) >= 20  # six are scans or slides without a text layer
    assert docs["bigdatatrends-120723191058-phpapp02_95.pdf"].items == []  # image-only slides
    for s in samples:  # every evidence page is a page of the document, or one of its page labels
        doc = docs[s["doc_id"]]
        labels = doc.metadata["page_labels"] or []
        for p in ast.literal_eval(s["evidence_pages"]):
            assert 1 <= p <= doc.num_pages or str(p) in labels, (s["doc_id"], p)
    # the San Francisco guide excerpt is cited by its printed page numbers: label 289 is page 8
    assert docs["san-francisco-11-contents.pdf"].metadata["page_labels"].index("289") == 7


def test_interleaved_and_evidence_messages(tmp_path, samples, hf_processor, qwen_vl_utils):
    sample = next(s for s in samples if s["doc_id"] == "0e94b4197b10096b1f4c699701570fbf.pdf")
    pdf = SHARED_DOC / "documents" / sample["doc_id"]
    report = ingest([str(pdf)], tmp_path / "ds", preset="pdf-budget", progress=False)
    assert report.ok
    doc = next(iter(store.iter_documents(tmp_path / "ds")))
    pages = [it for it in doc.items if it.kind == PAGE_IMAGE]
    assert len(pages) == doc.num_pages and all(it.tokens <= 1280 for it in pages)
    evidence = {p - 1 for p in ast.literal_eval(sample["evidence_pages"])}
    messages = to_messages(doc, question=sample["question"], pages=evidence, budget=tk.PixelBudget(3136, 1003520))
    proc = hf_processor(3136, 1003520)
    images, _ = qwen_vl_utils.process_vision_info(messages)
    ids = proc(text=[proc.apply_chat_template(messages, tokenize=False)], images=images, return_tensors="np")["input_ids"][0]
    assert conversation_tokens(messages) == len(ids)


def test_synth_on_real_pdfs_has_valid_anchors_and_evidence(tmp_path):
    from mmlong.samples import NOT_ANSWERABLE, read_samples
    from mmlong.synthesis.run import synth
    from mmlong.synthesis.template import TemplateWriter
    from mmlong.text import join_lines

    names = ["2312.10997v5.pdf", "watch_d.pdf", "san-francisco-11-contents.pdf", "05-03-18-political-release.pdf"]
    report = ingest([str(SHARED_DOC / "documents" / n) for n in names], tmp_path / "ds", preset="pdf-text", progress=False)
    assert report.ok
    synth(tmp_path / "ds", tmp_path / "s", TemplateWriter(per_kind=3), segments=2, seed=0)
    samples = read_samples(tmp_path / "s" / "samples.parquet")
    assert {s.source.rsplit("/", 1)[-1] for s in samples} == set(names)
    checked = 0
    for s in samples:
        pdf = pymupdf.open(s.source)
        first, last = s.segment
        assert 1 <= first <= last <= pdf.page_count
        assert all(part in s.question for part in re.findall(r'"([^"]+)"', s.anchor) or [s.anchor]), (s.anchor, s.question)
        answer = json.loads(s.answer)
        if answer == NOT_ANSWERABLE:
            assert s.evidence_pages == []
            continue
        assert s.evidence_pages and all(first <= p <= last for p in s.evidence_pages)
        page_text = lambda p: join_lines(pdf[p - 1].get_text())  # noqa: E731  (questions join line-break hyphens too)
        if s.kind == "section-start":
            assert [p for _, t, p in pdf.get_toc() if t.strip() == s.anchor.split('"')[1]] == [answer]
        elif s.kind == "sentence-page":
            assert s.anchor in page_text(answer)
            checked += 1
        elif s.kind in ("caption-text", "sentence-complete"):
            assert " ".join(str(answer).split()) in page_text(s.evidence_pages[0])
            checked += 1
    assert checked >= 5
