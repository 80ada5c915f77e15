"""The evaluation harness on tiny models saved to disk and loaded through the real loading code,
and against loopback OpenAI-compatible servers: tasks, protocol, cache, resume, server
retries and errors, reports, the score contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmlong.eval.models import LocalModel, ServerModel
from mmlong.eval.run import choice, evaluate, needle_score, read_records
from mmlong.eval.serve import respond
from tests.conftest import ROOT, ChatServer, completion, make_video, write_pdf

HANDBOOK = ROOT / "examples" / "debian-handbook"
NEEDLES = {"needles.lengths": [128, 256], "needles.depths": [0.0, 1.0], "needles.per_cell": 2,
           "needles.haystack": [str(HANDBOOK / "sect.network-config.html")]}


@pytest.fixture(scope="module")
def local(tiny_vlm, tmp_path_factory):
    """The tiny model as a local eval model (saved, then loaded from its folder)."""
    from mmlong.train.export import export_hf
    from mmlong.train.processor import build_processor

    folder = export_hf(tiny_vlm, build_processor(), tmp_path_factory.mktemp("model") / "hf")
    return LocalModel(str(folder))


def serving(model: LocalModel):
    """A responder that answers chat completions with `model` as `mmlong serve` does."""
    def answer(body):
        status, reply = respond(model, body)
        return status, {}, json.dumps(reply).encode(), 0
    return answer


def test_scoring_rules_of_needles_and_choices():
    assert needle_score(1234567, "The number is 1234567.") == 1.0 and needle_score(1234567, "123456") == 0.0
    assert needle_score([11, 22], "22 and 33") == 0.5
    assert [choice(r) for r in ["B", "(C)", "Answer: d", "the answer is A.", "none"]] == ["B", "C", "D", "A", ""]


def test_local_and_server_give_the_same_predictions(local, tmp_path):
    here = evaluate("needle-tiny", local, tmp_path / "local", NEEDLES, progress=False)
    with ChatServer(respond=serving(local)) as srv:
        there = evaluate("needle-tiny", ServerModel(srv.url, "tiny", concurrency=2), tmp_path / "server", NEEDLES,
                         progress=False)
        assert 1 <= srv.peak <= 2
    assert len(here["records"]) == 8 and [r["response"] for r in here["records"]] == [r["response"] for r in there["records"]]
    report = json.loads((tmp_path / "local" / "report.json").read_text())
    p = report["protocol"]
    assert p["model"]["sha256"] == local.sha256 and p["data"]["lengths"] == [128, 256] and p["decoding"]["max_new_tokens"]
    assert all(r["prompt_tokens"] <= r["length"] for r in report["records"])
    assert set(report["summary"]["grid"]) == {"128", "256"}
    assert {"report.md", "report.html", "needle_heatmap.png", "accuracy_by_length.png"} <= {f.name for f in (tmp_path / "local").iterdir()}


def test_mmlong_serve_answers_as_the_local_model(local, tmp_path):
    import requests

    from mmlong.eval.serve import ChatServer as Serve

    here = evaluate("needle-tiny", local, tmp_path / "local", NEEDLES, progress=False)
    with Serve(local) as srv:
        assert requests.get(f"{srv.url}/models", timeout=10).json()["data"][0]["id"] == local.name
        bad = requests.post(f"{srv.url}/chat/completions", data=b"{nope", timeout=10)
        assert bad.status_code == 400 and "not JSON" in bad.json()["error"]["message"]
        there = evaluate("needle-tiny", ServerModel(srv.url, "tiny", concurrency=3), tmp_path / "server", NEEDLES,
                         progress=False)
    assert [r["response"] for r in here["records"]] == [r["response"] for r in there["records"]]


def test_cached_rerun_and_resume_after_interruption(local, tmp_path):
    calls = []

    class Counting:
        """The real local model, counting what it is asked; it stops the run after two calls."""
        name, batch_size = local.name, 1

        def protocol(self):
            return local.protocol()

        def generate(self, prompts, n):
            calls.append(len(prompts))
            if len(calls) == 3:
                raise KeyboardInterrupt
            return local.generate(prompts, n)

    with pytest.raises(KeyboardInterrupt):
        evaluate("needle-tiny", Counting(), tmp_path / "run", NEEDLES, progress=False)
    assert len(read_records(tmp_path / "run" / "records.jsonl")) == 2  # kept
    report = evaluate("needle-tiny", local, tmp_path / "run", NEEDLES, progress=False)
    ids = [r["id"] for r in read_records(tmp_path / "run" / "records.jsonl")]
    assert len(ids) == len(set(ids)) == 8 and report["cache"]["misses"] == 6
    again = evaluate("needle-tiny", Counting(), tmp_path / "again", NEEDLES, progress=False, cache=tmp_path / "run")
    assert again["cache"] == {"hits": 8, "misses": 0} and len(calls) == 3  # nothing asked of the model
    assert [r["response"] for r in again["records"]] == [r["response"] for r in report["records"]]
    with pytest.raises(ValueError, match="another protocol"):
        evaluate("needle-tiny", local, tmp_path / "run", {**NEEDLES, "needles.seed": 99}, progress=False)


def test_server_retries_timeouts_and_a_malformed_reply(tmp_path):
    script = [(500, {}, b"busy", 0), (200, {}, b"{not json", 0), (200, {}, completion("7"), 1.5)]
    with ChatServer(script, lambda body: (200, {}, completion("1234567"), 0)) as srv:
        model = ServerModel(srv.url, "m", concurrency=1, timeout=0.7, retries=2, backoff=0.01)
        report = evaluate("needle-tiny", model, tmp_path / "run", NEEDLES, progress=False)
    records = report["records"]
    errors = [r for r in records if r.get("error")]
    assert len(errors) == 1 and "not a chat completion" in errors[0]["error"]  # named, and the run went on
    assert len(records) == 8 and report["summary"]["errors"] == 1
    assert sum(r["response"] == "1234567" for r in records) == 7  # the 500 and the timeout were retried
    with pytest.raises(Exception, match="127.0.0.1:1"):
        ServerModel("http://127.0.0.1:1/v1", "m", retries=0).client.complete([{"role": "user", "content": "hi"}])


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    """An MMLongBench-Doc-format folder: two generated PDFs and questions about them."""
    d = tmp_path_factory.mktemp("bench")
    (d / "documents").mkdir()
    write_pdf(d / "documents" / "a.pdf", [f"Alpha page {p}. The value is {p * 11}." for p in range(4)])
    write_pdf(d / "documents" / "b.pdf", ["Beta page one.", "Beta page two."])
    rows = [
        {"doc_id": "a.pdf", "doc_type": "Brochure", "question": "What value is on page 3?", "answer": "22",
         "evidence_pages": "[3]", "evidence_sources": "['Pure-text (Plain-text)']", "answer_format": "Int"},
        {"doc_id": "b.pdf", "doc_type": "Guidebook", "question": "Who wrote it?", "answer": "Not answerable",
         "evidence_pages": "[]", "evidence_sources": "[]", "answer_format": "None"},
        {"doc_id": "a.pdf", "doc_type": "Brochure", "question": "Which pages?", "answer": "['1', '2']",
         "evidence_pages": "[1, 2]", "evidence_sources": "['Table']", "answer_format": "List"},
    ]
    (d / "samples.json").write_text(json.dumps(rows))
    return d


def test_longdoc_vqa_whole_documents_with_budgets(local, benchmark, tmp_path):
    data = {"longdoc.samples": str(benchmark / "samples.json"), "longdoc.documents": str(benchmark / "documents"),
            "longdoc.dpi": 24, "max_new_tokens": 4}
    report = evaluate("longdoc-vqa", local, tmp_path / "run", data, progress=False)
    s, p = report["summary"], report["protocol"]
    assert s["items"] == 3 and {"acc", "f1", "breakdowns"} <= set(s)
    assert {"Single-page", "Cross-page", "Unanswerable"} <= set(s["breakdowns"]["pages"])
    assert [r["pages_kept"] for r in report["records"]] == [4, 2, 4] and p["data"]["dpi"] == 24
    small = evaluate("longdoc-vqa", local, tmp_path / "small", {**data, "longdoc.max_tokens": 300}, progress=False)
    assert all(r["prompt_tokens"] <= 300 for r in small["records"]) and small["records"][0]["pages_kept"] < 4
    concat = evaluate("longdoc-vqa", local, tmp_path / "concat", {**data, "longdoc.concat": 2}, progress=False)
    assert concat["records"][0]["prompt_tokens"] != report["records"][0]["prompt_tokens"]


def test_video_qa_and_vision_text_compression(local, tmp_path):
    make_video(tmp_path / "clip.mp4", 12, scene_seconds=6)
    (tmp_path / "q.json").write_text(json.dumps([{"video": "clip.mp4", "question": "Which colour comes first?",
                                                  "options": ["red", "green", "blue"], "answer": "A"}]))
    video = evaluate("video-qa", local, tmp_path / "video", {"video.questions": str(tmp_path / "q.json"), "video.fps": 0.5},
                     progress=False)
    assert video["records"][0]["frames"] == 6 and video["protocol"]["data"]["fps"] == 0.5
    vtc = evaluate("vtc", local, tmp_path / "vtc", {"vtc.needles.haystack": NEEDLES["needles.haystack"],
                                                    "vtc.needles.lengths": [512], "vtc.needles.depths": [0.5],
                                                    "vtc.needles.per_cell": 1}, progress=False)
    assert set(vtc["summary"]["by_context"]) == {"text", "rendered"} and vtc["summary"]["compression"] > 1


def test_bad_inputs_are_clear_errors(local, benchmark, tmp_path, capsys):
    from mmlong.cli import main

    (tmp_path / "bad.json").write_text(json.dumps({"not": "a list"}))
    with pytest.raises(ValueError, match="bad.json: not an MMLongBench-Doc samples file"):
        evaluate("longdoc-vqa", local, tmp_path / "a", {"longdoc.samples": str(tmp_path / "bad.json"),
                                                        "longdoc.documents": str(benchmark / "documents")}, progress=False)
    with pytest.raises(ValueError, match="no document for doc_id"):
        evaluate("longdoc-vqa", local, tmp_path / "b", {"longdoc.samples": str(benchmark / "samples.json"),
                                                        "longdoc.documents": str(tmp_path)}, progress=False)
    code = main(["eval", "needle-tiny", "--server", "http://127.0.0.1:1/v1", "--out", str(tmp_path / "c"),
                 "--haystack", str(tmp_path / "missing.html")])
    assert code == 2 and "missing.html" in capsys.readouterr().err


def test_score_contract_and_from_report(local, tmp_path):
    preds = [{"doc_id": "x", "question": "q", "answer": "12", "answer_format": "Int", "pred": "12.0"},
             {"doc_id": "x", "question": "q", "answer": "Not answerable", "answer_format": "None", "pred": "Not answerable"},
             {"doc_id": "x", "question": "q", "answer": "Berlin", "answer_format": "Str", "pred": "Munich"}]
    (tmp_path / "p.json").write_text(json.dumps(preds))
    done = subprocess.run([sys.executable, "-m", "mmlong.cli", "score", "mmlongbench-doc", str(tmp_path / "p.json"), "--json"],
                          capture_output=True, text=True)
    out = json.loads(done.stdout)
    assert out["scores"] == [1.0, 1.0, 0.0] and out["acc"] == pytest.approx(2 / 3) and "f1" in out
    first = evaluate("needle-tiny", local, tmp_path / "first", NEEDLES, progress=False)
    from mmlong.eval.run import rerun

    second = rerun(tmp_path / "first" / "report.json", tmp_path / "second", progress=False)
    assert [r["response"] for r in second["records"]] == [r["response"] for r in first["records"]]
    same = lambda p: {**p, "data": {k: v for k, v in p["data"].items() if k != "dataset"}}  # noqa: E731  (ingested anew under --out)
    assert same(second["protocol"]) == same(first["protocol"])
