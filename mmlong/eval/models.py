"""Models under evaluation: a transformers model from a local folder (greedy decoding through
the real processor), or a model behind an OpenAI-compatible server (vLLM, SGLang) with bounded
concurrency, retries and timeouts. Both take chat messages as `mmlong.messages` writes them
(images resolved to PIL images) and return one reply, or the error it raised, per request."""

from __future__ import annotations

import base64
import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mmlong import tokens as tk
from mmlong.chat_api import ChatClient


class Model(Protocol):
    name: str
    """Identity in caches and reports."""

    def generate(self, prompts: list[list[dict[str, Any]]], max_new_tokens: int) -> list[str | Exception]: ...

    def protocol(self) -> dict[str, Any]: ...

    def cache_key(self) -> dict[str, Any]:
        """What decides a reply beside `name`, the prompt and the decoding settings."""
        ...


def folder_hash(path: str | Path) -> str:
    """sha256 over a model folder's config and weights files (what decides its outputs)."""
    h = hashlib.sha256()
    folder = Path(path)
    for f in sorted(folder.glob("*.json")) + sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def prompt_of(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages a model answers: without a trailing assistant turn."""
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


@dataclass
class LocalModel:
    """A Hugging Face model folder, greedy decoding, `batch_size` prompts at a time (left padded)."""

    path: str
    batch_size: int = 1
    attn_implementation: str = "sdpa"
    dtype: str = "float32"
    budget: tk.PixelBudget | None = None
    """The processor's image bounds (default: the folder's); samples counted under another
    budget are refused."""
    max_context: int | None = None
    """Longest prompt accepted (default: the model's max_position_embeddings)."""
    name: str = field(init=False)

    def __post_init__(self) -> None:
        from mmlong.train.model import ModelSettings, build_model, text_config
        from mmlong.train.processor import load_processor

        self.model = build_model(ModelSettings(path=self.path, attn_implementation=self.attn_implementation,
                                               dtype=self.dtype)).eval()
        self.processor = load_processor(self.path, self.budget)
        self.max_context = self.max_context or text_config(self.model).max_position_embeddings
        self.name = f"local:{Path(self.path).resolve()}"
        self.sha256 = folder_hash(self.path)

    def protocol(self) -> dict[str, Any]:
        from mmlong.train.processor import processor_budget

        return {"kind": "local", "path": str(Path(self.path).resolve()), "sha256": self.sha256, "dtype": self.dtype,
                "attn_implementation": self.attn_implementation, "batch_size": self.batch_size,
                "max_context": self.max_context, "budget": vars(processor_budget(self.processor)),
                "chat_template_sha256": hashlib.sha256((self.processor.chat_template or "").encode()).hexdigest(),
                "decoding": {"do_sample": False, "num_beams": 1}}

    def cache_key(self) -> dict[str, Any]:
        """What, beside the prompt, decides a reply: the weights and how they run."""
        return {k: v for k, v in self.protocol().items() if k not in ("path", "batch_size")}

    def encode(self, prompts: list[list[dict[str, Any]]]):
        from mmlong.train.collate import vision_inputs

        texts = [self.processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in prompts]
        return self.processor(text=texts, padding=True, padding_side="left", return_tensors="pt",
                              **vision_inputs(prompts, self.processor, self.name))

    def prompt_tokens(self, prompt: list[dict[str, Any]]) -> int:
        return int(self.encode([prompt])["input_ids"].shape[1])

    def generate(self, prompts: list[list[dict[str, Any]]], max_new_tokens: int) -> list[str | Exception]:
        import torch

        out: list[str | Exception] = []
        for i in range(0, len(prompts), self.batch_size):
            chunk = prompts[i : i + self.batch_size]
            try:
                inputs = self.encode(chunk)
                if inputs["input_ids"].shape[1] > self.max_context:
                    raise ValueError(f"prompt of {inputs['input_ids'].shape[1]} tokens exceeds the model's context "
                                     f"{self.max_context}")
                with torch.no_grad():
                    ids = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                              use_cache=True)
                new = ids[:, inputs["input_ids"].shape[1] :]
                out += [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]
            except Exception as e:  # the run goes on; the record keeps the reason
                out += [e] * len(chunk)
        return out


def to_openai(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages in the OpenAI chat format: images (and a video's frames) as base64 data URLs,
    adjacent text parts merged (servers join separate parts with separators of their own)."""
    out = []
    for m in messages:
        if isinstance(m["content"], str):
            out.append({"role": m["role"], "content": m["content"]})
            continue
        parts: list[dict[str, Any]] = []
        for e in m["content"]:
            if e.get("type") == "image":
                parts.append({"type": "image_url", "image_url": {"url": _data_url(e["image"])}})
            elif e.get("type") == "video":  # a video as its frames, in order
                parts += [{"type": "image_url", "image_url": {"url": _data_url(f)}} for f in e["video"]]
            elif parts and parts[-1]["type"] == "text":
                parts[-1]["text"] += e["text"]
            else:
                parts.append({"type": "text", "text": e["text"]})
        out.append({"role": m["role"], "content": parts})
    return out


def _data_url(image) -> str:
    """A data URL: as given (the stored bytes, unchanged), or a PIL image as lossless PNG."""
    if isinstance(image, str) and image.startswith("data:"):
        return image
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"


@dataclass
class ServerModel:
    """A model behind an OpenAI-compatible server; `concurrency` requests in flight at once."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 4
    timeout: float = 300.0
    retries: int = 4
    backoff: float = 1.0
    name: str = field(init=False)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        self.client = ChatClient(self.base_url, self.model, self.api_key_env, self.timeout, self.retries, self.backoff)
        self.name = f"server:{self.client.base_url}#{self.model}"

    def protocol(self) -> dict[str, Any]:
        return {"kind": "server", "base_url": self.client.base_url, "model": self.model, "concurrency": self.concurrency,
                "timeout": self.timeout, "retries": self.retries, "decoding": {"temperature": 0}}

    def cache_key(self) -> dict[str, Any]:
        return {}  # the server and model name are the cache's model key

    def generate(self, prompts: list[list[dict[str, Any]]], max_new_tokens: int) -> list[str | Exception]:
        def one(prompt):
            try:
                return self.client.complete(to_openai(prompt), temperature=0, max_tokens=max_new_tokens).strip()
            except Exception as e:
                return e

        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(one, prompts))
