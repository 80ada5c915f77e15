"""MMLongBench-Doc scorer (mmlong.eval.score): reference parity, accuracy / F1, breakdowns,
answer extraction and the judge reply parser."""

from __future__ import annotations

import json

import pytest

from mmlong.eval.score import (
    JUDGE_PROMPT,
    NOT_ANSWERABLE,
    accuracy_and_f1,
    anls,
    breakdowns,
    clean_string,
    extract_answer,
    is_exact_match,
    parse_judge_reply,
    score_answer,
    score_predictions,
)
from tests.conftest import SHARED_DOC

# (gt, pred, answer_format, score). Scores computed by the reference implementation itself,
# eval/eval_score.py of mayubo2333/MMLongBench-Doc at commit d73f0dc0be7e0a2ff6a403d5fe65fcd96461f384
# (file last changed in 263f15dbd33f483e7c84e2d51ed4ae9213f6f4b3), called as its run_lvlm.py
# calls it: where the reference raises, the recorded score is 0.0.
REFERENCE_CASES = [
    # Int: int(gt) == int(float(pred)); an empty gt scores 1 (the reference compares it with "")
    ('3', '3', 'Int', 1.0),
    ('3', '3.0', 'Int', 1.0),
    ('3', '3.9', 'Int', 1.0),
    ('3', ' 3 ', 'Int', 1.0),
    ('3', 'three', 'Int', 0.0),
    ('3', '', 'Int', 0.0),
    ('3.0', '3', 'Int', 0.0),
    ('-2', '-2.5', 'Int', 1.0),
    ('1000', '1e3', 'Int', 1.0),
    ('1000', '1,000', 'Int', 0.0),
    ('10', '1_0', 'Int', 1.0),
    ('3', 'inf', 'Int', 0.0),
    ('3', 'nan', 'Int', 0.0),
    ('', 'anything', 'Int', 1.0),
    ('', '', 'Int', 1.0),
    ('3', 'Not answerable', 'Int', 0.0),
    # Float: rel_tol 0.01 against gt, gt/100, gt*100, or equal after rounding to >= 2 decimals
    ('21%', '21', 'Float', 1.0),
    ('21%', '0.21', 'Float', 1.0),
    ('21%', '21%', 'Float', 1.0),
    ('0.45', '45', 'Float', 1.0),
    ('0.45', '45%', 'Float', 1.0),
    ('45', '0.45', 'Float', 1.0),
    ('45', '4500', 'Float', 1.0),
    ('45', '0.0045', 'Float', 0.0),
    ('3.91', '3.95', 'Float', 0.0),
    ('3.91', '3.86', 'Float', 0.0),
    ('3.91', '3.87', 'Float', 0.0),
    ('100', '101', 'Float', 1.0),
    ('100', '102', 'Float', 0.0),
    ('0.0', '0.004', 'Float', 1.0),
    ('0.0', '0.006', 'Float', 0.0),
    ('0.0', '0.005', 'Float', 0.0),
    ('$5', '5', 'Float', 1.0),
    ('5', '$5.00', 'Float', 1.0),
    ('7.0', '7 (approx)', 'Float', 1.0),
    ('18.40%', '0.184', 'Float', 1.0),
    ('91.77', '91.7', 'Float', 1.0),
    ('91.77', '91.8', 'Float', 1.0),
    ('1.5e-05', '1.51e-05', 'Float', 1.0),
    ('12', 'twelve', 'Float', 0.0),
    ('12', '', 'Float', 0.0),
    ('1,000', '1000', 'Float', 0.0),  # reference raises ValueError
    ('n/a', '3', 'Float', 0.0),  # reference raises ValueError
    ("'12'", '12', 'Float', 1.0),
    ('12', '12 miles', 'Float', 0.0),
    ('inf', 'inf', 'Float', 1.0),
    ('nan', 'nan', 'Float', 0.0),
    # Str whose cleaned gt is compared exactly: URL, .py / ipynb, page, numbers, dates, a.m./p.m., email
    ('https://example.org/a', 'https://example.org/a', 'Str', 1.0),
    ('https://example.org/a', 'https://example.org/b', 'Str', 0.0),
    ('main.py', 'main.pyc', 'Str', 0.0),
    ('demo.ipynb', 'demo.ipynb', 'Str', 1.0),
    ('Page 5', 'page 5', 'Str', 1.0),
    ('page 5', 'page 6', 'Str', 0.0),
    ('page 5', 'p. 5', 'Str', 0.0),
    ('123-456', '123-457', 'Str', 0.0),
    ('123-456', '123456', 'Str', 0.0),
    ('12 34', '12 34', 'Str', 1.0),
    ('12 34', '1234', 'Str', 0.0),
    ('1-2-3', '1-2-4', 'Str', 0.8),
    ('2021-05-06', '2021-05-07', 'Str', 0.0),
    ('2021 05', '2021 05', 'Str', 1.0),
    ('2021-05', '2021-06', 'Str', 0.0),
    ('10 a.m.', '10 a.m', 'Str', 0.0),
    ('3 p.m.', '3 P.M.', 'Str', 1.0),
    ('someone@example.com', 'someone@example.org', 'Str', 0.0),
    ('Someone@Example.com', 'someone@example.com', 'Str', 1.0),
    ('42', '42.0', 'Str', 0.0),
    ('42', '(about) 42', 'Str', 1.0),
    ('$42', '42', 'Str', 1.0),
    # Str by ANLS (0 when <= 0.5); lengths of the upper-cased strings; mile/miles/million kept
    ('Berlin', 'berlin', 'Str', 1.0),
    ('Berlin', 'Berlin.', 'Str', 0.8571428571428572),
    ('Berlin School', 'Berlin', 'Str', 0.0),
    ('abcd', 'abce', 'Str', 0.75),
    ('abcd', 'abef', 'Str', 0.0),
    ('abcd', 'aefg', 'Str', 0.0),
    ('ab', 'ac', 'Str', 0.0),
    ('abc', 'abd', 'Str', 0.6666666666666667),
    ('3.5', '3.6', 'Str', 0.6666666666666667),
    ("'quoted'", 'quoted', 'Str', 1.0),
    ('"quoted"', "'quoted'", 'Str', 1.0),
    ('Revenue (USD)', 'revenue', 'Str', 1.0),
    ('straße', 'strasse', 'Str', 0.7142857142857143),
    ('straße', 'straß', 'Str', 0.8571428571428572),
    ('10 miles', '10', 'Str', 0.0),
    ('5 million', '5 million', 'Str', 1.0),
    ('', '', 'Str', 1.0),
    ('', 'x', 'Str', 0.0),
    ('x', '', 'Str', 0.0),
    # None: unanswerable questions, scored as Str
    ('Not answerable', 'Not answerable', 'None', 1.0),
    ('Not answerable', 'not answerable.', 'None', 0.9333333333333333),
    ('Not answerable', 'Fail to answer', 'None', 0.0),
    ('Not answerable', 'unanswerable', 'None', 0.7142857142857143),
    ('Not answerable', 'Failed to extract', 'None', 0.0),
    # List: sorted, same length, exact "-" join when the smallest gt item is a number or exact-match
    ("['a', 'b']", "['b', 'a']", 'List', 1.0),
    ("['Circle', 'Rectangle']", "['rectangle', 'circle']", 'List', 1.0),
    ("['Circle', 'Rectangle']", "['Circle']", 'List', 0.0),
    ("['Circle', 'Rectangle']", "['Circles', 'Rectangle']", 'List', 0.8571428571428572),
    ("['Circle', 'Rectangle']", "['Circle', 'Rect']", 'List', 0.0),
    ("['Circle', 'Rectangle']", '[Circle, Rectangle]', 'List', 0.0),  # reference raises NameError
    ("['Circle', 'Rectangle']", 'Circle, Rectangle', 'List', 0.0),
    ("['Circle']", 'Circle', 'List', 1.0),
    ("['1', '2', '5']", '[5, 2, 1]', 'List', 1.0),
    ("['1', '2', '5']", "['1', '2', '5.0']", 'List', 0.0),
    ("['90%', '42%', '39%']", "['39', '42', '90']", 'List', 1.0),
    ("['$35,000', '$40,684']", "['35,000', '40,684']", 'List', 1.0),
    ("['1.5', '2.25']", '[1.5, 2.25]', 'List', 1.0),
    ("['1.5', '2.25']", '[1.50, 2.25]', 'List', 1.0),
    ("['1-2', '3']", "['1', '2-3']", 'List', 1.0),
    ("['12', 'abc']", "['12', 'abd']", 'List', 0.0),
    ("['Page 1', 'Page 5']", "['page 5', 'page 1']", 'List', 1.0),
    ("['Page 1', 'Page 5']", "['page 1', 'page 6']", 'List', 0.0),
    ('[]', '[]', 'List', 0.0),  # reference raises IndexError
    ('[]', "['a']", 'List', 0.0),
    ("['a']", '[', 'List', 0.0),  # reference raises SyntaxError
    ("['a']", "['a'", 'List', 0.0),  # reference raises SyntaxError
    ("['a']", "['a'] and more", 'List', 0.0),  # reference raises NameError
    ("['a', 'b']", "['a'],['b']", 'List', 0.0),
    ("['x', 'y']", "('x', 'y')", 'List', 0.0),
    ("['(1) x', 'y']", "['x', 'y']", 'List', 1.0),
    ("['straße', 'b']", "['strasse', 'b']", 'List', 0.7142857142857143),
    ("['Is the service safe?', 'Is the service effective?']",
     "['Is the servife safe?', 'Is the service effective']", 'List', 0.95),
    ("['a', 'b']", "['a', 'b']", 'Other', 1.0),
]


@pytest.mark.parametrize("gt, pred, answer_format, expected", REFERENCE_CASES)
def test_matches_reference(gt, pred, answer_format, expected):
    assert score_answer(gt, pred, answer_format) == expected


def test_clean_string():
    assert clean_string("  Revenue (USD) ") == "revenue"
    assert clean_string("(a) x (b)") == "x"
    assert clean_string("'quoted'") == "quoted"
    assert clean_string("''x''") == "'x'"  # one quote each side only
    assert clean_string("$5%") == "5"
    assert clean_string("$ 5 %") == "5"
    assert clean_string(12) == "12"
    for unit in ("10 mile", "10 miles", "5 million"):  # the reference's rstrip result is discarded
        assert clean_string(unit) == unit


@pytest.mark.parametrize(
    "s, exact",
    [
        ("https://a.org", True), ("http://a.org", False), ("run.py", True), ("nb.ipynb", True),
        ("page 3", True), ("pages", True), ("123", True), ("123-456", True), ("12 34", True),
        ("1-2-3", False), ("12  34", False), ("3.5", False), ("10 a.m.", True), ("2021-05-06", True),
        ("2021 05", True), ("2021/05", False), ("a@b.com", True), ("a@b", False), ("berlin", False),
    ],
)
def test_is_exact_match(s, exact):
    assert is_exact_match(s) is exact


def test_anls_threshold():
    assert anls("abcd", "abce") == 0.75
    assert anls("abcd", "abce", threshold=0.75) == 0.0  # at the threshold scores 0
    assert anls("abcd", "abce", threshold=0.7) == 0.75
    assert anls("ab", "ac") == 0.0  # exactly 0.5
    assert anls("", "") == 1.0
    assert anls("abc", "ABC") == 0.0  # case-sensitive: callers clean first


def test_list_values_are_never_executed():
    assert score_answer("['a']", "[exit(3)]", "List") == 0.0  # eval would raise SystemExit
    assert score_answer("['3']", "[1+2]", "List") == 0.0  # the reference's eval gives 1.0 here


def test_list_order_and_length():
    gt = "['black', 'blue', 'white']"
    assert score_answer(gt, "['White', 'black', 'BLUE']", "List") == 1.0
    assert score_answer(gt, "['black', 'blue']", "List") == 0.0
    assert score_answer(gt, "['black', 'blue', 'white', 'red']", "List") == 0.0
    assert score_answer(["a", "b"], ["b", "a"], "List") == 1.0  # lists as Python values too


def _record(answer, pred, score, pages="[1]", sources="['Table']", doc_type="Guidebook"):
    return {"answer": answer, "pred": pred, "score": score, "evidence_pages": pages,
            "evidence_sources": sources, "doc_type": doc_type}


def test_accuracy_and_f1():
    records = [_record("5", "5", 1.0), _record("x", "Not answerable", 0.0),
               _record(NOT_ANSWERABLE, NOT_ANSWERABLE, 1.0), _record(NOT_ANSWERABLE, "7", 0.0)]
    acc, f1 = accuracy_and_f1(records)
    recall, precision = 1 / 2, 1 / 2  # 1 point over 2 answerable gts; over 2 non-"Not answerable" preds
    assert acc == 0.5 and f1 == pytest.approx(2 * recall * precision / (recall + precision))
    assert accuracy_and_f1([]) == (0.0, 0.0)
    assert accuracy_and_f1([{"answer": "5", "pred": "5"}]) == (0.0, 0.0)  # unscored records skipped
    assert accuracy_and_f1(records + [{"answer": "5", "pred": "5"}]) == (acc, f1)


def test_f1_undefined_is_zero():
    unanswerable = [_record(NOT_ANSWERABLE, NOT_ANSWERABLE, 1.0), _record(NOT_ANSWERABLE, "3", 0.0)]
    assert accuracy_and_f1(unanswerable) == (0.5, 0.0)  # no answerable questions
    all_refused = [_record("3", NOT_ANSWERABLE, 0.0), _record(NOT_ANSWERABLE, NOT_ANSWERABLE, 1.0)]
    assert accuracy_and_f1(all_refused) == (0.5, 0.0)  # no prediction other than "Not answerable"
    assert accuracy_and_f1([_record("3", "4", 0.0)]) == (0.0, 0.0)  # recall + precision == 0


def test_breakdowns():
    records = [
        _record("a", "a", 1.0, "[3]", "['Pure-text (Plain-text)', 'Chart']", "Brochure"),
        _record("b", "c", 0.0, "[3, 4]", "['Chart']"),
        _record(NOT_ANSWERABLE, NOT_ANSWERABLE, 1.0, "[]", "[]"),
        _record(NOT_ANSWERABLE, "x", 0.0, [2], ["Figure"]),  # lists, not their strings
    ]
    got = breakdowns(records)
    assert got["pages"] == {
        "Single-page": {"acc": 0.5, "count": 2},  # an unanswerable question with one page is here too
        "Cross-page": {"acc": 0.0, "count": 1},
        "Unanswerable": {"acc": 0.5, "count": 2},
    }
    assert got["evidence_sources"] == {
        "Pure-text (Plain-text)": {"acc": 1.0, "count": 1},
        "Chart": {"acc": 0.5, "count": 2},
        "Figure": {"acc": 0.0, "count": 1},
    }
    assert got["doc_type"] == {"Brochure": {"acc": 1.0, "count": 1},
                               "Guidebook": {"acc": 1 / 3, "count": 3}}
    assert breakdowns([])["pages"]["Cross-page"] == {"acc": 0.0, "count": 0}


def test_score_predictions_keeps_order_and_input():
    records = [
        {"answer": "5", "pred": "5.0", "answer_format": "Int", "evidence_pages": "[1]",
         "evidence_sources": "[]"},
        {"answer": "Berlin", "pred": "Bonn", "answer_format": "Str", "evidence_pages": "[1, 2]",
         "evidence_sources": "['Table']"},
        {"answer": NOT_ANSWERABLE, "pred": NOT_ANSWERABLE, "answer_format": "None", "evidence_pages": "[]",
         "evidence_sources": "[]"},
    ]
    before = json.dumps(records)
    result = score_predictions(records)
    assert result["scores"] == [1.0, 0.0, 1.0]
    assert result["acc"] == pytest.approx(2 / 3) and result["f1"] == pytest.approx(0.5)
    assert result["breakdowns"]["evidence_sources"] == {"Table": {"acc": 0.0, "count": 1}}
    assert json.dumps(records) == before


@pytest.mark.parametrize(
    "response, answer_format, expected",
    [
        ("The chart shows growth.\nAnswer: 12", "Int", "12"),
        ("Counting the rows gives **Answer:** 1,234 rows in 3 tables", "Int", "3"),
        ("There were 1,234 visitors in total.", "Int", "1234"),
        ("Final answer: about 12.5%.", "Float", "12.5"),
        ("Answer: -0.45", "Float", "-0.45"),
        ("Answer: 10-12 people", "Int", "12"),
        ("Answer: none given", "Int", "none given"),
        ("Answer: Berlin.\n\nIt is stated on page 2.", "Str", "Berlin"),
        ("The meeting starts at\n10 a.m.", "Str", "10 a.m."),
        ("It is **U.S.**", "Str", "It is U.S."),
        ("The document does not say.\nAnswer: Not answerable", "Str", NOT_ANSWERABLE),
        ("This cannot be determined from the document.", "Int", NOT_ANSWERABLE),
        ("Answer: the question is unanswerable", "List", NOT_ANSWERABLE),
        ("", "Str", "Fail to answer"),
        ("Answer: ['Circle', 'Rectangle']", "List", "['Circle', 'Rectangle']"),
        ("Answer: [1, 2.5]", "List", "['1', '2.5']"),
        ("Answer: [Circle, Rectangle]", "List", "['Circle', 'Rectangle']"),
        ("Answer: Circle, Rectangle, and Triangle", "List", "['Circle', 'Rectangle', 'Triangle']"),
        ("Answer: $35,000 and $40,684", "List", "['$35,000', '$40,684']"),
        ("The colours are:\n1. black\n2. blue\n3. white", "List", "['black', 'blue', 'white']"),
        ("Answer:\n- Is it safe?\n- Is it caring?\n\nBoth are asked.", "List", "['Is it safe?', 'Is it caring?']"),
        ("Answer: Berlin", "List", "['Berlin']"),
    ],
)
def test_extract_answer(response, answer_format, expected):
    assert extract_answer(response, answer_format) == expected


def test_extracted_answers_score():
    pred = extract_answer("Answer: rectangle and circle", "List")
    assert score_answer("['Circle', 'Rectangle']", pred, "List") == 1.0
    assert score_answer("21%", extract_answer("The share is 21 percent.", "Float"), "Float") == 1.0
    assert score_answer("Not answerable", extract_answer("It cannot be answered.", "None"), "None") == 1.0


def test_parse_judge_reply():
    assert parse_judge_reply("Extracted answer: 10\nAnswer format: Integer") == "10"
    assert parse_judge_reply("```\nExtracted answer: ['a', 'b']\nAnswer format: List\n```") == "['a', 'b']"
    assert parse_judge_reply("Extracted answer: Not answerable\nAnswer format: String") == NOT_ANSWERABLE
    assert parse_judge_reply("Extracted answer: A\nAnswer format: List\nExtracted answer: B") == "A"
    assert parse_judge_reply("Extracted answer: A\nExtracted answer: B\nAnswer format: Str") == "A"
    assert parse_judge_reply("Failed") == "Failed to extract"  # the reference's reply when the API fails
    assert parse_judge_reply("Answer format: Integer\nExtracted answer: 3") == "Failed to extract"


def test_judge_prompt_asks_for_the_parsed_lines():
    lines = ("Extracted answer: [answer]", "Answer format: [answer format]", "Not answerable", "Fail to answer")
    assert all(text in JUDGE_PROMPT for text in lines)
    for fmt in ("Integer", "Float", "String", "List"):
        assert fmt in JUDGE_PROMPT


@pytest.mark.shared
def test_shared_samples_score_their_own_answers():
    samples = json.loads((SHARED_DOC / "samples.json").read_text())
    result = score_predictions([{**s, "pred": s["answer"]} for s in samples])
    misses = [s["answer"] for s, v in zip(samples, result["scores"]) if v != 1.0]
    assert misses == ["21%"]  # an Int answer int() cannot read: the reference scores it 0 too
    assert result["acc"] == pytest.approx((len(samples) - 1) / len(samples))
    pages = result["breakdowns"]["pages"]
    assert pages["Unanswerable"]["count"] == sum(s["answer"] == NOT_ANSWERABLE for s in samples)
    assert set(result["breakdowns"]["evidence_sources"]) == {
        "Pure-text (Plain-text)", "Generalized-text (Layout)", "Table", "Chart", "Figure"}
    refused = score_predictions([{**s, "pred": NOT_ANSWERABLE} for s in samples])
    assert refused["f1"] == 0.0
