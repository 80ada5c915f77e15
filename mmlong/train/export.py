"""Trained models leave as Hugging Face folders: weights in safetensors (`save_pretrained`), the
tokenizer, the image processor's config and the Qwen2.5-VL chat template, loadable with plain
transformers (`AutoModelForImageTextToText`, `AutoTokenizer`, `AutoImageProcessor`, and
`AutoProcessor` wherever torchvision is installed) by vLLM, lmms-eval or `mmlong eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmlong.train.processor import save_processor


def export_hf(model, processor, folder: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write `model` and `processor` into `folder` (created); `info` (the run's settings,
    steps, data) goes into mmlong.json beside them. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    model.config.use_cache = True  # as a generation checkpoint: decode with a cache
    text = getattr(model.config, "text_config", None)
    if text is not None:
        text.use_cache = True
    model.save_pretrained(str(folder), safe_serialization=True)
    if text is not None:
        text.use_cache = False
    save_processor(processor, folder)
    if info is not None:
        (folder / "mmlong.json").write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    model.train(was_training)
    return folder
