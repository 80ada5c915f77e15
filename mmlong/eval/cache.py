"""Model responses cached on disk (SQLite), keyed by the model's identity, the decoding
settings and the prompt with its images, so a re-run sends nothing twice. Errors are never
cached."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any


def prompt_key(model: str, prompt: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """sha256 of the model name, the decoding settings and the prompt (images and video frames by
    content)."""
    h = hashlib.sha256()
    h.update(json.dumps([model, settings], sort_keys=True).encode())
    for message in prompt:
        h.update(message["role"].encode())
        content = message["content"]
        for e in [{"type": "text", "text": content}] if isinstance(content, str) else content:
            if e.get("type") == "image":
                h.update(_image_bytes(e["image"]))
            elif e.get("type") == "video":  # its frames, and how they are sampled and sized
                h.update(json.dumps({k: v for k, v in e.items() if k not in ("type", "video")}, sort_keys=True).encode())
                for frame in e["video"] if isinstance(e["video"], list) else [e["video"]]:
                    h.update(b"\1" + _image_bytes(frame))
            else:
                h.update(b"\0" + e.get("text", "").encode())
    return h.hexdigest()


def _image_bytes(image) -> bytes:
    if isinstance(image, str):
        return image.encode()
    return image.tobytes() + repr((image.mode, image.size)).encode()


class ResponseCache:
    """`get(key)` / `put(key, response)` over one SQLite file, safe across threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.db = sqlite3.connect(self.path, check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, response TEXT)")
        self.db.commit()
        self.hits = self.misses = 0

    def get(self, key: str) -> str | None:
        with self.lock:
            row = self.db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return row[0]

    def put(self, key: str, model: str, response: str) -> None:
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", (key, model, response))
            self.db.commit()

    def close(self) -> None:
        self.db.close()
