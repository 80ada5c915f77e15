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
from mmlong.schema import VIDEO_FRAME, Document

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
    frames: str = "video"
    """Frames of a video stored as video input (`VideoOptions.as_video`): "video" (each run of
    them is one `{"type": "video"}` element, as Qwen2.5-VL consumes video) or "images" (one
    image element a frame)."""

    def __post_init__(self) -> None:
        if self.items not in VIEWS:
            raise ValueError(f"view items must be one of {VIEWS}, got {self.items!r}")
        if self.frames not in ("video", "images"):
            raise ValueError(f"view frames must be video or images, got {self.frames!r}")

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


def video_input(item) -> bool:
    """A frame stored as Qwen2.5-VL video input (it belongs to a pair of frames)."""
    return item.kind == VIDEO_FRAME and "pair" in (item.meta or {})


@dataclass(frozen=True)
class Element:
    """One content element of a conversation: a document item, a page marker (seqs empty),
    or a video (`video`: the frames `seqs`, a run of video-input frames)."""

    seqs: tuple[int, ...]
    page: int | None
    video: bool = False


def elements(doc: Document, pages: set[int] | None = None, view: View = View()) -> list[Element]:
    """`shown`, as content elements: each shown entry one, except that a run of video-input
    frames is one video element when `view.frames == "video"`."""
    out: list[Element] = []
    for seq, page in shown(doc, pages, view):
        if seq is None:
            out.append(Element((), page))
        elif view.frames == "video" and video_input(doc.items[seq]):
            if out and out[-1].video:
                out[-1] = Element((*out[-1].seqs, seq), out[-1].page, True)
            else:
                out.append(Element((seq,), page, True))
        else:
            out.append(Element((seq,), page))
    return out


def frame_payloads(doc: Document, seqs: list[int], image_as: str) -> list[Any]:
    out = []
    for seq in seqs:
        ref = item_ref(doc, seq)
        item = doc.items[seq]
        out.append(_payload(item.image, item.image_format or "jpeg", "data-uri" if image_as == "ref" and ref is None else image_as,
                            ref))
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
    the assistant turn. Each shown element is one content element (`shown` lists them; a run of
    video-input frames is one video element with the frames, their size and `sample_fps`, as
    qwen-vl-utils takes a video given as frames), the question the last one; adjacent text elements are separated by a newline, the question by
    a blank line. Images carry the budget's min/max pixels so qwen-vl-utils resizes them to the
    size the token counts assume; with image_as="ref" they are `mmlong://doc_id/seq` references
    to the source dataset (see `resolve_images`)."""
    content: list[dict[str, Any]] = []
    for element in elements(doc, pages, view):
        if not element.seqs:
            content.append({"type": "text", "text": page_marker(element.page)})
            continue
        seq = element.seqs[0]
        item = doc.items[seq]
        if element.video:
            content.append({"type": "video", "video": frame_payloads(doc, list(element.seqs), image_as),
                            "resized_height": item.height, "resized_width": item.width,
                            "sample_fps": float(doc.metadata.get("sample_fps", tk.VIDEO_FPS))})
        elif item.is_image:
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


def video_element_tokens(element: dict[str, Any]) -> int:
    """`<|video_pad|>` tokens of a video given as a list of frames: qwen-vl-utils pads the frame
    count to even and sizes the frames as `fetch_video` does (the element's `resized_*`, else
    the first frame's size under the element's video pixel bounds); two frames share one grid."""
    frames = element.get("video")
    if not isinstance(frames, (list, tuple)) or not frames:
        raise ValueError("conversation_tokens counts videos given as frame lists; size video files with "
                         "mmlong.tokens.plan_video")
    n = len(frames)
    if "resized_height" in element and "resized_width" in element:
        h, w = tk.smart_resize(element["resized_height"], element["resized_width"])
    else:
        height, width = _image_size(frames[0])
        h, w = tk.video_frame_size(n + n % 2, height, width,
                                   element.get("min_pixels", tk.VIDEO_MIN_PIXELS),
                                   element.get("max_pixels", tk.VIDEO_MAX_PIXELS),
                                   element.get("total_pixels", tk.VIDEO_TOTAL_PIXELS))
    return tk.video_tokens(n, h, w)


def conversation_tokens(
    messages: list[dict[str, Any]],
    tokenizer=None,
    add_generation_prompt: bool = False,
    budget: tk.PixelBudget = tk.DEFAULT_BUDGET,
    image_tokens: dict[str, int] | None = None,
) -> int:
    """Exact length of the model input for `messages`: the chat-template prompt tokenized,
    with each `<|image_pad|>` expanded to its image's token count under the processor's
    `budget` and each `<|video_pad|>` to its video's (`video_element_tokens`). `image_tokens`
    gives the counts of `mmlong://` image references (the items' stored `tokens`)."""
    tok = tokenizer if tokenizer is not None else tk.load_tokenizer()
    total = len(tok.encode(render_chat(messages, add_generation_prompt), add_special_tokens=False).ids)
    for message in messages:
        if isinstance(message["content"], str):
            continue
        for element in message["content"]:
            if is_video(element):
                total += video_element_tokens(element) - 1
            elif is_image(element):
                total += image_element_tokens(element, image_tokens, budget) - 1
    return total


def resolve_images(messages: list[dict[str, Any]], dataset: str | Path, image_as: str = "pil") -> list[dict[str, Any]]:
    """A copy of `messages` whose `mmlong://doc_id/seq` image references (of images and of
    video frames) are replaced by the images they point to in `dataset` (one document read at a time): PIL images, or data URIs
    of the stored bytes as they are (image_as="data-uri": what a server receives)."""
    import copy

    from mmlong.store import iter_documents

    out = copy.deepcopy(messages)
    elements = [e for m in out if not isinstance(m["content"], str) for e in m["content"]]
    refs = [e for e in elements if isinstance(e.get("image"), str) and e["image"].startswith(REF_SCHEME)]
    videos = [e for e in elements if isinstance(e.get("video"), list)]
    wanted: dict[str, set[int]] = {}
    for ref in [e["image"] for e in refs] + [f for e in videos for f in e["video"] if _is_ref(f)]:
        doc_id, seq = ref[len(REF_SCHEME):].rsplit("/", 1)
        wanted.setdefault(doc_id, set()).add(int(seq))
    if not wanted:
        return out
    found: dict[str, Any] = {}
    for doc in iter_documents(Path(dataset), doc_ids=wanted):
        for seq in wanted[doc.doc_id]:
            if seq >= len(doc.items) or doc.items[seq].image is None:
                raise ValueError(f"{dataset}: {image_ref(doc.doc_id, seq)} is not an image item")
            item = doc.items[seq]
            found[image_ref(doc.doc_id, seq)] = _payload(item.image, item.image_format or "jpeg", image_as, None)
    for ref in [e["image"] for e in refs] + [f for e in videos for f in e["video"] if _is_ref(f)]:
        if ref not in found:
            raise ValueError(f"{dataset}: no image {ref}")
    for e in refs:
        e["image"] = found[e["image"]]
    for e in videos:
        e["video"] = [found[f] if _is_ref(f) else f for f in e["video"]]
    return out


def _is_ref(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(REF_SCHEME)


def open_image(value: Any):
    """A PIL image from a PIL image, a data URI or a path."""
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, str) and value.startswith("data:image") and "base64," in value:
        return Image.open(io.BytesIO(base64.b64decode(value.split("base64,", 1)[1])))
    return Image.open(value[7:] if isinstance(value, str) and value.startswith("file://") else value)
