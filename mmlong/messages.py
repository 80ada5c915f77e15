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
from dataclasses import dataclass
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


REF_SCHEME = "mmlong://"


def image_ref(doc_id: str, seq: int) -> str:
    """A reference to item `seq` of document `doc_id` in the source dataset."""
    return f"{REF_SCHEME}{doc_id}/{seq}"


def item_ref(doc: Document, seq: int) -> str | None:
    """Where image item `seq` lives: its own `meta["ref"]` (items gathered from other
    documents), None for generated images that live nowhere (needles) and for crops of a
    stored image (haystack strips): those are sent inline; else the document's own item."""
    meta = doc.items[seq].meta or {}
    if "crop" in meta:
        return None
    if "ref" in meta:
        return meta["ref"]
    if meta.get("generated"):
        return None
    return image_ref(doc.doc_id, seq)


def _payload(image: bytes | None, fmt: str, image_as: str, ref: str | None):
    if image_as == "ref":
        return ref
    if image is None:
        raise ValueError(f"{ref}: the item has no image bytes (load the document with images=True)")
    if image_as == "pil":
        from PIL import Image

        return Image.open(io.BytesIO(image))
    if image_as == "data-uri":
        return f"data:image/{fmt};base64,{base64.b64encode(image).decode()}"
    raise ValueError(f"image_as must be 'pil', 'data-uri' or 'ref', got {image_as!r}")


VIEWS = ("all", "images", "text")


@dataclass(frozen=True)
class View:
    """What of a document a conversation shows: `items` all of them, only the images (page
    images, figures, frames: the MMProLong setting, text used only to write questions) or only
    the text; `page_markers` puts a short text "Page N" (N: 1-based position in the file)
    before each page's first element, so page answers are visible in the input."""

    items: str = "all"
    page_markers: bool = False

    def __post_init__(self) -> None:
        if self.items not in VIEWS:
            raise ValueError(f"view items must be one of {VIEWS}, got {self.items!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> View:
        return cls(**d) if d else cls()


def page_marker(page: int) -> str:
    return f"Page {page + 1}"


def shown(doc: Document, pages: set[int] | None = None, view: View = View()) -> list[tuple[int | None, int | None]]:
    """The elements `to_messages` shows, as (item seq, page): the document's items (those on
    `pages` if given) the view keeps, with (None, page) for a page marker."""
    out: list[tuple[int | None, int | None]] = []
    last = None
    for seq, item in enumerate(doc.items):
        if pages is not None and item.page not in pages:
            continue
        if not (item.is_image or item.text) or (view.items == "images" and not item.is_image) or (
                view.items == "text" and item.is_image):
            continue
        if view.page_markers and item.page is not None and item.page != last:
            out.append((None, item.page))
        last = item.page if item.page is not None else last
        out.append((seq, item.page))
    return out


def to_messages(
    doc: Document,
    question: str | None = None,
    answer: str | None = None,
    system: str | None = None,
    budget: tk.PixelBudget = tk.DEFAULT_BUDGET,
    pages: set[int] | None = None,
    image_as: str = "pil",
    view: View = View(),
) -> list[dict[str, Any]]:
    """Chat messages showing `doc` (its items in order; only `pages` if given, 0-based; what
    `view` keeps, with its page markers), then `question`, in one user turn; `answer` becomes
    the assistant turn. Each shown element is one content element (`shown` lists them), the
    question the last one; adjacent text elements are separated by a newline, the question by
    a blank line. Images carry the budget's min/max pixels so qwen-vl-utils resizes them to the
    size the token counts assume; with image_as="ref" they are `mmlong://doc_id/seq` references
    to the source dataset (see `resolve_images`)."""
    content: list[dict[str, Any]] = []
    for seq, page in shown(doc, pages, view):
        if seq is None:
            content.append({"type": "text", "text": page_marker(page)})
            continue
        item = doc.items[seq]
        if item.is_image:
            ref = item_ref(doc, seq)
            how = "data-uri" if image_as == "ref" and ref is None else image_as
            content.append({"type": "image", "image": _payload(item.image, item.image_format or "jpeg", how, ref),
                            "min_pixels": budget.min_pixels, "max_pixels": budget.max_pixels})
        else:
            content.append({"type": "text", "text": item.text})
    if question:
        content.append({"type": "text", "text": question})
    for this, after in zip(content, content[1:]):
        if this["type"] == after["type"] == "text":
            this["text"] += "\n\n" if question and after is content[-1] else "\n"
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": content})
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


_MARK = "\x00mmlong:{}:{}:{}\x00"


def element_spans(messages: list[dict[str, Any]]) -> tuple[str, dict[tuple[int, int], tuple[int, int]]]:
    """The prompt text of `messages` (the chat template) and, for content element k of message
    m, the characters [a, b) it rendered to: key (m, k); a string content is element 0.
    Found by rendering the real template once with a marker around every element (markers
    are text, which the template writes as it is) and taking the markers out again."""
    import re

    marked = []
    for m, message in enumerate(messages):
        if isinstance(message["content"], str):
            marked.append({**message, "content": _MARK.format(m, 0, "a") + message["content"] + _MARK.format(m, 0, "b")})
            continue
        content = []
        for k, element in enumerate(message["content"]):
            content += [{"type": "text", "text": _MARK.format(m, k, "a")}, element, {"type": "text", "text": _MARK.format(m, k, "b")}]
        marked.append({**message, "content": content})
    text = render_chat(marked)
    out, spans, opened, last = [], {}, {}, 0
    size = 0
    for match in re.finditer("\x00mmlong:(\\d+):(\\d+):([ab])\x00", text):
        out.append(text[last : match.start()])
        size += match.start() - last
        last = match.end()
        key = (int(match[1]), int(match[2]))
        if match[3] == "a":
            opened[key] = size
        else:
            spans[key] = (opened.pop(key), size)
    out.append(text[last:])
    return "".join(out), spans


def _image_size(value: Any) -> tuple[int, int]:
    """(height, width) of an image given as PIL image, data URI, file:// URI or path."""
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        raise ValueError(f"cannot size a remote image without fetching it: {value}")
    im = open_image(value)
    return im.height, im.width


def element_tokens(element: dict[str, Any], budget: tk.PixelBudget = tk.DEFAULT_BUDGET) -> int:
    """Tokens of one image element: qwen-vl-utils resizes it under the element's pixel bounds,
    then the processor under its own `budget` (the identity when the element's bounds lie
    within)."""
    if "resized_height" in element and "resized_width" in element:
        h, w = tk.smart_resize(element["resized_height"], element["resized_width"])
    else:
        height, width = _image_size(element.get("image", element.get("image_url")))
        h, w = tk.smart_resize(
            height, width, element.get("min_pixels", tk.IMAGE_MIN_PIXELS), element.get("max_pixels", tk.IMAGE_MAX_PIXELS)
        )
    return tk.image_tokens(h, w, budget)


def image_element_tokens(
    element: dict[str, Any], image_tokens: dict[str, int] | None = None, budget: tk.PixelBudget = tk.DEFAULT_BUDGET
) -> int:
    """Tokens of an image element: the stored count of an `mmlong://` reference (from
    `image_tokens`), else the element sized as qwen-vl-utils and the processor size it."""
    value = element.get("image")
    if isinstance(value, str) and value.startswith(REF_SCHEME):
        if image_tokens is None or value not in image_tokens:
            raise ValueError(f"{value}: pass its token count in image_tokens")
        return image_tokens[value]
    return element_tokens(element, budget)


def is_image(element: dict[str, Any]) -> bool:
    return element.get("type") == "image" or "image" in element or "image_url" in element


def is_video(element: dict[str, Any]) -> bool:
    return element.get("type") == "video" or "video" in element


def conversation_tokens(
    messages: list[dict[str, Any]],
    tokenizer=None,
    add_generation_prompt: bool = False,
    budget: tk.PixelBudget = tk.DEFAULT_BUDGET,
    image_tokens: dict[str, int] | None = None,
) -> int:
    """Exact length of the model input for `messages`: the chat-template prompt tokenized,
    with each `<|image_pad|>` expanded to its image's token count under the processor's
    `budget`. `image_tokens` gives the counts of `mmlong://` image references (the items'
    stored `tokens`)."""
    tok = tokenizer if tokenizer is not None else tk.load_tokenizer()
    total = len(tok.encode(render_chat(messages, add_generation_prompt), add_special_tokens=False).ids)
    for message in messages:
        if isinstance(message["content"], str):
            continue
        for element in message["content"]:
            if is_video(element):
                raise ValueError("conversation_tokens counts text and images; size videos with mmlong.tokens.plan_video")
            if is_image(element):
                total += image_element_tokens(element, image_tokens, budget) - 1
    return total


def resolve_images(messages: list[dict[str, Any]], dataset: str | Path, image_as: str = "pil") -> list[dict[str, Any]]:
    """A copy of `messages` whose `mmlong://doc_id/seq` image references are replaced by the
    images they point to in `dataset` (one document read at a time): PIL images, or data URIs
    of the stored bytes as they are (image_as="data-uri": what a server receives)."""
    import copy

    from mmlong.store import iter_documents

    out = copy.deepcopy(messages)
    refs = [e for m in out if not isinstance(m["content"], str) for e in m["content"]
            if isinstance(e.get("image"), str) and e["image"].startswith(REF_SCHEME)]
    wanted: dict[str, set[int]] = {}
    for e in refs:
        doc_id, seq = e["image"][len(REF_SCHEME):].rsplit("/", 1)
        wanted.setdefault(doc_id, set()).add(int(seq))
    found: dict[str, Any] = {}
    for doc in iter_documents(Path(dataset), doc_ids=wanted):
        for seq in wanted[doc.doc_id]:
            if seq >= len(doc.items) or doc.items[seq].image is None:
                raise ValueError(f"{dataset}: {image_ref(doc.doc_id, seq)} is not an image item")
            item = doc.items[seq]
            found[image_ref(doc.doc_id, seq)] = _payload(item.image, item.image_format or "jpeg", image_as, None)
    for e in refs:
        if e["image"] not in found:
            raise ValueError(f"{dataset}: no image {e['image']}")
        e["image"] = found[e["image"]]
    return out


def open_image(value: Any):
    """A PIL image from a PIL image, a data URI or a path."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, str) and value.startswith("data:image") and "base64," in value:
        return Image.open(io.BytesIO(base64.b64decode(value.split("base64,", 1)[1])))
    return Image.open(value[7:] if isinstance(value, str) and value.startswith("file://") else value)
