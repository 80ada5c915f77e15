"""The template writer: long-document QA from a document's own structure and text, no model.

Every answer comes from the outline, captions, page labels and text layer, so every answer
can be checked against the source. Pages in questions and answers are 1-based positions in
the file ("page 5" is the fifth page of the PDF).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from collections import Counter
from dataclasses import dataclass, field

from mmlong.samples import NOT_ANSWERABLE, QA, Segment
from mmlong.schema import Document
from mmlong.synthesis.segments import page_texts
from mmlong.synthesis.tables import Table, number, pdf_tables
from mmlong.text import join_lines

_CAPTION = re.compile(r"^\s*((?:Figure|Fig\.|Table)\s+(\d+))\s*[:.]\s*(.+)", re.S)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def _sentences(text: str) -> list[str]:
    out = []
    for s in _SENTENCE_END.split(join_lines(text)):
        words = s.split()
        if 8 <= len(words) <= 40 and s[-1] in ".!?" and sum(c.isalpha() for c in s) > 0.7 * len(s.replace(" ", "")):
            out.append(s)
    return out


@dataclass
class _Facts:
    """What the template writer reads off a document."""

    toc: list[tuple[int, str, int]]
    titles: Counter
    captions: list[tuple[int, str, str]]
    """(page, label, caption text)."""
    labels: Counter
    sentences: list[tuple[int, str]]
    """(page, sentence) for sentences found once in the whole document."""
    lines: list[tuple[int, str]] = field(default_factory=list)
    """(page, line) for short lines (titles, bullets, labels: 3-12 words) found once in the
    whole document: what slide decks and scanned pages (OCR text) have instead of sentences."""
    texts: dict[int, list[str]] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    """Clean tables of the segment's pages (PDF sources still on disk)."""
    lists: list[tuple[int, str, list[str]]] = field(default_factory=list)
    """(page, heading, items) for bulleted or numbered lists under a heading found once in the
    whole document."""


def _facts(doc: Document, segment: Segment | None = None) -> _Facts:
    texts = page_texts(doc)
    toc = [(lvl, join_lines(title), page - 1) for lvl, title, page in doc.metadata.get("toc", []) if 1 <= page <= doc.num_pages]
    captions = []
    for page, blocks in texts.items():
        for block in blocks:
            if m := _CAPTION.match(block):
                captions.append((page, m[1].replace("Fig.", "Figure"), join_lines(block)))
    whole = "\n".join(join_lines(b) for page in sorted(texts) for b in texts[page])
    sentences = [(p, s) for p in sorted(texts) for b in texts[p] for s in _sentences(b) if whole.count(s) == 1]
    lines = [(p, line) for p in sorted(texts) for b in texts[p] for line in _lines(b) if whole.count(line) == 1]
    tables = pdf_tables(doc.source, segment.pages) if segment and doc.kind == "pdf" and Path(doc.source).is_file() else []
    lists = [(p, head, items) for p, head, items in _lists(texts) if whole.count(head) == 1]
    return _Facts(toc, Counter(t for _, t, _ in toc), captions, Counter(label for _, label, _ in captions), sentences,
                  lines, texts, tables, lists)


_BULLET = re.compile(r"^(?:[•▪◦●○■□‣∙·*–-]|\(?\d{1,2}[.)]|\(?[a-z][.)])(?:\s+|$)")


def _lists(texts: dict[int, list[str]], min_items: int = 2, max_items: int = 12) -> list[tuple[int, str, list[str]]]:
    """Lists in the page text: runs of lines that start with a bullet or an enumerator (a bullet
    alone on its line goes with the next line; a line starting in lower case continues the item
    before it), under the line before the run, when that line reads as a heading (1-12 words,
    mostly letters, not a sentence)."""
    out = []
    for page in sorted(texts):
        lines = [" ".join(raw.split()) for block in texts[page] for raw in block.splitlines()]
        lines = [x for x in lines if x]
        heading, items, bullet_alone = None, [], False
        for line in lines + [""]:
            m = _BULLET.match(line)
            if m and not line[m.end():].strip():  # the bullet glyph on its own line
                bullet_alone = True
                continue
            if m or bullet_alone:
                items.append(line[m.end():] if m else line)
                bullet_alone = False
                continue
            if items and line[:1].islower():
                items[-1] += " " + line
                continue
            if heading and min_items <= len(items) <= max_items and all(1 <= len(x.split()) <= 15 for x in items):
                out.append((page, heading.rstrip(":"), items))
            items = []
            letters = sum(c.isalpha() for c in line)
            words = len(line.split())
            heading = line if 1 <= words <= 12 and letters >= 3 and letters > 0.6 * len(line.replace(" ", "")) and \
                line[-1:] not in ".!?," else None
    return out


def _lines(block: str) -> list[str]:
    out = []
    for raw in block.splitlines():
        line = " ".join(raw.split()).strip(" -•*·")
        letters = sum(c.isalpha() for c in line)
        if 3 <= len(line.split()) <= 12 and letters >= 12 and letters > 0.7 * len(line.replace(" ", "")):
            out.append(line)
    return out


@dataclass
class TemplateWriter:
    """QA pairs from structure and text, no model: outline, captions, page labels, counts and
    sentences quoted from the pages."""

    name: str = "template"
    per_kind: int = 2
    """At most this many questions of each kind per segment."""
    unanswerable_rate: float = 0.1
    """Share of questions asked about something the document does not have."""
    ocr_baselines: bool = False
    """Also write the OCR-full and OCR-needle transcription tasks (ablation baselines)."""
    _foreign: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def write(self, doc: Document, segment: Segment, rng: random.Random) -> list[QA]:
        f = _facts(doc, segment)
        qas: list[QA] = []
        for make in (_section_start, _sections_between, _section_distance, _caption_page, _caption_text,
                     _caption_count, _caption_label, _sentence_page, _sentence_pages, _sentence_complete, _sentence_number,
                     _line_page, _table_cell, _table_compare, _list_items, _list_count, _page_label):
            qas += make(doc, f, segment, rng)[: self.per_kind]
        if self.ocr_baselines:
            qas += _ocr(doc, f, segment, rng)
        n_unanswerable = round(self.unanswerable_rate / (1 - self.unanswerable_rate) * len(qas)) if qas else 0
        qas += _unanswerable(f, n_unanswerable, rng, self._foreign)
        self._remember(f, rng)
        return qas

    def _remember(self, f: _Facts, rng: random.Random, keep: int = 200) -> None:
        """Titles and sentences of the documents written so far: the unanswerable questions of
        the next documents ask about them."""
        for key, new in (("titles", [t for t in f.titles if f.titles[t] == 1]), ("sentences", [x for _, x in f.sentences])):
            pool = self._foreign.setdefault(key, [])
            pool += rng.sample(new, min(len(new), 20))
            del pool[: max(0, len(pool) - keep)]


def _in(segment: Segment, page: int) -> bool:
    return segment.start <= page < segment.stop


def _section_start(doc, f: _Facts, seg: Segment, rng) -> list[QA]:
    entries = [e for e in f.toc if _in(seg, e[2]) and f.titles[e[1]] == 1]
    return [QA(f'On which page does the section "{t}" begin?', p + 1, "Int", [p + 1], "extract-single",
               "section-start", f'section "{t}"') for _, t, p in rng.sample(entries, len(entries))]


def _sections_between(doc, f: _Facts, seg: Segment, rng) -> list[QA]:
    entries = [e for e in f.toc if _in(seg, e[2])]
    pages = sorted({p for _, _, p in entries})
    if len(pages) < 2:
        return []
    i = rng.randrange(len(pages) - 1)
    a, b = pages[i], pages[min(len(pages) - 1, i + rng.randint(1, 3))]
    titles = [t for _, t, p in entries if a <= p <= b]
    return [QA(f"Which sections begin on pages {a + 1}-{b + 1}? List their titles in order.", titles, "List",
               sorted({p + 1 for _, _, p in entries if a <= p <= b}), "extract-multi", "sections-between",
               f"pages {a + 1}-{b + 1}")]


def _section_distance(doc, f: _Facts, seg: Segment, rng) -> list[QA]:
    unique = [e for e in f.toc if _in(seg, e[2]) and f.titles[e[1]] == 1]
    pairs = [(x, y) for x, y in zip(unique, unique[1:]) if y[2] > x[2]]
    return [QA(f'How many pages after the first page of section "{x[1]}" does section "{y[1]}" begin?', y[2] - x[2],
               "Int", [x[2] + 1, y[2] + 1], "reasoning", "section-distance", f'sections "{x[1]}" and "{y[1]}"')
            for x, y in rng.sample(pairs, len(pairs))]


def _caption_page(doc, f: _Facts, seg: Segment, rng) -> list[QA]:
    caps = [c for c in f.captions if _in(seg, c[0]) and f.labels[c[1]] == 1]
    return [QA(f"On which page is the caption of {label}?", p + 1, "Int", [p + 1], "extract-single", "caption-page", label)
            for p, label, _ in rng.sample(caps, len(caps))]


def _caption_text(doc, f: _Facts, seg: Segment, rng) -> list[QA]:
    caps = [c for c in f.captions if _in(seg, c[0]) and f.labels[c[1]] == 1]
    return [QA(f"What does the caption of {label} say? Quote it.", text, "Str", [p + 1], "extract-single",
               "caption-text", label) for p, label, text in rng.sample(caps, len(caps))]


def _caption_count(doc, f: _Facts, seg: Segment, rng) -> list[QA]:
    figures = [p for p, label, _ in f.captions if label.startswith("Figure") and _in(seg, p)]
    if not figures:
        return []
    a = rng.randint(seg.start, min(figures))
    b = rng.randint(max(figures), seg.stop - 1)
    inside = [p for p in figures if a <= p <= b]
    return [QA(f"How many figure captions appear on pages {a + 1}-{b + 1}?", len(inside), "Int",
               sorted({p + 1 for p in inside}), "reasoning", "caption-count", f"pages {a + 1}-{b + 1}")]


def _sentence_page(doc, f: _Facts, seg: Segment, rng) -> list[QA]:
    sents = [s for s in f.sentences if _in(seg, s[0])]
    return [QA(f'On which page does this sentence appear: "{s}"', p + 1, "Int", [p + 1], "extract-single",
               "sentence-page", s) for p, s in rng.sample(sents, min(len(sents), 4))]


def _caption_label(doc, f: _Facts, seg: Segment, rng) -> list[QA]:
    caps = [c for c in f.captions if _in(seg, c[0]) and f.labels[c[1]] == 1]
    out = []
    for p, label, text in rng.sample(caps, len(caps)):
        body = _CAPTION.match(text)[3].strip()
        if len(body.split()) >= 3 and sum(1 for _, _, t in f.captions if body in t) == 1:
            out.append(QA(f'Which figure or table has the caption "{body}"? Give its label and number.', label, "Str",
                          [p + 1], "extract-single", "caption-label", body))
    return out


_NUMBER_WORD = re.compile(r"(?<![\w.,])(\d+(?:\.\d+)?)(?![\w.,]\w)")


def _sentence_number(doc, f: _Facts, seg: Segment, rng) -> list[QA]:
    """A sentence with exactly one number, the number blanked: a value read in the text."""
    out = []
    sents = [s for s in f.sentences if _in(seg, s[0]) and len(_NUMBER_WORD.findall(s[1])) == 1]
    for p, s in rng.sample(sents, min(4, len(sents))):
        m = _NUMBER_WORD.search(s)
        blanked = s[: m.start()] + "___" + s[m.end():]
        value = float(m[1]) if "." in m[1] else int(m[1])
        out.append(QA(f'Which number is missing from this sentence of page {p + 1}: "{blanked}"', value,
                      "Float" if isinstance(value, float) else "Int", [p + 1], "extract-single", "sentence-number",
                      f"page {p + 1}"))
    return out


def _table_cell(doc, f: _Facts, seg: Segment, rng) -> list[QA]:
    """Cell lookup by row label and column header."""
    out = []
    for t in rng.sample(f.tables, len(f.tables)):
        r, c = rng.choice(t.rows), rng.randrange(1, len(t.header))
        value: object = r[c]
        fmt = "Str"
        if t.numeric(c) and not r[c].endswith("%") and "$" not in r[c]:
            value, fmt = (number(r[c]), "Float") if "." in r[c] else (int(number(r[c])), "Int")
        out.append(QA(f'In the table on page {t.page + 1}, what is the "{t.header[c]}" of "{r[0]}"?', value, fmt,
                      [t.page + 1], "extract-single", "table-cell", f'page {t.page + 1}, "{t.header[c]}" of "{r[0]}"'))
    return out


def _table_compare(doc, f: _Facts, seg: Segment, rng) -> list[QA]:
    """Two rows of a numeric column compared: which is larger (reasoning over two cells)."""
    out = []
    for t in rng.sample(f.tables, len(f.tables)):
        cols = [c for c in range(1, len(t.header)) if t.numeric(c)]
        if not cols:
            continue
        c = rng.choice(cols)
        a, b = rng.sample(t.rows, 2)
        if number(a[c]) == number(b[c]):
            continue
        winner = a if number(a[c]) > number(b[c]) else b
        out.append(QA(f'In the table on page {t.page + 1}, which has the larger "{t.header[c]}": "{a[0]}" or "{b[0]}"?',
                      winner[0], "Str", [t.page + 1], "reasoning", "table-compare",
                      f'page {t.page + 1}, "{t.header[c]}" of "{a[0]}" and "{b[0]}"'))
    return out


def _list_items(doc, f: _Facts, seg: Segment, rng) -> list[QA]:
    """The items of the list under a heading, in order (a List answer)."""
    lists = [x for x in f.lists if _in(seg, x[0])]
    return [QA(f'On page {p + 1}, which items does the list under "{head}" give? List them in order.', items, "List",
               [p + 1], "extract-single", "list-items", head) for p, head, items in rng.sample(lists, len(lists))]


def _list_count(doc, f: _Facts, seg: Segment, rng) -> list[QA]:
    """How many items the list under a heading has (a count)."""
    lists = [x for x in f.lists if _in(seg, x[0])]
    return [QA(f'How many items does the list under "{head}" on page {p + 1} have?', len(items), "Int", [p + 1],
               "reasoning", "list-count", head) for p, head, items in rng.sample(lists, len(lists))]


def _line_page(doc, f: _Facts, seg: Segment, rng) -> list[QA]:
    lines = [x for x in f.lines if _in(seg, x[0])]
    return [QA(f'On which page does the text "{x}" appear?', p + 1, "Int", [p + 1], "extract-single", "line-page", x)
            for p, x in rng.sample(lines, min(len(lines), 4))]


def _sentence_pages(doc, f: _Facts, seg: Segment, rng) -> list[QA]:
    sents = [s for s in f.sentences if _in(seg, s[0])]
    out = []
    for _ in range(4):
        if len({p for p, _ in sents}) < 2:
            break
        (p1, s1), (p2, s2) = rng.sample(sents, 2)
        if p1 == p2:
            continue
        (p1, s1), (p2, s2) = sorted([(p1, s1), (p2, s2)])
        out.append(QA(f'On which pages do these two sentences appear, in order: "{s1}" and "{s2}"?', [p1 + 1, p2 + 1],
                      "List", [p1 + 1, p2 + 1], "extract-multi", "sentence-pages", f'"{s1}" and "{s2}"'))
    return out


def _sentence_complete(doc, f: _Facts, seg: Segment, rng) -> list[QA]:
    """The beginning of a sentence (at least half of it, and long enough to be found once in
    the document); the answer is the rest (at least three words)."""
    out = []
    sents = [s for s in f.sentences if _in(seg, s[0])]
    for p, s in rng.sample(sents, min(4, len(sents))):
        words = s.split()
        for cut in range(len(words) // 2, len(words) - 2):
            head = " ".join(words[:cut])
            if sum(1 for _, other in f.sentences if other.startswith(head + " ")) == 1:
                out.append(QA(f'Complete the sentence on page {p + 1} that begins "{head} ..."', " ".join(words[cut:]),
                              "Str", [p + 1], "extract-single", "sentence-complete", f"page {p + 1}"))
                break
    return out


def _page_label(doc, f: _Facts, seg: Segment, rng) -> list[QA]:
    labels = doc.metadata.get("page_labels") or []
    pages = [p for p in seg.pages if p < len(labels) and labels[p] and labels[p] != str(p + 1)]
    return [QA(f"What page number is printed on page {p + 1} of the file?", labels[p], "Str", [p + 1], "extract-single",
               "page-label", f"page {p + 1}") for p in rng.sample(pages, len(pages))]


def _ocr(doc, f: _Facts, seg: Segment, rng) -> list[QA]:
    def text(pages) -> str:
        return "\n\n".join("\n".join(f.texts.get(p, [])) for p in pages)

    out = [QA("Transcribe the text of every page of this document, in order.", text(range(doc.num_pages)), "Str",
              [p + 1 for p in range(doc.num_pages) if f.texts.get(p)], "ocr-full", "ocr-full", "every page")]
    k = rng.randint(1, min(3, len(seg.pages)))
    start = rng.randint(seg.start, seg.stop - k)
    chosen = range(start, start + k)
    out.append(QA(f"Transcribe the text of pages {start + 1}-{start + k}.", text(chosen), "Str",
                  [p + 1 for p in chosen], "ocr-needle", "ocr-needle", f"pages {start + 1}-{start + k}"))
    return out


def _unanswerable(f: _Facts, n: int, rng: random.Random, foreign: dict[str, list[str]]) -> list[QA]:
    """Questions in the very templates of the answerable ones (section start, sentence page,
    caption page) about what this document does not have: section titles and sentences of
    other documents of the dataset, figure numbers it skips or stops before. Nothing in the
    wording tells them apart from answerable questions."""
    whole = "\n".join(join_lines(b) for blocks in f.texts.values() for b in blocks)
    titles = [t for t in foreign.get("titles", []) if t not in f.titles and t not in whole]
    sentences = [x for x in foreign.get("sentences", []) if x not in whole]
    numbers = {int(label.split()[-1]) for label in f.labels if label.startswith("Figure")}
    missing = [k for k in range(1, max(numbers, default=0) + 4) if k not in numbers]
    makers = [m for m, pool in (("section", titles), ("sentence", sentences)) if pool] + ["figure"]
    out = []
    for i in range(n):
        kind = makers[i % len(makers)]
        if kind == "section":
            t = titles.pop(rng.randrange(len(titles)))
            out.append(QA(f'On which page does the section "{t}" begin?', NOT_ANSWERABLE, "None", [], "extract-single",
                          "unanswerable", f'section "{t}"'))
        elif kind == "sentence":
            x = sentences.pop(rng.randrange(len(sentences)))
            out.append(QA(f'On which page does this sentence appear: "{x}"', NOT_ANSWERABLE, "None", [], "extract-single",
                          "unanswerable", x))
        else:
            label = f"Figure {rng.choice(missing)}"
            out.append(QA(f"On which page is the caption of {label}?", NOT_ANSWERABLE, "None", [], "extract-single",
                          "unanswerable", label))
        makers = [m for m, pool in (("section", titles), ("sentence", sentences)) if pool] + ["figure"]
    return out
