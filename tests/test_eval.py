"""The evaluation harness on tiny models saved to disk and loaded through the real loading code,
and against loopback OpenAI-compatible servers: tasks, protocol, cache, resume, server
retries and errors, reports, the score contract."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from mmlong.eval.models import LocalModel, ServerModel
from mmlong.eval.run import choice, evaluate, needle_score, read_records
from mmlong.eval.score import JUDGE_PROMPT
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

        def cache_key(self):
            return local.cache_key()

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


def test_resume_retries_failures_and_mends_a_torn_line(local, tmp_path):
    class Flaky:
        """The real local model, whose first reply fails (a refusing server, say)."""
        name, batch_size, failed = local.name, 1, False

        def protocol(self):
            return local.protocol()

        def cache_key(self):
            return local.cache_key()

        def generate(self, prompts, n):
            if not Flaky.failed:
                Flaky.failed = True
                return [ConnectionError("refused")] + local.generate(prompts[1:], n)
            return local.generate(prompts, n)

    first = evaluate("needle-tiny", Flaky(), tmp_path / "run", NEEDLES, progress=False)
    assert first["summary"]["errors"] == 1
    path = tmp_path / "run" / "records.jsonl"
    with path.open("a", encoding="utf-8") as f:
        f.write('{"id": "cut off mid-wri')  # a write killed half-way
    again = evaluate("needle-tiny", local, tmp_path / "run", NEEDLES, progress=False)
    assert again["summary"]["errors"] == 0 and again["cache"] == {"hits": 0, "misses": 1}  # only the failure re-asked
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 9 and len(read_records(path)) == 9  # the torn line is gone, nothing after it lost
    assert {json.loads(line)["protocol"] for line in lines} == {again["protocol"]["sha256"]}

    class Retrained(Flaky):
        """Other weights under the same name: the cache must not answer for them."""

        def cache_key(self):
            return {**local.cache_key(), "sha256": "0" * 64}

    other = evaluate("needle-tiny", Retrained(), tmp_path / "other", NEEDLES, progress=False, cache=tmp_path / "run")
    assert other["cache"] == {"hits": 0, "misses": 8}


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
    md = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "## accuracy by evidence_sources" in md and "| Table |" in md  # breakdowns as tables, not only bars
    assert (tmp_path / "run" / "breakdown_pages.png").is_file() and len(p["model"]["chat_template_sha256"]) == 64
    small = evaluate("longdoc-vqa", local, tmp_path / "small", {**data, "longdoc.max_tokens": 300}, progress=False)
    assert all(r["prompt_tokens"] <= 300 for r in small["records"]) and small["records"][0]["pages_kept"] < 4
    three = evaluate("longdoc-vqa", local, tmp_path / "three", {**data, "longdoc.max_pages": 3}, progress=False)
    assert [r["pages_kept"] for r in three["records"]] == [3, 2, 3] and three["protocol"]["data"]["max_pages"] == 3
    concat = evaluate("longdoc-vqa", local, tmp_path / "concat", {**data, "longdoc.concat": 2}, progress=False)
    assert concat["records"][0]["prompt_tokens"] != report["records"][0]["prompt_tokens"]


def test_judge_extracts_answers_over_the_chat_api(local, benchmark, tmp_path):
    """extractor: judge sends each response with its question to a judge model (the benchmark's
    extraction prompt) and scores what the judge extracted."""
    def judge(body):
        question = body["messages"][1]["content"].split("Question:")[1].split("\n")[0]
        answer = {"What value is on page 3?": "22", "Who wrote it?": "Not answerable"}.get(question)
        text = f"Extracted answer: {answer}\nAnswer format: String" if answer else "Answer format: List"
        return 200, {}, completion(text), 0

    with ChatServer([], judge) as srv:
        data = {"longdoc.samples": str(benchmark / "samples.json"), "longdoc.documents": str(benchmark / "documents"),
                "longdoc.dpi": 24, "max_new_tokens": 4, "extractor": "judge", "judge_base_url": srv.url,
                "judge_model": "judge-m"}
        report = evaluate("longdoc-vqa", local, tmp_path / "run", data, progress=False)
        again = evaluate("longdoc-vqa", local, tmp_path / "again", data, progress=False, cache=tmp_path / "run")
    assert [body["messages"][0]["content"] for _, _, body in srv.received] == [JUDGE_PROMPT] * 3  # the re-run asked nothing
    assert [r["pred"] for r in report["records"]] == ["22", "Not answerable", "Failed to extract"]
    assert [r["score"] for r in report["records"]] == [1.0, 1.0, 0.0]
    assert [r["pred"] for r in again["records"]] == [r["pred"] for r in report["records"]]
    assert report["protocol"]["extractor"] == {"kind": "judge", "judge_model": "judge-m"}


def test_video_qa_and_vision_text_compression(local, tmp_path):
    make_video(tmp_path / "clip.mp4", 12, scene_seconds=6)
    (tmp_path / "q.json").write_text(json.dumps([{"video": "clip.mp4", "question": "Which colour comes first?",
                                                  "options": ["red", "green", "blue"], "answer": "A"}]))
    questions = {"video.questions": str(tmp_path / "q.json"), "video.fps": 0.5, "video.frames": "images"}
    video = evaluate("video-qa", local, tmp_path / "video", questions, progress=False)
    assert video["records"][0]["frames"] == 6 and video["protocol"]["data"]["fps"] == 0.5
    capped = evaluate("video-qa", local, tmp_path / "capped", {**questions, "video.max_frames": 4}, progress=False,
                      cache=tmp_path / "video")
    assert capped["records"][0]["frames"] == 4 and capped["records"][0]["prompt_tokens"] < video["records"][0]["prompt_tokens"]
    native = {**questions, "video.frames": "video"}  # Qwen2.5-VL video input: two frames a token grid
    with ChatServer([], lambda body: (200, {}, completion("B"), 0)) as srv:
        served = evaluate("video-qa", ServerModel(srv.url, "m"), tmp_path / "served", native, progress=False,
                          cache=tmp_path / "video")
    parts = srv.received[0][2]["messages"][-1]["content"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(urls) == 6 and all(u.startswith("data:image/") for u in urls)  # the video's frames, in order
    assert served["records"][0]["pred"] == "B"
    assert served["records"][0]["prompt_tokens"] < video["records"][0]["prompt_tokens"]  # fewer vision tokens
    if importlib.util.find_spec("torchvision") is None:  # the local processor's video part needs torchvision
        refused = evaluate("video-qa", local, tmp_path / "refused", native, progress=False, cache=tmp_path / "video")
        assert "torchvision" in refused["records"][0]["error"]
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
    from mmlong.cli import main

    assert main(["eval", "--from", str(tmp_path / "first" / "report.json"), "--out", str(tmp_path / "second"),
                 "--no-progress"]) == 0
    second = json.loads((tmp_path / "second" / "report.json").read_text(encoding="utf-8"))
    assert [r["response"] for r in second["records"]] == [r["response"] for r in first["records"]]
    same = lambda p: {**p, "sha256": None, "data": {k: v for k, v in p["data"].items() if k != "dataset"}}  # noqa: E731
    # (the haystack is ingested anew under --out, so the dataset path and the protocol's hash differ)
    assert same(second["protocol"]) == same(first["protocol"])


def test_the_cache_key_sees_video_frames_and_their_sampling():
    """Two prompts that differ only in a video's frames (or its fps) never share a cached reply."""
    from mmlong.eval.cache import prompt_key

    def prompt(frames, fps=1.0):
        return [{"role": "user", "content": [{"type": "video", "video": frames, "sample_fps": fps},
                                             {"type": "text", "text": "What happens?"}]}]

    a, b = ["data:image/png;base64,AAA", "data:image/png;base64,BBB"], ["data:image/png;base64,AAA", "data:image/png;base64,CCC"]
    keys = {prompt_key("m", prompt(a), {}), prompt_key("m", prompt(b), {}), prompt_key("m", prompt(a, 2.0), {})}
    assert len(keys) == 3 and prompt_key("m", prompt(list(a)), {}) in keys
