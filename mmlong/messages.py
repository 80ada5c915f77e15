"""Documents as Qwen2.5-VL chat messages, and the exact token count of a conversation.

`to_messages` gives the message list that `qwen_vl_utils.process_vision_info` and the HF
processor's chat template take. `conversation_tokens` counts what the model will receive:
the prompt rendered with the Qwen2.5-VL chat template, tokenized, with every image pad
expanded to the image's token count.
"""

from __future__ import annotations

import base64
import functools
import io
from pathlib import Path
from typing import Any

from mmlong import tokens as tk
from mmlong.schema import Document

TEMPLATE_FILE = Path(__file__).with_name("qwen2_5_vl_chat_template.jinja")


@functools.lru_cache(maxsize=1)
def _template():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # The settings transformers uses to render chat templates.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(TEMPLATE_FILE.read_text(encoding="utf-8"))


def render_chat(messages: list[dict[str, Any]], add_generation_prompt: bool = False, add_vision_id: bool = False) -> str:
    """The prompt text of `messages` (one `<|image_pad|>` per image, as the template writes it)."""
    return _template().render(messages=messages, add_generation_prompt=add_generation_prompt, add_vision_id=add_vision_id)


def _payload(image: bytes, fmt: str, image_as: str):
    if image_as == "pil":
        from PIL import Image

        return Image.open(io.BytesIO(image))
    if image_as == "data-uri":
        return f"data:image/{fmt};base64,{base64.b64encode(image).decode()}"
    raise ValueError(f"image_as must be 'pil' or 'data-uri', got {image_as!r}")


def to_messages(
    doc: Document,
    question: str | None = None,
    answer: str | None = None,
    system: str | None = None,
    min_pixels: int = tk.IMAGE_MIN_PIXELS,
    max_pixels: int = tk.IMAGE_MAX_PIXELS,
    pages: set[int] | None = None,
    image_as: str = "pil",
) -> list[dict[str, Any]]:
    """Chat messages showing `doc` (its items in order; only `pages` if given, 0-based), then
    `question`, in one user turn; `answer` becomes the assistant turn. Adjacent text items are
    joined with a newline. Images carry min/max pixels so qwen-vl-utils resizes them to the
    budget the token counts assume."""
    content: list[dict[str, Any]] = []
    texts: list[str] = []

    def flush() -> None:
        if texts:
            content.append({"type": "text", "text": "\n".join(texts)})
            texts.clear()

    for item in doc.items:
        if pages is not None and item.page not in pages:
            continue
        if item.is_image:
            if item.image is None:
                raise ValueError(f"document {doc.doc_id}: item {item.kind} has no image bytes (load it with images=True)")
            flush()
            content.append(
                {
                    "type": "image",
                    "image": _payload(item.image, item.image_format or "jpeg", image_as),
                    "min_pixels": min_pixels,
                    "max_pixels": max_pixels,
                }
            )
        elif item.text:
            texts.append(item.text)
    if question:
        texts.append(question)
    flush()
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": content})
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def _image_size(value: Any) -> tuple[int, int]:
    """(height, width) of an image given as PIL image, data URI, file:// URI or path."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value.height, value.width
    if isinstance(value, str) and value.startswith("data:image") and "base64," in value:
        value = io.BytesIO(base64.b64decode(value.split("base64,", 1)[1]))
    elif isinstance(value, str) and value.startswith(("http://", "https://")):
        raise ValueError(f"cannot size a remote image without fetching it: {value}")
    elif isinstance(value, str) and value.startswith("file://"):
        value = value[7:]
    with Image.open(value) as im:
        return im.height, im.width


def element_tokens(
    element: dict[str, Any],
    processor_min_pixels: int = tk.IMAGE_MIN_PIXELS,
    processor_max_pixels: int = tk.IMAGE_MAX_PIXELS,
) -> int:
    """Tokens of one image element: qwen-vl-utils resizes it under the element's pixel bounds,
    then the processor under its own (the identity when the element's bounds lie within)."""
    if "resized_height" in element and "resized_width" in element:
        h, w = tk.smart_resize(element["resized_height"], element["resized_width"])
    else:
        height, width = _image_size(element.get("image", element.get("image_url")))
        h, w = tk.smart_resize(
            height, width, element.get("min_pixels", tk.IMAGE_MIN_PIXELS), element.get("max_pixels", tk.IMAGE_MAX_PIXELS)
        )
    return tk.image_tokens(h, w, processor_min_pixels, processor_max_pixels)


def conversation_tokens(
    messages: list[dict[str, Any]],
    tokenizer=None,
    add_generation_prompt: bool = False,
    processor_min_pixels: int = tk.IMAGE_MIN_PIXELS,
    processor_max_pixels: int = tk.IMAGE_MAX_PIXELS,
) -> int:
    """Exact length of the model input for `messages`: the chat-template prompt tokenized,
    with each `<|image_pad|>` expanded to its image's token count."""
    tok = tokenizer if tokenizer is not None else tk.load_tokenizer()
    total = len(tok.encode(render_chat(messages, add_generation_prompt), add_special_tokens=False).ids)
    for message in messages:
        if isinstance(message["content"], str):
            continue
        for element in message["content"]:
            if element.get("type") == "video" or "video" in element:
                raise ValueError("conversation_tokens counts text and images; size videos with mmlong.tokens.plan_video")
            if element.get("type") == "image" or "image" in element or "image_url" in element:
                total += element_tokens(element, processor_min_pixels, processor_max_pixels) - 1
    return total
