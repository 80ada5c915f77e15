"""A client of OpenAI-compatible chat servers (vLLM, SGLang, any server the user runs), shared by
the LLM question writer and evaluation: rate limits (429), server errors (5xx), timeouts and
refused connections are retried with exponential backoff (honouring Retry-After); any other
refusal or a reply that is not a chat completion is a `ChatError` naming the endpoint."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any


class ChatError(RuntimeError):
    """The server refused the request, or did not answer with a chat completion."""


@dataclass
class ChatClient:
    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 120.0
    retries: int = 4
    backoff: float = 1.0

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def complete(self, messages: list[dict[str, Any]], **params: Any) -> str:
        """The reply text of one chat completion of `messages` (OpenAI format)."""
        import requests

        headers = {"Content-Type": "application/json"}
        if key := os.environ.get(self.api_key_env):
            headers["Authorization"] = f"Bearer {key}"
        body = {"model": self.model, "messages": messages, **params}
        for attempt in range(self.retries + 1):
            wait = self.backoff * 2**attempt
            try:
                response = requests.post(self.url, json=body, headers=headers, timeout=self.timeout)
            except (requests.Timeout, requests.ConnectionError) as e:
                if attempt == self.retries:
                    raise ChatError(f"{self.url}: {type(e).__name__} after {attempt + 1} tries") from None
                time.sleep(wait)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                if attempt == self.retries:
                    raise ChatError(f"{self.url}: HTTP {response.status_code} after {attempt + 1} tries: {response.text[:200]}")
                retry_after = response.headers.get("Retry-After", "")
                time.sleep(float(retry_after) if retry_after.replace(".", "", 1).isdigit() else wait)
                continue
            if response.status_code != 200:
                raise ChatError(f"{self.url}: HTTP {response.status_code}: {response.text[:500]}")
            try:
                content = response.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                raise ChatError(f"{self.url}: not a chat completion: {response.text[:200]}") from None
            if not isinstance(content, str):
                raise ChatError(f"{self.url}: the completion has no text content: {response.text[:200]}")
            return content
        raise AssertionError("unreachable")
