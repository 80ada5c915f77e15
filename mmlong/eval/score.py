"""MMLongBench-Doc scoring: the reference scorer (eval/eval_score.py of mayubo2333/MMLongBench-Doc)
with its quirks, accuracy / F1 and breakdowns, the judge's extraction prompt, and a rule-based
answer extractor for runs without a judge model.

Scores must match published numbers, so the reference's oddities are kept. Where the reference
raises (unparsable Float gt or List value, two empty lists) the score is 0.0, as its run_lvlm.py
records it. One deliberate difference: List values are read with `ast.literal_eval`, never `eval`,
so an expression such as "[1+2]" is unparsable here (0.0) where the reference evaluates it.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from math import isclose
from typing import Any

from rapidfuzz.distance import Levenshtein

from mmlong.samples import NOT_ANSWERABLE

FAIL_TO_ANSWER = "Fail to answer"
FAILED_TO_EXTRACT = "Failed to extract"
_EXACT_PATTERNS = [
    re.compile(r"\b\d+(-\d+|\s\d+)?\b"),  # 123, 123-456, 12 34 (phone numbers)
    re.compile(r"\b\d{4}[-\s]\d{2}[-\s]\d{2}\b"),  # YYYY-MM-DD
    re.compile(r"\b\d{4}[-\s]\d{2}\b"),  # YYYY-MM
    re.compile(r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}"),  # email
]


def clean_string(s: Any) -> str:
    """Lowercase and strip; drop "(...)" groups, one leading and one trailing quote, leading "$"
    and trailing "%". The reference also tests for a trailing "mile"/"miles"/"million" but
    discards the result of its `rstrip`, so those words stay, here too."""
    s = re.sub(r"\s*\([^)]*\)", "", str(s).lower().strip()).strip()
    s = re.sub(r"^['\"]|['\"]$", "", s).strip()
    return s.lstrip("$").strip().rstrip("%").strip()


def is_exact_match(s: str) -> bool:
    """Whether a cleaned ground truth is compared exactly instead of by ANLS: URLs ("https://"),
    .py / ipynb names, "page ...", numbers like 123 / 123-456 / 12 34, a.m. / p.m. times,
    YYYY-MM(-DD) dates and email addresses."""
    return (
        "https://" in s or s.endswith((".py", "ipynb")) or s.startswith("page")
        or "a.m." in s or "p.m." in s or any(p.fullmatch(s) for p in _EXACT_PATTERNS)
    )


def anls(gt: str, pred: str, threshold: float = 0.5) -> float:
    """1 - Levenshtein(gt, pred) / max length, or 0.0 when that is <= threshold. As in the
    reference, the lengths are those of the upper-cased strings ("ß" counts 2)."""
    length = max(len(gt.upper()), len(pred.upper()))
    score = 1.0 - (float(Levenshtein.distance(gt, pred)) / float(length) if length else 0.0)
    return 0.0 if score <= threshold else score


def _decimals(x: float) -> int:
    text = str(x)  # the reference counts digits of str(x): "1.5e-05" gives 5, "1e-05" gives 3
    return len(text.split(".")[-1]) if "." in text else 3


def _score_int(gt: Any, pred: Any) -> float:
    try:
        return float(int(gt) == int(float(pred)))  # "3.0" parses as a pred, never as a gt
    except Exception:
        return float(gt == "")  # the reference then compares the untouched gt with ""


def _score_float(gt: Any, pred: Any) -> float:
    try:
        ref, value = float(clean_string(gt)), float(clean_string(pred))
    except ValueError:
        return 0.0  # pred: False in the reference; gt: the reference raises
    for item in (ref / 100, ref, ref * 100):
        if isclose(item, value, rel_tol=0.01):
            return 1.0
        digits = max(min(_decimals(value), _decimals(item)), 2)
        if round(value, digits) == round(item, digits):
            return 1.0
    return 0.0


def _score_str(gt: Any, pred: Any) -> float:
    gt, pred = clean_string(gt), clean_string(pred)
    return float(gt == pred) if is_exact_match(gt) else anls(gt, pred)


def _as_list(value: Any) -> list:
    if isinstance(value, str) and value.startswith("["):
        value = ast.literal_eval(value)
    return value if isinstance(value, list) else [value]


def _isfloat(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _score_list(gt: Any, pred: Any) -> float:
    try:
        gt, pred = _as_list(gt), _as_list(pred)
    except Exception:  # SyntaxError, ValueError, ...: the reference's eval raises too
        return 0.0
    if len(gt) != len(pred) or not gt:  # two empty lists: the reference fails on gt[0]
        return 0.0
    gt = sorted(clean_string(a) for a in gt)
    pred = sorted(clean_string(a) for a in pred)
    if _isfloat(gt[0]) or is_exact_match(gt[0]):  # decided by the smallest gt item alone
        return float("-".join(gt) == "-".join(pred))
    return min(anls(g, p) for g, p in zip(gt, pred))


_SCORERS = {"Int": _score_int, "Float": _score_float, "Str": _score_str, "None": _score_str}


def score_answer(gt: Any, pred: Any, answer_format: str) -> float:
    """Score in [0, 1] of an extracted answer against the ground truth, per answer format.

    Int: int(gt) == int(float(pred)); an unparsable value scores 0 (an empty gt scores 1).
    Float: both cleaned; equal to gt, gt/100 or gt*100 within rel_tol 0.01, or after rounding
    both to max(min(decimals of each), 2) places. Str / None ("Not answerable"): cleaned, then
    exact when `is_exact_match(gt)`, else ANLS. List (and any other format): values starting
    with "[" are parsed, others wrapped; different lengths score 0; items cleaned and sorted;
    if the first gt item is a number or exact-match string the "-"-joined lists must be equal,
    else the minimum pairwise ANLS.
    """
    return _SCORERS.get(answer_format, _score_list)(gt, pred)


def accuracy_and_f1(records: list[dict]) -> tuple[float, float]:
    """Mean score and F1 as the reference computes them. Records without "score" are skipped.
    recall = score sum over answerable gt / their count; precision = the same sum / number of
    preds other than "Not answerable"; F1 is 0.0 when either is undefined or both are 0."""
    scored = [r for r in records if "score" in r]
    if not scored:
        return 0.0, 0.0
    acc = sum(r["score"] for r in scored) / len(scored)
    hit = sum(r["score"] for r in scored if r["answer"] != NOT_ANSWERABLE)
    answerable = sum(r["answer"] != NOT_ANSWERABLE for r in scored)
    predicted = sum(r["pred"] != NOT_ANSWERABLE for r in scored)
    if not answerable or not predicted:
        return acc, 0.0
    recall, precision = hit / answerable, hit / predicted
    return acc, (2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0)


def _listed(record: dict, key: str) -> list:
    value = record.get(key, [])
    return ast.literal_eval(value) if isinstance(value, str) else list(value)


def breakdowns(records: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Accuracy of scored records per group as the reference's show_results, each {"acc",
    "count"} (acc 0.0 when empty). "pages": Single-page (one evidence page, answerable or not), Cross-page (any other
    number, answerable only), Unanswerable; "evidence_sources": once per source a record lists
    ('Pure-text (Plain-text)', 'Generalized-text (Layout)', 'Table', 'Chart', 'Figure');
    "doc_type". evidence_pages / evidence_sources may be lists or their string form."""
    pages: dict[str, list] = {"Single-page": [], "Cross-page": [], "Unanswerable": []}
    sources, doc_types = defaultdict(list), defaultdict(list)
    for r in records:
        answerable = r["answer"] != NOT_ANSWERABLE
        if len(_listed(r, "evidence_pages")) == 1:
            pages["Single-page"].append(r)
        elif answerable:
            pages["Cross-page"].append(r)
        if not answerable:
            pages["Unanswerable"].append(r)
        for source in _listed(r, "evidence_sources"):
            sources[source].append(r)
        if "doc_type" in r:
            doc_types[r["doc_type"]].append(r)
    groups = {"pages": pages, "evidence_sources": sources, "doc_type": doc_types}
    return {
        name: {k: {"acc": accuracy_and_f1(v)[0], "count": len(v)} for k, v in group.items()}
        for name, group in groups.items()
    }


def score_predictions(records: list[dict]) -> dict[str, Any]:
    """Score benchmark samples that carry a "pred" (the extracted short answer): overall acc and
    F1, one score per record in input order, and `breakdowns`. The records are not modified."""
    scored = [{**r, "score": score_answer(r["answer"], r["pred"], r["answer_format"])} for r in records]
    acc, f1 = accuracy_and_f1(scored)
    return {"acc": acc, "f1": f1, "scores": [r["score"] for r in scored], "breakdowns": breakdowns(scored)}


# A paraphrase of eval/prompt_for_answer_extraction.md. The reference sends it as the user turn,
# then an assistant turn "\n\nQuestion:{question}\nAnalysis:{response}\n" (temperature 0, at most
# 256 tokens), and reads the reply with `parse_judge_reply`.
JUDGE_PROMPT = """\
You are given a question and a free-form analysis that tries to answer it. Extract the answer \
from the analysis in one of these formats: (1) Integer, (2) Float, (3) String, (4) List.
- If the analysis finds that the question cannot be answered from the given documents, write \
"Not answerable".
- Exception: if the analysis only says that it cannot read or understand the images or \
documents, write "Fail to answer".
- Keep the extracted answer as short as possible, and reply in exactly this form:
```
Extracted answer: [answer]
Answer format: [answer format]
```
---
Question: Which questions does the inspection report ask about each service?
Analysis: The report asks: 1. Is the service safe? 2. Is the service effective? 3. Is it caring?
Extracted answer: ['Is the service safe?', 'Is the service effective?', 'Is it caring?']
Answer format: List
---
Question: How many regulations were breached according to the report?
Analysis: The report lists 10 breached regulations, namely Regulation 13, Regulation 12, ...
Extracted answer: 10
Answer format: Integer
---
Question: What share of Chinese adults follow US politics more closely since the election?
Analysis: The survey covers American respondents only and gives no figure for China.
Extracted answer: Not answerable
Answer format: String
---
Question: How many quotations from men over 50 does the report include?
Analysis: The image is too small and blurry for me to read the text.
Extracted answer: Fail to answer
Answer format: String
---
"""


def parse_judge_reply(reply: str) -> str:
    """The extracted answer: text between the first "Extracted answer:" and "Answer format:"
    (as the reference splits it), stripped; "Failed to extract" without an "Extracted answer:"
    before the first "Answer format:" (the reference then scores 0)."""
    parts = reply.split("Answer format:")[0].split("Extracted answer:")
    return parts[1].strip() if len(parts) > 1 else FAILED_TO_EXTRACT


_UNANSWERABLE = re.compile(r"not answerable|unanswerable|(?:cannot|can not|can't) be (?:determined|answered)", re.I)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")
_NUMBER = re.compile(r"(?<!\d)-?\d+(?:,\d{3})*(?:\.\d+)?")  # "10-12" gives 10 and 12
_LIST_SPLIT = re.compile(r",\s+(?:and\s+)?|;\s*|\s+and\s+")


def _tidy(line: str) -> str:
    line = _BULLET.sub("", line).replace("**", "").strip(" \t*_`")
    return re.sub(r"(?<!\.[A-Za-z])\.$", "", line).strip()  # "Berlin." -> "Berlin"; "p.m." kept


def _answer_lines(text: str, as_list: bool) -> list[str]:
    pos = text.lower().rfind("answer:")
    if pos >= 0:
        first_paragraph = re.split(r"\n\s*\n", text[pos + len("answer:"):].strip())[0]
        lines = [t for t in map(_tidy, first_paragraph.splitlines()) if t]
        if lines:
            return lines if as_list else lines[:1]
    lines = [line for line in text.splitlines() if line.strip()]
    start = len(lines) - 1
    while as_list and start > 0 and _BULLET.match(lines[-1]) and _BULLET.match(lines[start - 1]):
        start -= 1
    return [t for t in map(_tidy, lines[start:]) if t]


def _list_items(lines: list[str]) -> list[str]:
    if len(lines) > 1:
        return lines
    text = lines[0]
    if text.startswith("["):
        try:
            return [str(v) for v in ast.literal_eval(text)]
        except Exception:  # not a literal, or not a sequence: split the bare text
            text = text.strip("[]")
    return [p.strip(" '\"") for p in _LIST_SPLIT.split(text) if p.strip(" '\"")]


def extract_answer(response: str, answer_format: str) -> str:
    """Rule-based stand-in for the judge model, returning a short answer for `score_answer`.

    The answer text is the paragraph after the last "answer:" (any case; its first line unless
    List), else the last line (for List, the trailing bullet lines). Bullets, markdown emphasis
    and a final period are dropped. "not answerable", "unanswerable", "cannot be determined" /
    "answered" give "Not answerable"; an empty response gives "Fail to answer". Int / Float: the
    last number (thousands commas dropped; the text itself if none). List: a Python list literal
    of strings, from a literal in the text, from bullet lines, or split at commas, ";" and "and".
    Str / None: the text as is.
    """
    text = (response or "").strip()
    if not text:
        return FAIL_TO_ANSWER
    lines = _answer_lines(text, answer_format == "List") or [""]
    if _UNANSWERABLE.search(" ".join(lines)):
        return NOT_ANSWERABLE
    if answer_format in ("Int", "Float"):
        numbers = _NUMBER.findall(lines[0])
        return numbers[-1].replace(",", "") if numbers else lines[0]
    if answer_format == "List":
        return repr(_list_items(lines))
    return lines[0]
