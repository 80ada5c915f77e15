"""`mmlong eval`: run a task on a model and write a report a researcher can put in a paper.

The report stores what decides the number (the protocol): the model (path and sha256 of its
files, chat template hash, or server and name), the task recipe as run, its data protocol (dpi,
pages kept, pixel bounds, frames, lengths ...), the decoding settings, the extractor and the
mmlong version; every record stores its own prompt's token count and task facts (pages kept,
frames, length, depth) and the protocol's hash (`protocol` = report `protocol.sha256`).
`mmlong eval --from REPORT.json` runs it again. Records are appended to records.jsonl as they
finish, so an interrupted run keeps them and resumes (records that failed are tried again);
responses are cached (cache.sqlite, keyed by the model's weights and settings, the prompt and
the decoding), so a re-run is fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from mmlong import __version__
from mmlong import tokens as tk
from mmlong.chat_api import ChatClient
from mmlong.eval.cache import ResponseCache, prompt_key
from mmlong.eval.models import Model, prompt_of
from mmlong.eval.score import (
    FAILED_TO_EXTRACT,
    JUDGE_PROMPT,
    extract_answer,
    parse_judge_reply,
    score_answer,
)
from mmlong.eval.tasks import TASKS, Common, Question, parse_task
from mmlong.messages import resolve_images
from mmlong.presets import load_preset

RECORDS = "records.jsonl"


def needle_score(gold: Any, response: str) -> float:
    """RULER string match: the share of the gold values that appear in the response."""
    values = gold if isinstance(gold, list) else [gold]
    return sum(str(v) in response for v in values) / len(values)


def choice(response: str) -> str:
    """The option letter of a multiple-choice reply: "B", "(B)", "B. text", "Answer: B"."""
    m = re.search(r"(?:answer\s*(?:is)?\s*[:\-]?\s*)?\(?\b([A-J])\b\)?", response.strip(), re.I)
    return m.group(1).upper() if m else ""


class Judge:
    """Answer extraction by a model (the benchmark's extraction prompt) over the chat API."""

    def __init__(self, common: Common, cache: ResponseCache | None = None) -> None:
        self.client = ChatClient(common.judge_base_url, common.judge_model)
        self.name = f"judge:{self.client.base_url}#{common.judge_model}"
        self.cache = cache

    def extract(self, question: str, response: str) -> str:
        """The judge's short answer; its replies are cached beside the model's (a re-run asks nothing twice)."""
        messages = [{"role": "user", "content": JUDGE_PROMPT},
                    {"role": "assistant", "content": f"\n\nQuestion:{question}\nAnalysis:{response}\n"}]
        key = prompt_key(self.name, messages, {"temperature": 0, "max_tokens": 256})
        reply = self.cache.get(key) if self.cache else None
        if reply is None:
            reply = self.client.complete(messages, temperature=0, max_tokens=256)
            if self.cache:
                self.cache.put(key, self.name, reply)
        return parse_judge_reply(reply)


def grade(q: Question, response: str, judge: Judge | None) -> tuple[str, float]:
    """The extracted answer and its score."""
    if q.answer_format == "needle":
        return response, needle_score(q.gold, response)
    if q.answer_format == "choice":
        pred = choice(response)
        return pred, float(pred == str(q.gold).strip().upper())
    pred = judge.extract(q.sample.question, response) if judge else extract_answer(response, q.answer_format)
    return pred, score_answer(q.gold, pred, q.answer_format) if pred != FAILED_TO_EXTRACT else 0.0


def read_records(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Records of a (possibly interrupted) run. A torn last line (a write cut off) is dropped,
    and with `repair` cut from the file, so that records appended next start on a line of
    their own."""
    out, good = [], 0
    if path.is_file():
        data = path.read_bytes()
        for line in data.splitlines(keepends=True):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
            good += len(line)
        if repair and good < len(data):
            with path.open("r+b") as f:
                f.truncate(good)
    return out


def _append(path: Path, records: list[dict[str, Any]]) -> None:
    with path.open("a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_recipe(recipe: str | dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A task recipe (eval/*.yaml name or path, or a mapping) with dotted-key overrides."""
    import copy

    data = copy.deepcopy(recipe) if isinstance(recipe, dict) else load_preset("eval", recipe)
    for key, value in (overrides or {}).items():
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return data


def evaluate(recipe: str | dict[str, Any], model: Model, out: str | Path, overrides: dict[str, Any] | None = None,
             progress: bool = True, cache: str | Path | None = None) -> dict[str, Any]:
    """Run a task on `model` into `out` (resuming what an earlier run there finished) and
    write report.json, report.md, report.html and plots. Returns the report. `cache` (default
    `out`) is the folder of the response cache (cache.sqlite) and of the datasets a task
    ingests, so runs that share it share both."""
    from rich.progress import Progress

    from mmlong.eval.report import summarize, write_report

    data = load_recipe(recipe, overrides)
    name, settings, common = parse_task(data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache) if cache else out
    questions, task_protocol = TASKS[name][1](settings, common, cache)
    if common.limit:
        questions = questions[: common.limit]
    protocol = {"task": name, "recipe": data, "model": model.protocol(), "data": task_protocol,
                "prompt": {"template": "Qwen2.5-VL chat template, document then question", "instruction": common.instruction},
                "decoding": {"max_new_tokens": common.max_new_tokens, "greedy": True},
                "extractor": {"kind": common.extractor, "judge_model": common.judge_model}, "mmlong_version": __version__}
    stamp = out / "protocol.json"
    if stamp.is_file() and json.loads(stamp.read_text()) != json.loads(json.dumps(protocol, default=str)):
        raise ValueError(f"{out}: holds records of another protocol (task, model or settings differ); use another --out")
    stamp.write_text(json.dumps(protocol, indent=2, default=str))
    signature = hashlib.sha256(stamp.read_bytes()).hexdigest()[:16]
    done = {r["id"]: r for r in read_records(out / RECORDS, repair=True)}  # the last record of an id counts
    responses = ResponseCache(cache / "cache.sqlite")
    judge = Judge(common, responses) if common.extractor == "judge" else None
    todo = [q for q in questions if q.id not in done or done[q.id].get("error")]  # failed ones are tried again
    settings_key = {"max_new_tokens": common.max_new_tokens, **model.cache_key()}
    step = max(getattr(model, "batch_size", 1), getattr(model, "concurrency", 1))
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"eval {name}", total=len(questions), completed=len(questions) - len(todo))
        for i in range(0, len(todo), step):
            chunk = todo[i : i + step]
            prompts = [prompt_of(resolve_images(q.sample.messages, q.sample.dataset, "data-uri")) for q in chunk]
            keys = [prompt_key(model.name, p, settings_key) for p in prompts]
            replies: list[str | Exception | None] = [responses.get(k) for k in keys]
            missing = [j for j, r in enumerate(replies) if r is None]
            fresh = model.generate([prompts[j] for j in missing], common.max_new_tokens) if missing else []
            for j, r in zip(missing, fresh):
                replies[j] = r
                if not isinstance(r, Exception):
                    responses.put(keys[j], model.name, r)
            records = []
            for q, reply in zip(chunk, replies):
                record = {"id": q.id, "question": q.sample.question, "gold": q.gold, "answer_format": q.answer_format,
                          "prompt_tokens": q.sample.answer_start,  # the model input: prompt and generation header
                          "protocol": signature, **q.meta}
                if isinstance(reply, Exception):
                    record.update(response=None, pred=None, score=0.0, error=f"{type(reply).__name__}: {reply}")
                else:
                    try:
                        pred, score = grade(q, reply, judge)
                        record.update(response=reply, pred=pred, score=score)
                    except Exception as e:  # a judge that refuses: the record says so, the run goes on
                        record.update(response=reply, pred=None, score=0.0, error=f"{type(e).__name__}: {e}")
                records.append(record)
            _append(out / RECORDS, records)
            done.update({r["id"]: r for r in records})
            bar.advance(task, len(chunk))
    responses.close()
    records = [done[q.id] for q in questions]
    report = {"protocol": {**protocol, "sha256": signature}, "summary": summarize(name, records), "records": records,
              "cache": {"hits": responses.hits, "misses": responses.misses}}
    write_report(report, out)
    return report


def rerun(report_path: str | Path, out: str | Path, progress: bool = True, cache: str | Path | None = None) -> dict[str, Any]:
    """Run a report again from its own protocol (the same recipe, data settings and model)."""
    from mmlong.eval.models import LocalModel, ServerModel

    report = json.loads(Path(report_path).read_text(encoding="utf-8"))
    protocol = report["protocol"]
    m = protocol["model"]
    if m["kind"] == "local":
        model = LocalModel(m["path"], batch_size=m.get("batch_size", 1), attn_implementation=m["attn_implementation"],
                           dtype=m["dtype"], budget=tk.PixelBudget(**m["budget"]), max_context=m.get("max_context"))
        if model.sha256 != m["sha256"]:
            print(f"warning: {m['path']} changed since the report (sha256 {model.sha256[:12]} != {m['sha256'][:12]})")
    else:
        model = ServerModel(m["base_url"], m["model"], concurrency=m.get("concurrency", 4))
    return evaluate(protocol["recipe"], model, out, progress=progress, cache=cache)
