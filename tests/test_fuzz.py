"""Fuzzed inputs for the readers a hostile file reaches first: webpages, subtitles and a
dataset's metadata. Each either reads or raises the project's error for that input (an
IngestError, the subtitle ValueError, a DatasetError naming the file): never anything else.
Bounded in examples so the default run stays short."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmlong import store
from mmlong import tokens as tk
from mmlong.errors import DatasetError, IngestError
from mmlong.ingest import ingest
from mmlong.ingest.options import HtmlOptions
from mmlong.ingest.video import read_subtitles
from mmlong.ingest.web import page_items
from tests.conftest import LOREM, write_pdf

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

words = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
srcs = st.one_of(words, st.sampled_from(["http://[::1", "a" * 300 + ".png", "data:image/png;base64,!!", "../../etc/passwd",
                                          "file:///dev/zero", "x.svg", "", "#", "javascript:alert(1)"]))
TAGS = ["p", "div", "ul", "ol", "li", "table", "tr", "td", "th", "h1", "h3", "pre", "code", "figure", "figcaption",
        "main", "nav", "article", "script", "style", "a", "span", "br", "svg", "math", "noscript", "template"]


def _element(children: list[str], tag: str, attrs: str) -> str:
    return f"<{tag} {attrs}>{''.join(children)}</{tag}>"


attrs = st.one_of(st.just(""), st.builds(lambda s: f'class="{s}"', st.sampled_from(["nav", "footer", "content", "main"])))
leaf = st.one_of(words.map(lambda t: t.replace("<", "&lt;")),
                 st.builds(lambda s, a: f'<img src="{s}" alt="{a}">', srcs, words.map(lambda t: t.replace('"', ""))))
html_trees = st.recursive(leaf, lambda inner: st.builds(_element, st.lists(inner, max_size=4), st.sampled_from(TAGS), attrs),
                          max_leaves=30)
headers = st.sampled_from(["", "<!doctype html>", '<meta charset="utf-16">', '<meta charset="x-unknown">',
                           '<meta charset="iso-8859-9">', "\ufeff"])
# random bytes too: unclosed tags, stray NULs after the first 4 KB, broken UTF-8
raw = st.binary(max_size=600)


@FUZZ
@given(head=headers, body=st.lists(html_trees, max_size=5), tail=raw)
def test_fuzzed_webpages_read_or_fail_with_an_ingest_error(tmp_path, head, body, tail):
    page = tmp_path / "page.html"
    page.write_bytes(f"{head}<html><body>{''.join(body)}".encode("utf-8", "surrogatepass") + tail)
    (tmp_path / "x.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'><rect width='1' height='1'/></svg>")
    try:
        items, meta = page_items(page, HtmlOptions(), tk.DEFAULT_BUDGET)
    except IngestError:
        return
    assert all(it.tokens >= 0 for it in items) and isinstance(meta.get("warnings", []), list)


cue_time = st.builds(lambda h, m, s, ms: f"{h:02d}:{m:02d}:{s:02d},{ms:03d}", st.integers(0, 99), st.integers(0, 99),
                     st.integers(0, 99), st.integers(0, 9999))
cues = st.builds(lambda n, a, b, text: f"{n}\n{a} --> {b}\n{text}\n", st.integers(-5, 10**9), cue_time, cue_time, words)
encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "iso-8859-9", "cp1251"])


@FUZZ
@given(body=st.lists(st.one_of(cues, words), max_size=6), encoding=encodings, noise=raw, suffix=st.sampled_from([".srt", ".vtt"]))
def test_fuzzed_subtitles_read_or_fail_as_malformed(tmp_path, body, encoding, noise, suffix):
    path = tmp_path / f"v{suffix}"
    text = ("WEBVTT\n\n" if suffix == ".vtt" else "") + "\n".join(body)
    path.write_bytes(text.encode(encoding, errors="replace") + noise)
    try:
        got = read_subtitles(path)
    except ValueError as e:
        assert "malformed subtitles v" in str(e)
        return
    assert all(isinstance(c.text, str) and c.text for c in got)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    write_pdf(root / "a.pdf", [LOREM, LOREM])
    ingest([str(root / "a.pdf")], root / "ds", workers=1, progress=False)
    return root / "ds"


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | words,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(words, inner, max_size=4), max_leaves=20)


def _copy(dataset: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(dataset, out)
    return out


@FUZZ
@given(name=st.sampled_from(["manifest.json", "failures.json"]), value=json_values, garble=st.booleans())
def test_fuzzed_metadata_reads_or_is_a_dataset_error(dataset, tmp_path, name, value, garble):
    root = _copy(dataset, tmp_path)
    text = json.dumps(value)
    (root / name).write_text(text[: len(text) // 2] if garble else text)
    try:
        store.summarize(root)
        store.read_manifest(root)
    except DatasetError as e:
        assert name in str(e)


column_values = st.one_of(st.lists(st.none() | st.integers(-2**40, 2**40), min_size=1, max_size=1),
                          st.lists(st.none() | words, min_size=1, max_size=1),
                          st.lists(st.none() | st.floats(), min_size=1, max_size=1))


@FUZZ
@given(drop=st.sets(st.sampled_from(store.DOCUMENTS_SCHEMA.names), max_size=3),
       replace=st.dictionaries(st.sampled_from(store.DOCUMENTS_SCHEMA.names), column_values, max_size=4))
def test_fuzzed_documents_tables_read_or_are_a_dataset_error(dataset, tmp_path, drop, replace):
    root = _copy(dataset, tmp_path)
    (shard,) = (root / "documents").glob("*.parquet")
    table = pq.read_table(shard)
    for name, values in replace.items():
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values))
    pq.write_table(table.drop_columns(sorted(drop)), shard)
    try:
        list(store.iter_documents(root, images=False))
        store.summarize(root)
    except DatasetError as e:
        assert str(root) in str(e)  # the dataset or one of its files
