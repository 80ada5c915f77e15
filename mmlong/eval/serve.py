"""`mmlong serve --model PATH`: a local Hugging Face model behind an OpenAI-compatible chat
completions endpoint (`POST /v1/chat/completions`, `GET /v1/models`), greedy decoding, images
as data URLs: what `mmlong eval --server`, lmms-eval or any OpenAI client talks to when no
vLLM is at hand (a CPU machine, a tiny model trained here). One request is decoded at a time.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mmlong.eval.models import LocalModel


def from_openai(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI chat messages as mmlong's: `image_url` parts become images (their data URLs)."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = [{"type": "image", "image": p["image_url"]["url"]} if p.get("type") == "image_url" else p
                       for p in content]
        out.append({"role": m["role"], "content": content})
    return out


def respond(model: LocalModel, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of the reply to one chat completion request."""
    try:
        messages = from_openai(body["messages"])
    except (KeyError, TypeError) as e:
        return 400, {"error": {"message": f"not a chat completion request: {e!r}"}}
    (reply,) = model.generate([messages], int(body.get("max_tokens") or body.get("max_completion_tokens") or 16))
    if isinstance(reply, Exception):
        return 400, {"error": {"message": str(reply)}}
    return 200, {"object": "chat.completion", "model": body.get("model", model.name),
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}]}


class ChatServer(ThreadingHTTPServer):
    """The server of one model on `host`:`port` (0: any free port)."""

    daemon_threads = True

    def __init__(self, model: LocalModel, host: str = "127.0.0.1", port: int = 0) -> None:
        self.model = model
        self.decoding = threading.Lock()  # one generation at a time: the model is not thread-safe
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> "ChatServer":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        try:
            self.wfile.write(payload)
        except BrokenPipeError:  # the client gave up
            pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": self.server.model.name, "object": "model"}]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        except (ValueError, json.JSONDecodeError) as e:
            self._send(400, {"error": {"message": f"body is not JSON: {e}"}})
            return
        with self.server.decoding:
            status, reply = respond(self.server.model, body)
        self._send(status, reply)
