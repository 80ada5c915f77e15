"""Parquet store for interleaved datasets: atomic per-document commits, recovery, streaming reads.

Layout of a dataset folder:

    manifest.json         format version, ingest options, files and totals
    failures.json         inputs that could not be ingested, with the reason
    README.md             dataset card; `datasets.load_dataset(DIR, "documents")` reads its configs
    items/*.parquet       one row per item (schema.ITEMS_SCHEMA), a document's items contiguous
    documents/*.parquet   one row per document (schema.DOCUMENTS_SCHEMA)
    .staging/             temporary files, renamed into place when complete

Every file appears by an atomic rename, so a reader never sees a partial file. A document is
committed when its `documents/part-<id>.parquet` exists (its items file is renamed first). At
the end of a run the per-document parts are compacted into shards: items shards first, then
the documents shard, whose rename commits the compaction; parts it replaced are then removed.
`recover` removes whatever a killed run left half done, so a kill -9 at any point loses no
committed document and leaves no partial or duplicated one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmlong import __version__
from mmlong import tokens as tk
from mmlong.errors import DatasetError
from mmlong.tokens import LENGTH_EDGES, bin_label, length_bin
from mmlong.schema import (
    DOCUMENTS_SCHEMA,
    FORMAT_VERSION,
    ITEMS_SCHEMA,
    TEXT,
    Document,
    Item,
    document_from_row,
    documents_table,
    item_from_row,
    items_table,
)

ITEMS = "items"
DOCUMENTS = "documents"
STAGING = ".staging"
ORPHANED = "orphaned"
MANIFEST = "manifest.json"
FAILURES = "failures.json"

_PART = re.compile(r"^part-(?P<id>[^.]+)\.parquet$")
_SHARD = re.compile(r"^shard-(?P<cid>\d+)(?:-\d+)?\.parquet$")
SHARD_BYTES = 512 * 2**20
ROW_GROUP_ITEMS = 64
# Encoded images neither compress nor repeat: snappy and dictionaries on them only cost time.
ITEMS_WRITE_OPTIONS = {
    "compression": {("bbox.list.element" if n == "bbox" else n): "NONE" if n == "image" else "SNAPPY" for n in ITEMS_SCHEMA.names},
    "use_dictionary": ["doc_id", "kind", "image_format", "source"],
}


def _fsync_replace(tmp: Path, dest: Path) -> None:
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, dest)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    _fsync_replace(tmp, path)


def _staging(root: Path) -> Path:
    path = root / STAGING
    path.mkdir(exist_ok=True)
    return path


def atomic_write_table(table: pa.Table, path: Path) -> None:
    """Write `table` as Parquet to `path` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    _fsync_replace(tmp, path)


def _write_table(root: Path, table: pa.Table, dest: Path) -> None:
    tmp = _staging(root) / f"{dest.parent.name}-{dest.name}.{os.getpid()}.tmp"
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_ITEMS)
    _fsync_replace(tmp, dest)


@dataclass
class Files:
    """The consistent set of data files of a dataset, and the leftovers of killed runs."""

    documents: list[Path] = field(default_factory=list)
    items: list[Path] = field(default_factory=list)
    stale: list[Path] = field(default_factory=list)
    orphaned: list[Path] = field(default_factory=list)
    """Items shards no documents file commits whose documents are nowhere else (their
    documents shard moved away, say): kept under ORPHANED, never deleted."""


def _doc_ids(path: Path) -> list[str]:
    try:
        return pq.read_table(path, columns=["doc_id"]).column("doc_id").to_pylist()
    except (pa.ArrowException, OSError, KeyError) as e:
        raise DatasetError(f"{path}: unreadable dataset file ({e})") from None


def scan(root: Path) -> Files:
    """List the committed files of the dataset at `root` without changing anything."""
    root = Path(root)
    files = Files()
    doc_dir, item_dir = root / DOCUMENTS, root / ITEMS
    doc_names = sorted(p.name for p in doc_dir.glob("*.parquet")) if doc_dir.is_dir() else []
    item_names = sorted(p.name for p in item_dir.glob("*.parquet")) if item_dir.is_dir() else []
    committed_cids = {m["cid"] for n in doc_names if (m := _SHARD.match(n))}
    in_shards: set[str] = set()
    for name in doc_names:
        if _SHARD.match(name):
            files.documents.append(doc_dir / name)
            in_shards.update(_doc_ids(doc_dir / name))
    part_ids = set()
    for name in doc_names:
        if (m := _PART.match(name)) and m["id"] not in in_shards:
            files.documents.append(doc_dir / name)
            part_ids.add(m["id"])
        elif m:
            files.stale.append(doc_dir / name)
    for name in item_names:
        if m := _SHARD.match(name):
            (files.items if m["cid"] in committed_cids else files.stale).append(item_dir / name)
        elif m := _PART.match(name):
            (files.items if m["id"] in part_ids else files.stale).append(item_dir / name)
    return files


def recover(root: Path) -> Files:
    """Remove what a killed run left half done (temporary files, uncommitted items, parts
    already compacted into a shard) and return the consistent file set."""
    root = Path(root)
    staging = root / STAGING
    if staging.is_dir():
        shutil.rmtree(staging)
    files = scan(root)
    shards = [p for p in files.stale if p.parent.name == ITEMS and _SHARD.match(p.name)]
    kept = {i for f in files.documents for i in _doc_ids(f)} if shards else set()  # read only when needed
    for path in files.stale:
        if path in shards and not set(_doc_ids(path)) <= kept:
            # not a compaction's leftover (whose documents still are in parts): data a documents
            # shard refers to, and that shard is gone. Keep it for the user to put back.
            (root / ORPHANED).mkdir(exist_ok=True)
            dest = root / ORPHANED / path.name
            path.replace(dest)
            files.orphaned.append(dest)
        else:
            path.unlink(missing_ok=True)
    for path in root.glob(".*.tmp"):
        path.unlink(missing_ok=True)
    files.stale = []
    return files


def is_dataset(root: Path) -> bool:
    return (Path(root) / MANIFEST).is_file()


def _read_json(path: Path, kind: type, what: str):
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise DatasetError(f"{path}: corrupt {what} ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(data, kind):
        raise DatasetError(f"{path}: corrupt {what} (a JSON {kind.__name__} expected, found {type(data).__name__})")
    return data


def read_manifest(root: Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{root}: not an mmlong dataset (no {MANIFEST})")
    return _read_json(path, dict, "manifest")


def read_failures(root: Path) -> dict[str, str]:
    path = Path(root) / FAILURES
    if not path.is_file():
        return {}
    data = _read_json(path, dict, "failures list")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise DatasetError(f"{path}: corrupt failures list (path -> reason strings expected)")
    return data


def _documents_file(path: Path, columns: list[str] | None) -> pa.Table:
    """One documents file, checked against the schema: a damaged or foreign file is a
    DatasetError that names it."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{path}: unreadable documents file ({e})") from None
    missing = [n for n in DOCUMENTS_SCHEMA.names if n not in table.column_names]
    if missing:
        raise DatasetError(f"{path}: not a documents table (missing columns {missing})")
    try:
        table = table.select(DOCUMENTS_SCHEMA.names).cast(DOCUMENTS_SCHEMA)
    except (pa.ArrowException, ValueError) as e:
        raise DatasetError(f"{path}: documents table with wrong column types ({e})") from None
    for name in ("doc_id", "source", "kind"):
        if table.column(name).null_count:
            raise DatasetError(f"{path}: documents table with empty {name}")
    for name in ("num_pages", "num_items", "text_tokens", "vision_tokens", "total_tokens"):
        if table.column(name).null_count:  # a count nobody recorded is no count
            i = table.schema.get_field_index(name)
            table = table.set_column(i, DOCUMENTS_SCHEMA.field(name), pc.fill_null(table.column(name), 0))
    return table.select(columns) if columns else table


def read_documents(root: Path, columns: list[str] | None = None) -> pa.Table:
    """The documents table (small: no images)."""
    files = scan(Path(root)).documents
    if not files:
        return DOCUMENTS_SCHEMA.empty_table().select(columns or DOCUMENTS_SCHEMA.names)
    return pa.concat_tables(_documents_file(f, columns) for f in files)


def iter_item_batches(
    root: Path, columns: list[str] | None = None, batch_size: int = 64, doc_ids: set[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Item rows in sequence order, `batch_size` rows at a time (bounded memory). With
    `doc_ids`, row groups whose doc_id range holds none of them are not read."""
    for path in scan(Path(root)).items:
        pf = pq.ParquetFile(path)
        groups = list(range(pf.num_row_groups))
        if doc_ids is not None:
            col = pf.schema_arrow.get_field_index("doc_id")
            groups = [g for g in groups if _may_hold(pf.metadata.row_group(g).column(col).statistics, doc_ids)]
        if groups:
            yield from pf.iter_batches(batch_size=batch_size, row_groups=groups, columns=columns)


def _may_hold(stats, doc_ids: set[str]) -> bool:
    if stats is None or not stats.has_min_max:
        return True
    return any(stats.min <= d <= stats.max for d in doc_ids)


def iter_documents(
    root: Path, images: bool = True, doc_ids: Iterable[str] | None = None, batch_size: int = 64
) -> Iterator[Document]:
    """Stream documents with their items, one document in memory at a time, in dataset order
    (documents without items included). With images=False no image byte is read."""
    root = Path(root)
    wanted = set(doc_ids) if doc_ids is not None else None
    columns = None if images else [n for n in ITEMS_SCHEMA.names if n != "image"]
    rows = (row for batch in iter_item_batches(root, columns, batch_size, wanted) for row in batch.to_pylist())
    row = next(rows, None)
    for doc_row in read_documents(root).to_pylist():
        try:
            doc = document_from_row(doc_row)
        except (ValueError, RecursionError) as e:  # options or metadata that are not JSON
            raise DatasetError(f"{root}: document {doc_row['doc_id']} has corrupt metadata ({type(e).__name__})") from None
        keep = wanted is None or doc.doc_id in wanted
        while row is not None and row["doc_id"] == doc.doc_id:
            if keep:
                doc.items.append(item_from_row(row))
            row = next(rows, None)
        if keep:
            yield doc
    if row is not None:
        raise DatasetError(f"{root}: items of {row['doc_id']} are out of document order or have no documents row")


def load_document(root: Path, doc_id: str, images: bool = True) -> Document:
    for doc in iter_documents(root, images=images, doc_ids=[doc_id]):
        return doc
    raise DatasetError(f"{root}: no document {doc_id}")


class DocSink:
    """Items of one document being written; row groups are flushed as they come."""

    def __init__(self, root: Path, doc_id: str, source: str) -> None:
        self.root, self.doc_id, self.source = root, doc_id, source
        self.tmp = _staging(root) / f"items-{doc_id}.{os.getpid()}.tmp"
        self.writer = pq.ParquetWriter(self.tmp, ITEMS_SCHEMA, **ITEMS_WRITE_OPTIONS)
        self.num_items = 0
        self.text_tokens = 0
        self.vision_tokens = 0

    def write(self, items: list[Item] | pa.Table) -> None:
        """Append items (or an items table, whose `seq` is renumbered to follow)."""
        table = items if isinstance(items, pa.Table) else items_table(self.doc_id, self.source, items)
        if table.num_rows == 0:
            return
        seq = pa.array(range(self.num_items, self.num_items + table.num_rows), pa.int32())
        table = table.set_column(table.schema.get_field_index("seq"), "seq", seq)
        self.writer.write_table(table)
        self.num_items += table.num_rows
        tokens = table.column("tokens")
        text = pc.sum(pc.if_else(pc.equal(table.column("kind"), TEXT), tokens, 0)).as_py() or 0
        self.text_tokens += text
        self.vision_tokens += (pc.sum(tokens).as_py() or 0) - text

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


LOCK = ".lock"


def take_lock(root: Path):
    """An exclusive lock on the dataset folder for this process (released when the returned
    file closes, or the process dies); a second writer is refused before it touches anything."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    f = open(root / LOCK, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise DatasetError(f"{root}: another mmlong run is writing this dataset ({holder}); wait for it or use another --out") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    return f


class DatasetWriter:
    """Creates or resumes the dataset at `root`; documents are committed one by one."""

    def __init__(self, root: Path, options: dict[str, Any]) -> None:
        self.root = Path(root)
        self.options = options
        if self.root.exists() and not self.root.is_dir():
            raise DatasetError(f"{self.root}: exists and is not a folder")
        if self.root.is_dir() and any(p.name != LOCK for p in self.root.iterdir()) and not is_dataset(self.root):
            raise DatasetError(f"{self.root}: folder is not empty and holds no mmlong dataset")
        self.lock = take_lock(self.root)
        tokenizer = tk.tokenizer_hash()
        if is_dataset(self.root):
            manifest = read_manifest(self.root)
            if manifest.get("options") != options:
                self.lock.close()
                raise DatasetError(
                    f"{self.root}: dataset was ingested with other options ({_diff(manifest.get('options'), options)}); "
                    "resume with the same preset and options, or write to another --out"
                )
            if manifest.setdefault("tokenizer", tokenizer) != tokenizer:
                self.lock.close()
                raise DatasetError(
                    f"{self.root}: its token counts were made with another tokenizer (sha256 {manifest['tokenizer']}, this "
                    f"one is {tokenizer}); use the same tokenizer ({tk.TOKENIZER_ENV}) or write to another --out"
                )
            self.manifest = manifest
        else:
            self.manifest = {
                "format_version": FORMAT_VERSION,
                "mmlong_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "options": options,
                "tokenizer": tokenizer,
            }
        for sub in (ITEMS, DOCUMENTS):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.orphaned = recover(self.root).orphaned
        atomic_write_text(self.root / MANIFEST, json.dumps(self.manifest, indent=2))
        self.failures = read_failures(self.root)
        self.committed: dict[str, str] = {}
        docs = read_documents(self.root, columns=["doc_id", "source"])
        for doc_id, source in zip(docs.column("doc_id").to_pylist(), docs.column("source").to_pylist()):
            self.committed[doc_id] = source

    def open(self, doc_id: str, source: str) -> DocSink:
        return DocSink(self.root, doc_id, source)

    def commit(self, sink: DocSink, doc: Document) -> None:
        """Make `doc` (whose items went through `sink`) durable."""
        sink.writer.close()
        doc.num_items = sink.num_items
        doc.text_tokens, doc.vision_tokens = sink.text_tokens, sink.vision_tokens
        _fsync_replace(sink.tmp, self.root / ITEMS / f"part-{doc.doc_id}.parquet")
        _write_table(self.root, documents_table([doc]), self.root / DOCUMENTS / f"part-{doc.doc_id}.parquet")
        self.committed[doc.doc_id] = doc.source
        if self.failures.pop(doc.source, None) is not None:
            self._save_failures()

    def fail(self, source: str, reason: str) -> None:
        self.failures[source] = reason
        self._save_failures()

    def _save_failures(self) -> None:
        atomic_write_text(self.root / FAILURES, json.dumps(self.failures, indent=2, ensure_ascii=False))

    def close(self) -> None:
        """Compact the per-document parts into shards and write the manifest (with the
        dataset's summary) and card."""
        compact(self.root)
        files = scan(self.root)
        self.manifest["files"] = [str(p.relative_to(self.root)) for p in files.documents + files.items]
        self.manifest["summary"] = summarize(self.root)
        atomic_write_text(self.root / MANIFEST, json.dumps(self.manifest, indent=2))
        (self.root / "README.md").write_text(DATASET_CARD, encoding="utf-8")
        shutil.rmtree(self.root / STAGING, ignore_errors=True)
        self.lock.close()


def _diff(old: Any, new: Any, prefix: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _diff(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {old!r} before, {new!r} now"


def length_histogram(lengths: list[int], edges: tuple[int, ...] = LENGTH_EDGES) -> list[dict[str, Any]]:
    """Documents per length bin (`tokens.length_bin`: bin i holds (edges[i-1], edges[i]]),
    with the open bin above the last edge."""
    counts = Counter(length_bin(n, edges) for n in lengths)
    lows = (0, *edges)
    return [{"bin": bin_label(i, edges), "min": lows[i], "max": edges[i] if i < len(edges) else None, "documents": counts[i]}
            for i in range(len(edges) + 1)]


def summarize(root: Path) -> dict[str, Any]:
    """Counts of the dataset at `root`, read without touching image bytes: documents, pages,
    items by kind, tokens, the length histogram, failures, and per source kind what its units
    are (PDF pages, video frames and seconds, webpages with their figures and tiles)."""
    root = Path(root)
    docs = read_documents(root, columns=["doc_id", "kind", "num_pages", "text_tokens", "vision_tokens", "total_tokens"])
    kinds: Counter[str] = Counter()
    per_doc: dict[str, Counter] = {}
    for path in scan(root).items:
        table = pq.read_table(path, columns=["doc_id", "kind"])
        for doc_id, kind in zip(table.column("doc_id").to_pylist(), table.column("kind").to_pylist()):
            kinds[kind] += 1
            per_doc.setdefault(doc_id, Counter())[kind] += 1
    text = sum(docs.column("text_tokens").to_pylist())
    vision = sum(docs.column("vision_tokens").to_pylist())
    sources: dict[str, dict[str, int]] = {}
    for doc_id, kind, pages in zip(docs.column("doc_id").to_pylist(), docs.column("kind").to_pylist(),
                                   docs.column("num_pages").to_pylist()):
        entry = sources.setdefault(kind, Counter(documents=0))
        entry["documents"] += 1
        counts = per_doc.get(doc_id, Counter())
        if kind == "pdf":
            entry["pages"] += pages
        elif kind == "video":
            entry["frames"] += counts["video-frame"]
        elif kind == "html":
            entry["figures"] += counts["figure"]
            entry["tiles"] += counts["page-image"]
        else:
            entry["pages"] += pages
    return {
        "dataset": str(root),
        "documents": docs.num_rows,
        "pages": sum(docs.column("num_pages").to_pylist()),
        "sources": {k: dict(v) for k, v in sorted(sources.items())},
        "items": sum(kinds.values()),
        "items_by_kind": dict(sorted(kinds.items())),
        "tokens": {"text": text, "vision": vision, "total": text + vision},
        "length_histogram": length_histogram(docs.column("total_tokens").to_pylist()),
        "failed": [{"path": p, "reason": r} for p, r in read_failures(root).items()],
    }


def compact(root: Path, shard_bytes: int = SHARD_BYTES) -> int:
    """Merge per-document parts into shards; returns the number of documents compacted."""
    root = Path(root)
    files = scan(root)
    doc_parts = [p for p in files.documents if _PART.match(p.name)]
    if not doc_parts:
        return 0
    cids = [int(m["cid"]) for p in files.documents if (m := _SHARD.match(p.name))]
    cid = f"{max(cids, default=0) + 1:05d}"
    ids = [_PART.match(p.name)["id"] for p in doc_parts]
    item_parts = [root / ITEMS / f"part-{i}.parquet" for i in ids]
    shard_no, writer, written, tmp = 0, None, 0, None
    shards: list[tuple[Path, Path]] = []
    for part in item_parts:
        if writer is not None and written >= shard_bytes:
            writer.close()
            shard_no += 1
            writer = None
        if writer is None:
            dest = root / ITEMS / f"shard-{cid}-{shard_no:03d}.parquet"
            tmp = _staging(root) / f"{dest.name}.{os.getpid()}.tmp"
            writer, written = pq.ParquetWriter(tmp, ITEMS_SCHEMA, **ITEMS_WRITE_OPTIONS), 0
            shards.append((tmp, dest))
        source = pq.ParquetFile(part)
        for i in range(source.num_row_groups):
            writer.write_table(source.read_row_group(i))
        written += part.stat().st_size
    writer.close()
    for tmp, dest in shards:
        _fsync_replace(tmp, dest)
    docs = pa.concat_tables(pq.read_table(p) for p in doc_parts)
    _write_table(root, docs, root / DOCUMENTS / f"shard-{cid}.parquet")
    for doc_part, item_part in zip(doc_parts, item_parts):
        doc_part.unlink()
        item_part.unlink()
    return len(doc_parts)


DATASET_CARD = """---
configs:
- config_name: items
  data_files: "items/*.parquet"
  default: true
- config_name: documents
  data_files: "documents/*.parquet"
---
# mmlong interleaved dataset

Written by [mmlong](https://pypi.org/project/mmlong/). Two tables:

- `items/`: one row per item of each document's interleaved sequence, in order (`doc_id`, `seq`):
  `kind` (text, page-image, figure, video-frame, rendered-text), `text` or `image` (encoded bytes,
  `image_format`, `width`, `height`), provenance (`source`, `page`, `bbox` in PDF points, `timestamp`)
  and exact Qwen2.5-VL `tokens`.
- `documents/`: one row per document: `source`, `content_hash`, `num_pages`, token totals,
  ingest `options` and source `metadata` (outline, page labels) as JSON.

Load with `datasets.load_dataset(DIR, "documents")`, `datasets.load_dataset("parquet",
data_files=DIR + "/items/*.parquet")`, pyarrow or DuckDB (`SELECT * FROM 'DIR/items/*.parquet'`).
"""
