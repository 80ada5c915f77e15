"""Documents as Qwen2.5-VL chat messages: accepted by qwen-vl-utils, counted exactly."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mmlong import store
from mmlong import tokens as tk
from mmlong.ingest import ingest
from mmlong.messages import conversation_tokens, render_chat, to_messages
from mmlong.schema import PAGE_IMAGE, TEXT
from tests.conftest import LOREM, write_pdf


@pytest.fixture(scope="module")
def doc(tmp_path_factory):
    d = tmp_path_factory.mktemp("msg")
    write_pdf(d / "doc.pdf", [f"Page {i}. {LOREM}" for i in range(3)], images={1: [(100, 300, 400, 500)]})
    ingest([str(d / "doc.pdf")], d / "ds", preset="pdf-budget", workers=1, progress=False)
    return next(iter(store.iter_documents(d / "ds")))


def _processor_ids(hf_processor, qwen_vl_utils, messages, min_pixels, max_pixels):
    proc = hf_processor(min_pixels, max_pixels)
    prompt = proc.apply_chat_template(messages, tokenize=False)
    images, videos = qwen_vl_utils.process_vision_info(messages)
    assert videos is None
    return prompt, proc(text=[prompt], images=images, return_tensors="np")["input_ids"][0].tolist(), images


@pytest.mark.parametrize("budget", [(3136, 1003520), (3136, 256 * 784), (3136, 12845056)])
def test_counts_equal_processor_input_ids(doc, hf_processor, qwen_vl_utils, budget):
    messages = to_messages(doc, question="What grew by twelve percent?", answer="Revenue.",
                           budget=tk.PixelBudget(*budget))
    prompt, ids, images = _processor_ids(hf_processor, qwen_vl_utils, messages, *budget)
    assert prompt == render_chat(messages)
    assert len(images) == 3
    assert conversation_tokens(messages) == len(ids)
    pad = tk.load_tokenizer().token_to_id("<|image_pad|>")
    pages = [it for it in doc.items if it.kind == PAGE_IMAGE]
    assert ids.count(pad) == sum(tk.image_tokens(it.height, it.width, tk.PixelBudget(*budget)) for it in pages)


def test_message_layout(doc):
    messages = to_messages(doc, question="Q?", system="Be brief.", pages={1})
    assert [m["role"] for m in messages] == ["system", "user"]
    content = messages[1]["content"]
    texts = [it.text for it in doc.items if it.kind == TEXT and it.page == 1]
    assert [c["type"] for c in content] == ["image"] + ["text"] * (len(texts) + 1)  # one element per item, then the question
    assert "".join(c["text"] for c in content[1:]) == "\n".join(texts) + "\n\nQ?"  # the question after a blank line
    assert content[0]["min_pixels"] == tk.IMAGE_MIN_PIXELS and content[0]["image"].size == (doc.items[2].width, doc.items[2].height)


def test_data_uri_images_are_accepted_and_counted(doc, hf_processor, qwen_vl_utils):
    messages = to_messages(doc, question="Which page shows a chart?", image_as="data-uri",
                           budget=tk.PixelBudget(3136, 1003520))
    assert messages[0]["content"][0]["image"].startswith("data:image/jpeg;base64,")
    _, ids, _ = _processor_ids(hf_processor, qwen_vl_utils, messages, 3136, 1003520)
    assert conversation_tokens(messages, add_generation_prompt=False) == len(ids)


def test_generation_prompt_and_errors(doc):
    messages = to_messages(doc, question="Q")
    assert render_chat(messages, add_generation_prompt=True).endswith("<|im_start|>assistant\n")
    assert conversation_tokens(messages, add_generation_prompt=True) == conversation_tokens(messages) + 3
    without_images = replace(doc, items=[replace(it, image=None) for it in doc.items])
    with pytest.raises(ValueError, match="images=True"):
        to_messages(without_images)
    with pytest.raises(ValueError, match="plan_video"):
        conversation_tokens([{"role": "user", "content": [{"type": "video", "video": "clip.mp4"}]}])
    with pytest.raises(ValueError, match="image_as"):
        to_messages(doc, image_as="bytes")
