"""The LLM QA writer against a small OpenAI-compatible HTTP server the test runs on loopback.

The server only replays scripted replies (or, for the end-to-end run, answers from the page
range named in the prompt): it tests the client's protocol, retries, validation and cache.
"""

from __future__ import annotations

import json
import random
import re

import pytest

from mmlong import store
from mmlong.cli import main
from mmlong.samples import Segment, read_samples
from mmlong.synthesis.llm import LlmError, LlmWriter, parse_qas
from tests.conftest import ChatServer, completion

VALID = [
    {"question": "On which page is the caption of Figure 2?", "answer": 6, "answer_format": "Int", "evidence_pages": [6],
     "task": "extract-single", "anchor": "Figure 2"},
    {"question": "On which pages are Figures 1 and 2?", "answer": [2, 6], "answer_format": "List", "evidence_pages": [2, 6],
     "task": "extract-multi", "anchor": "Figures 1 and 2"},
    {"question": "How many figures are on pages 1-7?", "answer": 2, "answer_format": "Int", "evidence_pages": [2, 6],
     "task": "reasoning", "anchor": "pages 1-7"},
    {"question": "What is on page 40?", "answer": "x", "answer_format": "Str", "evidence_pages": [40],
     "task": "extract-single", "anchor": "page 40"},
    {"question": "What does Figure 9 show?", "answer": "Not answerable", "answer_format": "None", "evidence_pages": [],
     "task": "extract-single", "anchor": "Figure 9"},
]


def echo(body):
    """Answer about the first page of the range named in the prompt."""
    first, last = map(int, re.search(r"pages (\d+)-(\d+) of", body["messages"][0]["content"][-1]["text"]).groups())
    return 200, {}, completion(json.dumps([
        {"question": f"What is printed on page {first}?", "answer": "text", "answer_format": "Str",
         "evidence_pages": [first], "task": "extract-single", "anchor": f"page {first}"}])), 0


@pytest.fixture
def server(request):
    with ChatServer(request.param, echo) as srv:
        yield srv


SCRIPT = [
    (200, {}, completion("Sure! ```json\n[{\"question\": \"broken\""), 0),  # malformed JSON
    (429, {"Retry-After": "0"}, b"slow down", 0),                           # rate limited
    (200, {}, b"{}", 1.5),                                                  # too slow: a timeout
    (200, {}, completion("```json\n" + json.dumps(VALID) + "\n```"), 0),
]


@pytest.mark.parametrize("server", [SCRIPT], indirect=True)
def test_retries_validation_and_cache(server, report_dataset, report_doc, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "secret-key")
    writer = LlmWriter(server.url, "qwen-test", api_key_env="TEST_KEY", cache_dir=tmp_path / "cache", timeout=0.5,
                       backoff=0.01, questions=5)
    doc = store.load_document(report_dataset, report_doc.doc_id)  # with its page images, as synth reads it for this writer
    qas = writer.write(doc, Segment(0, 12), random.Random(0))
    assert [q.task for q in qas] == ["extract-single", "extract-multi", "reasoning", "extract-single"]  # page 40 dropped
    assert qas[0].answer == 6 and qas[1].evidence_pages == [2, 6] and qas[3].answer == "Not answerable"
    assert len(server.received) == 4
    path, auth, first = server.received[0]
    assert path == "/v1/chat/completions" and auth == "Bearer secret-key" and first["model"] == "qwen-test"
    parts = first["messages"][0]["content"]
    assert sum(p["type"] == "image_url" for p in parts) == 12
    assert parts[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert any(p.get("text", "").startswith("On page 1 the committee") for p in parts)
    corrected = server.received[1][2]["messages"]  # the malformed reply went back with the reason
    assert corrected[1]["role"] == "assistant" and "could not be used: no JSON list" in corrected[2]["content"]
    again = writer.write(doc, Segment(0, 12), random.Random(0))  # cached: nothing sent
    assert len(server.received) == 4 and [q.question for q in again] == [q.question for q in qas]


@pytest.mark.parametrize("server", [[(401, {}, b'{"error": "bad key"}', 0)]], indirect=True)
def test_refusals_are_clear_errors(server, report_doc):
    writer = LlmWriter(server.url, "m", backoff=0.01)
    with pytest.raises(LlmError, match="HTTP 401.*bad key"):
        writer.write(report_doc, Segment(0, 12), random.Random(0))


def test_parse_qas_reasons():
    with pytest.raises(ValueError, match="no JSON list"):
        parse_qas("I cannot help with that.", Segment(0, 5))
    with pytest.raises(ValueError, match="outside pages 1-5"):
        parse_qas(json.dumps([VALID[0]]), Segment(0, 5))
    with pytest.raises(ValueError, match="extract-multi with evidence pages"):
        parse_qas(json.dumps([{**VALID[1], "evidence_pages": [2]}]), Segment(0, 12))
    with pytest.raises(ValueError, match="the LLM writer needs"):
        LlmWriter()


@pytest.mark.parametrize("server", [[]], indirect=True)
def test_synth_command_with_the_llm_writer(server, report_dataset, tmp_path):
    code = main(["synth", str(report_dataset), "--out", str(tmp_path / "s"), "--writer", "llm", "--llm-base-url", server.url,
                 "--llm-model", "m", "--segments", "2", "--seed", "1"])
    assert code == 0
    samples = read_samples(tmp_path / "s" / "samples.parquet")
    assert samples and all(s.writer == "llm" for s in samples)
    for s in samples:
        assert s.segment[0] == s.evidence_pages[0] and s.answer == '"text"'
    sent = len(server.received)
    assert main(["synth", str(report_dataset), "--out", str(tmp_path / "s"), "--writer", "llm", "--llm-base-url", server.url,
                 "--llm-model", "m", "--segments", "2", "--seed", "1"]) == 0
    assert len(server.received) == sent  # the second run is served by the cache
