"""The Parquet store: round trips, readers other than mmlong, streaming, and recovery."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmlong import store
from mmlong.schema import FIGURE, PAGE_IMAGE, TEXT, VIDEO_FRAME, Document, Item
from tests.conftest import png_bytes

OPTIONS = {"pdf": {"dpi": 144}, "tokens": {"min_pixels": 3136, "max_pixels": 12845056}}


def make_doc(n: int, pages: int = 2) -> tuple[Document, list[Item]]:
    items: list[Item] = []
    for p in range(pages):
        items.append(Item(PAGE_IMAGE, image=png_bytes(60, 80, (n * 40 % 256, 90, 90)), image_format="png",
                          width=60, height=80, page=p, bbox=(0, 0, 595, 842), tokens=8))
        items.append(Item(TEXT, text=f"doc {n} page {p} — text", page=p, bbox=(50.5, 60, 300, 90), tokens=7))
    items.append(Item(VIDEO_FRAME, image=png_bytes(28, 28), image_format="png", width=28, height=28,
                      timestamp=12.345, tokens=1, meta={"segment": 3}))
    doc = Document(f"doc{n:04d}", f"/data/doc{n}.pdf", "pdf", f"{n:064x}", num_pages=pages,
                   options=OPTIONS, metadata={"toc": [[1, "Intro", 1]]})
    return doc, items


def write_docs(root: Path, ns: list[int], close: bool = True) -> store.DatasetWriter:
    w = store.DatasetWriter(root, OPTIONS)
    for n in ns:
        doc, items = make_doc(n)
        sink = w.open(doc.doc_id, doc.source)
        sink.write(items[:2])
        sink.write(items[2:])
        w.commit(sink, doc)
    if close:
        w.close()
    return w


def test_round_trip(tmp_path):
    root = tmp_path / "ds"
    write_docs(root, [1, 2, 3])
    docs = list(store.iter_documents(root))
    assert [d.doc_id for d in docs] == ["doc0001", "doc0002", "doc0003"]
    expected_doc, expected_items = make_doc(2)
    d = docs[1]
    assert d.items == expected_items
    assert (d.source, d.num_pages, d.num_items, d.metadata, d.options) == (
        expected_doc.source, 2, 5, {"toc": [[1, "Intro", 1]]}, OPTIONS)
    assert (d.text_tokens, d.vision_tokens, d.total_tokens) == (14, 17, 31)
    assert [it.kind for it in d.items] == [PAGE_IMAGE, TEXT, PAGE_IMAGE, TEXT, VIDEO_FRAME]
    assert d.items[-1].timestamp == 12.345 and d.items[-1].meta == {"segment": 3}
    # compacted into one shard per table, no part files left
    assert [p.name for p in (root / "items").iterdir()] == ["shard-00001-000.parquet"]
    assert [p.name for p in (root / "documents").iterdir()] == ["shard-00001.parquet"]
    assert not (root / ".staging").exists()


def test_readable_without_mmlong(tmp_path):
    root = tmp_path / "ds"
    write_docs(root, [1, 2])
    items = pq.read_table(root / "items").to_pylist()
    assert len(items) == 10 and items[0]["doc_id"] == "doc0001" and items[0]["seq"] == 0
    assert [r["seq"] for r in items if r["doc_id"] == "doc0002"] == [0, 1, 2, 3, 4]

    import duckdb

    rows = duckdb.sql(
        f"SELECT doc_id, sum(tokens) AS t, count(*) FILTER (WHERE kind = 'text') AS texts "
        f"FROM '{root}/items/*.parquet' GROUP BY doc_id ORDER BY doc_id"
    ).fetchall()
    assert rows == [("doc0001", 31, 2), ("doc0002", 31, 2)]
    total = duckdb.sql(f"SELECT sum(total_tokens) FROM '{root}/documents/*.parquet'").fetchall()[0][0]
    assert total == 62

    import datasets

    docs = datasets.load_dataset(str(root), "documents", split="train")
    assert sorted(docs["doc_id"]) == ["doc0001", "doc0002"] and docs[0]["total_tokens"] == 31
    its = datasets.load_dataset(str(root), split="train")  # default config: items
    assert len(its) == 10 and its[0]["image"][:4] == b"\x89PNG" and its[1]["text"] == "doc 1 page 0 — text"
    plain = datasets.load_dataset("parquet", data_files=str(root / "items" / "*.parquet"), split="train")
    assert plain.num_rows == 10 and plain.features["bbox"].length == 4


def test_streaming_reads_bounded_batches_and_skips_images(tmp_path):
    root = tmp_path / "ds"
    write_docs(root, list(range(12)))
    sizes = [b.num_rows for b in store.iter_item_batches(root, batch_size=7)]
    assert max(sizes) <= 7 and sum(sizes) == 60
    docs = list(store.iter_documents(root, images=False, batch_size=3))
    assert len(docs) == 12 and all(it.image is None for d in docs for it in d.items)
    assert [len(d.items) for d in docs] == [5] * 12
    assert store.load_document(root, "doc0007").items == make_doc(7)[1]
    with pytest.raises(store.DatasetError, match="no document nope"):
        store.load_document(root, "nope")


def test_parts_are_readable_before_compaction(tmp_path):
    root = tmp_path / "ds"
    write_docs(root, [1, 2], close=False)
    assert sorted(p.name for p in (root / "documents").iterdir()) == ["part-doc0001.parquet", "part-doc0002.parquet"]
    assert [d.doc_id for d in store.iter_documents(root)] == ["doc0001", "doc0002"]


def test_recover_drops_uncommitted_and_temporary_files(tmp_path):
    root = tmp_path / "ds"
    w = write_docs(root, [1, 2], close=False)
    doc, items = make_doc(3)
    sink = w.open(doc.doc_id, doc.source)
    sink.write(items)  # killed before commit: only a staging file
    w.lock.close()  # the killed process's lock goes with it
    shutil.copy(root / "items" / "part-doc0001.parquet", root / "items" / "part-doc0009.parquet")  # items without doc row
    assert [d.doc_id for d in store.iter_documents(root)] == ["doc0001", "doc0002"]
    w2 = store.DatasetWriter(root, OPTIONS)  # resume
    assert set(w2.committed) == {"doc0001", "doc0002"}
    assert not (root / "items" / "part-doc0009.parquet").exists()
    assert not (root / ".staging").exists()  # the killed run's temporary file is gone


def compacted_keeping_parts(tmp_path: Path) -> tuple[Path, Path]:
    """A dataset of two documents compacted, and a copy of its parts from before."""
    root, saved = tmp_path / "ds", tmp_path / "saved"
    write_docs(root, [1, 2], close=False)
    shutil.copytree(root, saved)
    store.compact(root)
    return root, saved


def test_kill_during_compaction_before_commit(tmp_path):
    """Items shards written, documents shard not yet: the shards are ignored, parts stay."""
    root, saved = compacted_keeping_parts(tmp_path)
    (root / "documents" / "shard-00001.parquet").unlink()
    for sub in ("documents", "items"):
        for part in (saved / sub).glob("part-*.parquet"):
            shutil.copy(part, root / sub / part.name)
    assert [d.doc_id for d in store.iter_documents(root)] == ["doc0001", "doc0002"]
    store.recover(root)
    assert not (root / "items" / "shard-00001-000.parquet").exists()
    assert len(pq.read_table(root / "items")) == 10


def test_kill_during_compaction_after_commit(tmp_path):
    """Documents shard committed, parts not yet removed: the parts are ignored, then removed."""
    root, saved = compacted_keeping_parts(tmp_path)
    shutil.copy(saved / "items" / "part-doc0001.parquet", root / "items")
    shutil.copy(saved / "documents" / "part-doc0002.parquet", root / "documents")
    assert [d.doc_id for d in store.iter_documents(root)] == ["doc0001", "doc0002"]
    store.recover(root)
    assert sorted(p.name for p in (root / "items").iterdir()) == ["shard-00001-000.parquet"]
    assert sorted(p.name for p in (root / "documents").iterdir()) == ["shard-00001.parquet"]


def test_items_of_a_documents_shard_moved_away_are_kept_not_deleted(tmp_path):
    """No compaction left them: their documents are in no documents file. A resume keeps them
    (under orphaned/) and says so; putting both back restores the dataset."""
    root, _ = compacted_keeping_parts(tmp_path)
    moved = tmp_path / "moved.parquet"
    shutil.move(root / "documents" / "shard-00001.parquet", moved)
    before = pq.read_table(root / "items" / "shard-00001-000.parquet")
    files = store.recover(root)
    (kept,) = files.orphaned
    assert kept == root / "orphaned" / "shard-00001-000.parquet" and pq.read_table(kept).equals(before)
    shutil.move(kept, root / "items" / kept.name)
    shutil.move(moved, root / "documents" / "shard-00001.parquet")
    assert [d.doc_id for d in store.iter_documents(root)] == ["doc0001", "doc0002"]


def test_compact_on_its_own(tmp_path):
    root = tmp_path / "ds"
    write_docs(root, [1, 2], close=False)
    shutil.rmtree(root / ".staging")
    assert store.compact(root) == 2 and store.compact(root) == 0
    assert [d.doc_id for d in store.iter_documents(root)] == ["doc0001", "doc0002"]


def test_second_run_adds_a_second_shard(tmp_path):
    root = tmp_path / "ds"
    write_docs(root, [1])
    write_docs(root, [2])
    assert sorted(p.name for p in (root / "documents").iterdir()) == ["shard-00001.parquet", "shard-00002.parquet"]
    assert [d.doc_id for d in store.iter_documents(root)] == ["doc0001", "doc0002"]


def test_compaction_splits_items_by_size_between_documents(tmp_path):
    root = tmp_path / "ds"
    write_docs(root, [1, 2, 3], close=False)
    store.compact(root, shard_bytes=1)
    names = sorted(p.name for p in (root / "items").iterdir())
    assert names == ["shard-00001-000.parquet", "shard-00001-001.parquet", "shard-00001-002.parquet"]
    assert [d.doc_id for d in store.iter_documents(root)] == ["doc0001", "doc0002", "doc0003"]


def test_options_mismatch_and_foreign_folders_are_refused(tmp_path):
    root = tmp_path / "ds"
    write_docs(root, [1])
    other = {"pdf": {"dpi": 72}, "tokens": OPTIONS["tokens"]}
    with pytest.raises(store.DatasetError, match=r"pdf\.dpi: 144 before, 72 now"):
        store.DatasetWriter(root, other)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("hi")
    with pytest.raises(store.DatasetError, match="not empty"):
        store.DatasetWriter(foreign, OPTIONS)
    with pytest.raises(store.DatasetError, match="not an mmlong dataset"):
        store.read_manifest(foreign)


def test_counts_of_another_tokenizer_are_refused(tmp_path, monkeypatch):
    """The manifest records the tokenizer the counts were made with; resuming with another is refused."""
    from mmlong import tokens as tk

    root = tmp_path / "ds"
    write_docs(root, [1])
    assert store.read_manifest(root)["tokenizer"] == tk.tokenizer_hash()
    other = tmp_path / "tok" / "tokenizer.json"
    other.parent.mkdir()
    other.write_bytes(tk._tokenizer_file(None).read_bytes().replace(b'"version"', b'"version" ', 1))
    monkeypatch.setenv(tk.TOKENIZER_ENV, str(other.parent))
    with pytest.raises(store.DatasetError, match="another tokenizer"):
        store.DatasetWriter(root, OPTIONS)
    monkeypatch.delenv(tk.TOKENIZER_ENV)
    store.DatasetWriter(root, OPTIONS).close()  # the same one resumes


def test_item_kind_is_checked():
    with pytest.raises(ValueError, match="unknown item kind"):
        Item("picture")
    assert Item(FIGURE).is_image and not Item(TEXT).is_image


def test_documents_without_items_are_read(tmp_path):
    root = tmp_path / "ds"
    w = write_docs(root, [1], close=False)
    empty = Document("doc0000", "/data/scan.pdf", "pdf", "0" * 64, num_pages=3)
    w.commit(w.open(empty.doc_id, empty.source), empty)
    doc, items = make_doc(2)
    sink = w.open(doc.doc_id, doc.source)
    sink.write(items)
    w.commit(sink, doc)
    for _ in range(2):  # as parts, then compacted
        docs = list(store.iter_documents(root))
        assert [(d.doc_id, len(d.items)) for d in docs] == [("doc0000", 0), ("doc0001", 5), ("doc0002", 5)]
        w.close()
    assert store.load_document(root, "doc0000").num_pages == 3


def test_selected_documents_skip_other_row_groups(tmp_path):
    root = tmp_path / "ds"
    write_docs(root, list(range(40)))
    rows = sum(b.num_rows for b in store.iter_item_batches(root, doc_ids={"doc0031"}))
    assert 5 <= rows < 200  # 200 items in all, 64 per row group
    assert [d.doc_id for d in store.iter_documents(root, doc_ids=["doc0031", "doc0002"])] == ["doc0002", "doc0031"]
