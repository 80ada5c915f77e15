"""QA pairs written by a model behind an OpenAI-compatible chat API (vLLM, SGLang, any server
the user runs): the segment's page images and/or text go in, a JSON list of QA pairs with
evidence pages comes out, and is validated against the segment.

Malformed JSON is sent back to the model with the parse error (up to `retries` times); rate
limits (429), server errors (5xx) and timeouts are retried with exponential backoff
(honouring Retry-After); every accepted reply is cached on disk under the hash of the first
request for its segment, so a re-run sends nothing twice.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmlong.chat_api import ChatClient, ChatError
from mmlong.schema import Document
from mmlong.samples import FORMATS, NOT_ANSWERABLE, QA, Segment
from mmlong.synthesis.segments import page_texts

_TASKS = ("extract-single", "extract-multi", "reasoning")

INSTRUCTIONS = """You write questions for a long-document reading test.
Above are pages {first}-{last} of a {total}-page document. The reader will see the WHOLE
document, so every question must carry an anchor that makes it unambiguous there: name the
section, figure or table, or say "on pages a-b". Use only evidence from the pages shown.

Write {n} question-answer pairs as a JSON list, and nothing else. Each element:
{{"question": str, "answer": str | number | list, "answer_format": "Int" | "Float" | "Str" | "List" | "None",
 "evidence_pages": [page numbers], "task": "extract-single" | "extract-multi" | "reasoning",
 "anchor": the words of the question that locate the evidence}}
extract-single: the evidence is on one page; extract-multi: on two or more pages;
reasoning: compute, compare or count over the evidence.
{unanswerable}"""


class LlmError(ChatError):
    """The server refused the request, or never answered with usable JSON."""


@dataclass
class LlmWriter:
    """The `Writer` that asks a model; options come from the CLI or the environment
    (OPENAI_BASE_URL, MMLONG_LLM_MODEL, and the key in `api_key_env`)."""

    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    cache_dir: Path | None = None
    name: str = "llm"
    questions: int = 6
    unanswerable_rate: float = 0.1
    send: str = "images+text"
    """What the model sees of each page: images, text, or images+text."""
    timeout: float = 120.0
    retries: int = 4
    backoff: float = 1.0
    temperature: float = 0.7
    max_tokens: int = 2048

    def __post_init__(self) -> None:
        self.base_url = (self.base_url or os.environ.get("OPENAI_BASE_URL") or "").rstrip("/")
        self.model = self.model or os.environ.get("MMLONG_LLM_MODEL")
        if not self.base_url or not self.model:
            raise ValueError("the LLM writer needs a server and a model: --llm-base-url/OPENAI_BASE_URL and --llm-model/MMLONG_LLM_MODEL")
        if self.send not in ("images", "text", "images+text"):
            raise ValueError(f"send must be images, text or images+text, got {self.send!r}")

    @property
    def needs_images(self) -> bool:
        return "images" in self.send

    def request(self, doc: Document, segment: Segment, rng: random.Random) -> list[dict[str, Any]]:
        """The chat messages sent for a segment."""
        texts = page_texts(doc)
        content: list[dict[str, Any]] = []
        for p in segment.pages:
            content.append({"type": "text", "text": f"Page {p + 1}:"})
            if self.needs_images:
                for it in doc.items:
                    if it.page == p and it.kind == "page-image" and it.image is not None:
                        data = base64.b64encode(it.image).decode()
                        content.append({"type": "image_url", "image_url": {"url": f"data:image/{it.image_format};base64,{data}"}})
            if "text" in self.send and texts.get(p):
                content.append({"type": "text", "text": "\n".join(texts[p])})
        n_unanswerable = sum(rng.random() < self.unanswerable_rate for _ in range(self.questions))
        unanswerable = (f'Make {n_unanswerable} of them unanswerable from the document: answer "{NOT_ANSWERABLE}", '
                        'answer_format "None", evidence_pages [].') if n_unanswerable else ""
        content.append({"type": "text", "text": INSTRUCTIONS.format(first=segment.start + 1, last=segment.stop,
                                                                    total=doc.num_pages, n=self.questions,
                                                                    unanswerable=unanswerable)})
        return [{"role": "user", "content": content}]

    def write(self, doc: Document, segment: Segment, rng: random.Random) -> list[QA]:
        messages = self.request(doc, segment, rng)
        cache = None
        if self.cache_dir is not None:
            key = hashlib.sha256(json.dumps(self._body(messages), sort_keys=True).encode()).hexdigest()
            cache = Path(self.cache_dir) / f"{key}.json"
            if cache.is_file():
                return parse_qas(json.loads(cache.read_text())["content"], segment)
        for attempt in range(self.retries + 1):
            reply = self._complete(messages)
            try:
                qas = parse_qas(reply, segment)
            except ValueError as e:
                if attempt == self.retries:
                    raise LlmError(f"{doc.source}: no valid JSON after {attempt + 1} replies: {e}") from None
                messages = messages + [
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": f"That reply could not be used: {e}. Reply with only the JSON list."},
                ]
                continue
            if cache is not None:  # the accepted reply, under the key of the first request
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(".tmp")
                tmp.write_text(json.dumps({"model": self.model, "content": reply}))
                tmp.replace(cache)
            return qas
        raise AssertionError("unreachable")

    def _body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {"model": self.model, "messages": messages, "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _complete(self, messages: list[dict[str, Any]]) -> str:
        """One chat completion, retried on rate limits, server errors and timeouts."""
        client = ChatClient(self.base_url, self.model, self.api_key_env, self.timeout, self.retries, self.backoff)
        try:
            return client.complete(messages, temperature=self.temperature, max_tokens=self.max_tokens)
        except ChatError as e:
            raise LlmError(str(e)) from None


def _json_list(reply: str) -> list:
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", reply.strip())
    start, end = text.find("["), text.rfind("]")
    if start < 0 or end < start:
        raise ValueError("no JSON list in the reply")
    try:
        data = json.loads(text[start : end + 1])
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(data, list):
        raise ValueError("the JSON is not a list")
    return data


def _check(item: dict[str, Any], segment: Segment) -> QA:
    need = {"question", "answer", "answer_format", "evidence_pages", "task"}
    if not isinstance(item, dict) or need - set(item):
        raise ValueError(f"missing fields {sorted(need - set(item)) if isinstance(item, dict) else need}")
    fmt, task, pages = item["answer_format"], item["task"], item["evidence_pages"]
    if fmt not in FORMATS or task not in _TASKS:
        raise ValueError(f"answer_format {fmt!r} or task {task!r} unknown")
    if not isinstance(pages, list) or not all(isinstance(p, int) for p in pages):
        raise ValueError("evidence_pages must be a list of page numbers")
    if fmt == "None" or item["answer"] == NOT_ANSWERABLE:
        if pages or fmt != "None" or item["answer"] != NOT_ANSWERABLE:
            raise ValueError("an unanswerable question needs answer 'Not answerable', format None and no pages")
        return QA(item["question"], NOT_ANSWERABLE, "None", [], "extract-single", "llm-unanswerable", item.get("anchor", ""))
    if not pages or any(not segment.start < p <= segment.stop for p in pages):
        raise ValueError(f"evidence pages {pages} outside pages {segment.start + 1}-{segment.stop}")
    if (task == "extract-single" and len(set(pages)) != 1) or (task == "extract-multi" and len(set(pages)) < 2):
        raise ValueError(f"{task} with evidence pages {pages}")
    answer = item["answer"]
    if fmt == "Int" and not (isinstance(answer, int) or (isinstance(answer, str) and answer.strip().lstrip("-").isdigit())):
        raise ValueError(f"Int answer {answer!r}")
    if fmt == "List" and not isinstance(answer, list):
        raise ValueError(f"List answer {answer!r}")
    return QA(item["question"], answer, fmt, sorted(set(pages)), task, "llm", item.get("anchor", ""))


def parse_qas(reply: str, segment: Segment) -> list[QA]:
    """QA pairs from a model's reply; invalid elements are dropped, and a reply with none
    valid (or no JSON list) is a ValueError that says why."""
    qas, errors = [], []
    for item in _json_list(reply):
        try:
            qas.append(_check(item, segment))
        except ValueError as e:
            errors.append(str(e))
    if not qas:
        raise ValueError("no valid question: " + "; ".join(errors[:3]))
    return qas
