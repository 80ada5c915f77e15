"""Long-document VQA synthesis: template answers checked against generated PDFs, exact tokens."""

from __future__ import annotations

import json
import random
import re

from mmlong import tokens as tk
from mmlong.messages import resolve_images
from mmlong.samples import NOT_ANSWERABLE, QA, Segment, build_sample, read_samples
from mmlong.synthesis.run import synth
from mmlong.synthesis.segments import sample_segment
from mmlong.synthesis.template import TemplateWriter
from tests.conftest import CAPTIONS, SECTIONS, sentence


def check_answer(qa: QA, report_doc) -> None:
    """Every template answer, checked against what the PDF was made of."""
    labels = report_doc.metadata["page_labels"]
    if qa.kind == "section-start":
        title = qa.anchor.split('"')[1]
        assert [p for _, t, p in SECTIONS if t == title] == [qa.answer] == qa.evidence_pages
    elif qa.kind == "sections-between":
        a, b = map(int, qa.anchor.split()[1].split("-"))
        assert qa.answer == [t for _, t, p in SECTIONS if a <= p <= b]
    elif qa.kind == "section-distance":
        t1, t2 = qa.anchor.split('"')[1], qa.anchor.split('"')[3]
        pages = {t: p for _, t, p in SECTIONS}
        assert qa.answer == pages[t2] - pages[t1] and qa.evidence_pages == [pages[t1], pages[t2]]
    elif qa.kind in ("caption-page", "caption-text"):
        (page,) = [p for p, c in CAPTIONS.items() if c.startswith(qa.anchor + ":")]
        assert qa.evidence_pages == [page]
        assert qa.answer == (page if qa.kind == "caption-page" else CAPTIONS[page])
    elif qa.kind == "caption-count":
        a, b = map(int, qa.anchor.split()[1].split("-"))
        assert qa.answer == sum(1 for p, c in CAPTIONS.items() if a <= p <= b and c.startswith("Figure"))
    elif qa.kind == "sentence-page":
        (page,) = [p for p in range(1, 13) for k in range(3) if sentence(p, k) == qa.anchor]
        assert qa.answer == page and qa.evidence_pages == [page]
    elif qa.kind == "sentence-pages":
        quoted = qa.question.split('"')[1::2]
        assert qa.answer == [p for s in quoted for p in range(1, 13) for k in range(3) if sentence(p, k) == s]
    elif qa.kind == "sentence-complete":
        page = qa.evidence_pages[0]
        head = qa.question.split('"')[1].removesuffix(" ...")
        assert f"{head} {qa.answer}" in [sentence(page, k) for k in range(3)]
    elif qa.kind == "caption-label":
        (page,) = [p for p, c in CAPTIONS.items() if c.endswith(qa.anchor)]
        assert CAPTIONS[page].startswith(qa.answer + ":") and qa.evidence_pages == [page]
    elif qa.kind == "sentence-number":
        blanked = qa.question.split('"')[1]
        page = qa.evidence_pages[0]
        assert blanked.replace("___", str(qa.answer)) in [sentence(page, k) for k in range(3)]
    elif qa.kind == "line-page":
        on = {p + 1: " ".join(" ".join(it.text.split()) for it in report_doc.items if it.text and it.page == p)
              for p in range(12)}
        assert [p for p, t in on.items() if qa.anchor in t] == [qa.answer] == qa.evidence_pages
    elif qa.kind == "page-label":
        assert qa.answer == labels[qa.evidence_pages[0] - 1]
    elif qa.kind == "unanswerable":
        assert qa.answer == NOT_ANSWERABLE and qa.answer_format == "None" and qa.evidence_pages == []
    else:
        raise AssertionError(qa.kind)


def test_segments_are_coherent(report_doc):
    for seed in range(20):
        seg = sample_segment(report_doc, random.Random(seed), 4, 6)
        assert 4 <= seg.stop - seg.start <= 6 and 0 <= seg.start and seg.stop <= 12
        assert seg.start + 1 in [p for _, _, p in SECTIONS]  # starts where a section starts
    assert sample_segment(report_doc, random.Random(0), 8, 15).stop - sample_segment(report_doc, random.Random(0), 8, 15).start >= 8
    assert sample_segment(report_doc, random.Random(0), 20, 30) == Segment(0, 12)  # short documents: whole


def test_template_answers_are_verified_against_the_source(report_doc):
    writer = TemplateWriter(per_kind=5, unanswerable_rate=0.2)
    kinds, tasks = set(), set()
    for seed in range(6):
        seg = Segment(0, 12) if seed == 0 else sample_segment(report_doc, random.Random(seed), 8, 12)
        qas = writer.write(report_doc, seg, random.Random(seed))
        assert qas
        for qa in qas:
            check_answer(qa, report_doc)
            assert all(part in qa.question for part in re.findall(r'"([^"]+)"', qa.anchor) or [qa.anchor])
            assert all(seg.start < p <= seg.stop for p in qa.evidence_pages)  # written from the segment only
            kinds.add(qa.kind)
            tasks.add(qa.task)
    assert tasks == {"extract-single", "extract-multi", "reasoning"}
    assert kinds >= {"section-start", "sections-between", "section-distance", "caption-page", "caption-text",
                     "caption-count", "caption-label", "sentence-page", "sentence-pages", "sentence-complete", "line-page",
                     "page-label", "unanswerable"}


def test_unanswerable_rate(report_doc):
    qas = TemplateWriter(per_kind=3, unanswerable_rate=0.25).write(report_doc, Segment(0, 12), random.Random(1))
    share = sum(q.answer == NOT_ANSWERABLE for q in qas) / len(qas)
    assert 0.15 <= share <= 0.3
    assert not any(q.answer == NOT_ANSWERABLE for q in TemplateWriter(unanswerable_rate=0).write(report_doc, Segment(0, 12), random.Random(1)))


def test_ocr_baselines(report_doc):
    qas = [q for q in TemplateWriter(ocr_baselines=True).write(report_doc, Segment(2, 10), random.Random(0)) if q.task.startswith("ocr")]
    full, needle = qas
    flat = " ".join(full.answer.split())  # the text layer's line breaks are kept in the answer
    assert full.task == "ocr-full" and sentence(12, 2) in flat and sentence(1, 0) in flat
    assert needle.task == "ocr-needle" and 1 <= len(needle.evidence_pages) <= 3
    assert all(sentence(p, 0) in " ".join(needle.answer.split()) for p in needle.evidence_pages)


def test_sample_tokens_and_answer_span_are_exact(report_dataset, report_doc, hf_processor, qwen_vl_utils):
    qa = QA("On which page is the caption of Figure 2?", 6, "Int", [6], "extract-single", "caption-page", "Figure 2")
    sample = build_sample(report_doc, qa, str(report_dataset), "template", Segment(4, 12))
    messages = resolve_images(sample.messages, report_dataset)
    proc = hf_processor(3136, 1003520)  # the pdf-budget token bounds
    images, _ = qwen_vl_utils.process_vision_info(messages)
    ids = proc(text=[proc.apply_chat_template(messages, tokenize=False)], images=images, return_tensors="np")["input_ids"][0]
    assert len(ids) == sample.total_tokens and len(images) == 12
    answer = tk.load_tokenizer().decode(ids[sample.answer_start : sample.answer_end].tolist(), skip_special_tokens=False)
    assert answer == "6<|im_end|>"


def test_synth_writes_samples(report_dataset, tmp_path):
    summary = synth(report_dataset, tmp_path / "s", writer=TemplateWriter(unanswerable_rate=0.1), segments=2, seed=3)
    samples = read_samples(tmp_path / "s" / "samples.parquet")
    assert summary["samples"] == len(samples) > 10 and summary["documents"] == 1
    assert set(summary["tasks"]) == {"extract-single", "extract-multi", "reasoning"}
    assert len({s.sample_id for s in samples}) == len(samples)
    again = synth(report_dataset, tmp_path / "t", writer=TemplateWriter(unanswerable_rate=0.1), segments=2, seed=3)
    assert again["samples"] == summary["samples"]
    assert [s.question for s in read_samples(tmp_path / "t" / "samples.parquet")] == [s.question for s in samples]
    s = samples[0]
    assert s.messages[-1] == {"role": "assistant", "content": [{"type": "text", "text": QA(
        "", __import__("json").loads(s.answer), s.answer_format, [], "reasoning", "x").answer_text}]}
    assert sum(1 for c in s.messages[0]["content"] if c["type"] == "image") == 12


PAGE_KINDS = ("section-start", "caption-page", "sentence-page", "sentence-pages", "line-page")


def test_synth_samples_show_page_images_and_the_page_numbers_they_answer(report_dataset, tmp_path, hf_processor,
                                                                       qwen_vl_utils):
    """The MMProLong setting: pages as images only, a "Page N" marker before each; every page
    answer is the marker of its evidence page, and no other answer is written in the text the
    model sees (markers and question)."""
    import json

    synth(report_dataset, tmp_path / "s", writer=TemplateWriter(per_kind=5, ocr_baselines=True), segments=2, seed=1)
    samples = read_samples(tmp_path / "s")
    assert {s.kind for s in samples} >= set(PAGE_KINDS) | {"caption-text", "sentence-complete", "ocr-full"}
    for s in samples:
        assert s.extra["view"] == {"items": "images", "page_markers": True, "frames": "video"}
        content = s.user_content()
        markers = {}
        for k, (element, prov) in enumerate(zip(content, s.items)):
            if element["type"] == "text":
                assert prov["marker"] and element["text"] == f"Page {prov['page'] + 1}"
                assert s.items[k + 1]["kind"] == "page-image" and s.items[k + 1]["page"] == prov["page"]
                markers[prov["page"] + 1] = element["text"]
        assert sorted(markers) == list(range(1, 13))
        answer = json.loads(s.answer)
        if s.kind in PAGE_KINDS:
            assert all(f"Page {p}" == markers[p] for p in (answer if isinstance(answer, list) else [answer]))
        elif s.kind in ("caption-text", "sentence-complete", "ocr-full", "ocr-needle"):
            seen = "\n".join(e["text"] for e in content if e["type"] == "text")
            assert answer not in seen and " ".join(answer.split()[:6]) not in seen
    s = next(s for s in samples if s.kind == "sentence-pages")
    assert json.loads(s.messages[-1]["content"][0]["text"]) == json.loads(s.answer)  # list answers round-trip
    messages = resolve_images(s.messages, report_dataset)  # markers and images: counts still exact
    proc = hf_processor(3136, 1003520)
    images, _ = qwen_vl_utils.process_vision_info(messages)
    ids = proc(text=[proc.apply_chat_template(messages, tokenize=False)], images=images, return_tensors="np")["input_ids"][0]
    assert len(ids) == s.total_tokens


SLIDES = [["Harbour traffic review", "Container ships arrived early", "Fishing boats stayed in port"],
          ["Warehouse capacity plans", "North yard opens in spring", "Cranes replaced after storms"],
          ["Budget for the coming season", "Dredging the outer channel", "Training for new pilots"]]


def scanned_deck(path) -> None:
    """Slides as images only (no text layer), as a scanner or a slide exporter makes them."""
    import io

    import pymupdf
    from PIL import Image, ImageDraw, ImageFont

    from mmlong.render.glyph import FONT_DIR

    font = ImageFont.truetype(str(FONT_DIR / "DejaVuSans.ttf"), 44)
    doc = pymupdf.open()
    for lines in SLIDES:
        img = Image.new("RGB", (1200, 900), "white")
        draw = ImageDraw.Draw(img)
        for k, line in enumerate(lines):
            draw.text((80, 120 + 180 * k), line, fill="black", font=font)
        buf = io.BytesIO()
        img.save(buf, "PNG")
        doc.new_page(width=800, height=600).insert_image(pymupdf.Rect(0, 0, 800, 600), stream=buf.getvalue())
    doc.save(path)


def test_synth_reads_scanned_pages_and_reports_documents_without_samples(tmp_path, monkeypatch):
    """A text-only dataset is shown as text (markers kept); a scanned deck (images, no text
    layer) is read with OCR to write questions (cached with the dataset), and without OCR it
    yields no sample and the summary says why."""
    import pytest

    from mmlong.ingest import ingest
    from tests.conftest import write_pdf

    pytest.importorskip("rapidocr_onnxruntime")
    (tmp_path / "in").mkdir()
    write_pdf(tmp_path / "in" / "text.pdf", [" ".join(sentence(p, k) for k in range(3)) for p in range(1, 4)])
    scanned_deck(tmp_path / "in" / "scan.pdf")
    ingest([str(tmp_path / "in" / "text.pdf")], tmp_path / "text", preset="pdf-text", workers=1, progress=False)
    ingest([str(tmp_path / "in" / "scan.pdf")], tmp_path / "scan", workers=1, progress=False)
    summary = synth(tmp_path / "text", tmp_path / "s1")
    assert summary["samples"] and summary["shown_as_text"] == [str((tmp_path / "in" / "text.pdf").resolve())]
    s = read_samples(tmp_path / "s1")[0]
    assert s.extra["view"] == {"items": "all", "page_markers": True, "frames": "video"}
    assert s.user_content()[0]["text"] == "Page 1\n" and s.items[1]["page"] == 0 and not s.items[1].get("marker")

    off = synth(tmp_path / "scan", tmp_path / "s2", ocr=None)
    assert off["samples"] == 0 and "scanned pages not read: OCR is off" in next(iter(off["without_samples"].values()))
    summary = synth(tmp_path / "scan", tmp_path / "s3", ocr="rapidocr")
    assert summary["ocr"] == {"documents": 1, "pages": 3} and not summary["without_samples"]
    samples = read_samples(tmp_path / "s3")
    lines = [s for s in samples if s.kind == "line-page"]
    assert lines and all(s.anchor in SLIDES[s.evidence_pages[0] - 1] for s in lines)  # read right, on the right page
    assert all(c["type"] == "image" or c["text"].startswith("Page ") for s in samples for c in s.user_content()[:-1])
    import mmlong.render.ocr as ocr

    monkeypatch.setattr(ocr, "engine", lambda name: (_ for _ in ()).throw(AssertionError("read again")))
    assert synth(tmp_path / "scan", tmp_path / "s4", ocr="rapidocr")["samples"] == len(samples)  # from the cache


def test_unanswerable_questions_use_the_answerable_templates(report_doc):
    """Unanswerable questions ask, in the answerable questions' own wording, about sections and
    sentences of another document and figure numbers this one does not have."""
    from mmlong.schema import TEXT, Document, Item

    words = ["harbour", "ledger", "lists", "crates", "of", "tea", "shipped", "from", "the", "eastern", "ports", "before",
             "winter", "storms", "closed", "roads"]
    pages = [" ".join(words[(p + k) % 16] for k in range(12)).capitalize() + "." for p in range(10)]
    other = Document("other", "other.pdf", "pdf", "", num_pages=10,
                     metadata={"toc": [[1, f"Voyage {w}", p * 2 + 1] for p, w in enumerate(["north", "south", "west"])]},
                     items=[Item(TEXT, text=t, page=p, tokens=20) for p, t in enumerate(pages)])
    writer = TemplateWriter(per_kind=3, unanswerable_rate=0.4)
    first = writer.write(report_doc, Segment(0, 12), random.Random(0))
    qas = writer.write(other, Segment(0, 10), random.Random(0))
    unanswerable = [q for q in qas if q.answer == NOT_ANSWERABLE]
    assert len(unanswerable) >= 3
    report_titles = {t for _, t, _ in SECTIONS}
    kinds = set()
    for q in unanswerable:
        template = q.question.split('"')[0] if '"' in q.question else q.question.rsplit(" ", 1)[0]
        assert any(a.question.startswith(template) for a in first + qas if a.answer != NOT_ANSWERABLE), q.question
        quoted = q.question.split('"')[1] if '"' in q.question else None
        if quoted:
            assert quoted in report_titles | {sentence(p, k) for p in range(1, 13) for k in range(3)}
            assert all(quoted not in t for t in pages)
        kinds.add(template)
    assert len(kinds) >= 2  # sections and sentences of the other document, not one fixed phrasing


ROWS = [["Port", "Ships", "Crates"], ["Avonmouth", "41", "1200"], ["Bristol", "17", "860"], ["Cardiff", "29", "2310"]]


def test_content_questions_read_tables_and_numbers(tmp_path):
    """Cell lookups and comparisons from a real table grid, and numbers read in the text; each
    answer checked against the rows the PDF was drawn from."""
    import pymupdf

    from mmlong.schema import TEXT, Document, Item

    pdf = pymupdf.open()
    for p in range(3):
        page = pdf.new_page(width=595, height=842)
        if p == 1:
            for r, row in enumerate(ROWS):
                for c, cell in enumerate(row):
                    rect = pymupdf.Rect(60 + 150 * c, 100 + 30 * r, 210 + 150 * c, 130 + 30 * r)
                    page.draw_rect(rect, color=(0, 0, 0), width=0.8)
                    page.insert_textbox(rect + (4, 6, 0, 0), cell, fontsize=11)
    pdf.save(tmp_path / "t.pdf")
    text = "The harbour master counted 47 barges waiting outside the southern breakwater that morning."
    doc = Document("t", str(tmp_path / "t.pdf"), "pdf", "", num_pages=3,
                   items=[Item(TEXT, text=text, page=1, tokens=20)])
    qas = TemplateWriter(per_kind=6, unanswerable_rate=0).write(doc, Segment(0, 3), random.Random(0))
    by_kind = {}
    for qa in qas:
        by_kind.setdefault(qa.kind, []).append(qa)
    rows = {r[0]: dict(zip(ROWS[0], r)) for r in ROWS[1:]}
    for qa in by_kind["table-cell"]:
        col, row = re.findall(r'"([^"]+)"', qa.question)
        assert str(qa.answer) == rows[row][col] and qa.evidence_pages == [2] and qa.answer_format in ("Int", "Str")
    for qa in by_kind["table-compare"]:
        col, a, b = re.findall(r'"([^"]+)"', qa.question)
        assert qa.answer == max((a, b), key=lambda r: int(rows[r][col])) and qa.task == "reasoning"
    (number,) = by_kind["sentence-number"]
    assert number.answer == 47 and number.answer_format == "Int"
    assert number.question.split('"')[1].replace("___", "47") == text


def test_list_questions_read_the_items_under_a_heading(tmp_path):
    """A bulleted and a numbered list drawn in a PDF, read back through ingest: the list-items
    answer is the items in order (a List), the count is their number, each on its page."""
    import pymupdf

    from mmlong import store
    from mmlong.ingest import ingest

    lists = {1: ("Before you start", ["Back up your data", "Check the power supply", "Print these notes"]),
             2: ("Steps of the installation", ["Boot from the install medium", "Partition the disk", "Choose a mirror",
                                                "Reboot into the new system"])}
    pdf = pymupdf.open()
    for p in range(3):
        page = pdf.new_page(width=595, height=842)
        page.insert_textbox(pymupdf.Rect(50, 50, 545, 120), sentence(p, 0), fontsize=11)
        if p in lists:
            head, items = lists[p]
            marks = ["-"] * len(items) if p == 1 else [f"{i + 1}." for i in range(len(items))]
            body = head + "\n" + "\n".join(f"{m} {x}" for m, x in zip(marks, items))
            page.insert_textbox(pymupdf.Rect(50, 200, 545, 400), body, fontsize=11)
    pdf.save(tmp_path / "l.pdf")
    ingest([str(tmp_path / "l.pdf")], tmp_path / "ds", workers=1, progress=False)
    (doc,) = store.iter_documents(tmp_path / "ds", images=False)
    qas = TemplateWriter(per_kind=6, unanswerable_rate=0).write(doc, Segment(0, 3), random.Random(0))
    got = {qa.anchor: qa for qa in qas if qa.kind == "list-items"}
    counts = {qa.anchor: qa for qa in qas if qa.kind == "list-count"}
    for p, (head, items) in lists.items():
        assert got[head].answer == items and got[head].answer_format == "List" and got[head].evidence_pages == [p + 1]
        assert counts[head].answer == len(items) and counts[head].task == "reasoning"
        assert got[head].answer_text == json.dumps(items)
    from mmlong.synthesis.template import _lists

    # a bullet glyph on its own line (how some PDFs extract) and an item wrapped onto a second line
    assert _lists({4: ["Tools\n\u2022\nA screwdriver\n\u2022 A cable that is long\nenough to reach\nClosing words end here."]}) == \
        [(4, "Tools", ["A screwdriver", "A cable that is long enough to reach"])]
