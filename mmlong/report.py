"""How `mmlong inspect` shows a dataset: its summary (`store.summarize`) as tables, and an HTML
preview a person can open."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from mmlong.schema import IMAGE_KINDS
from mmlong.store import iter_item_batches, read_documents


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"mmlong dataset {summary['dataset']}", show_header=False)
    table.add_row("documents", f"{summary['documents']:,}")
    names = {"pdf": "PDFs", "html": "webpages", "video": "videos", "rendered-text": "rendered texts"}
    for kind, counts in summary.get("sources", {}).items():
        units = ", ".join(f"{n:,} {unit}" for unit, n in counts.items() if unit != "documents" and n)
        table.add_row(names.get(kind, kind), f"{counts['documents']:,}" + (f" ({units})" if units else ""))
    for kind, n in summary["items_by_kind"].items():
        table.add_row(f"items: {kind}", f"{n:,}")
    for name, n in summary["tokens"].items():
        table.add_row(f"tokens: {name}", f"{n:,}")
    table.add_row("failed inputs", str(len(summary["failed"])))
    console.print(table)
    hist = Table(title="documents by length (Qwen2.5-VL tokens)")
    hist.add_column("tokens")
    hist.add_column("documents", justify="right")
    hist.add_column("")
    top = max([b["documents"] for b in summary["length_histogram"]] + [1])
    for b in summary["length_histogram"]:
        hist.add_row(b["bin"], str(b["documents"]), "#" * round(30 * b["documents"] / top))
    console.print(hist)
    for f in summary["failed"]:
        console.print(f"failed {f['path']}: {f['reason']}", highlight=False, markup=False)


_CSS = """body{font-family:sans-serif;max-width:1000px;margin:auto;background:#f4f4f4}
.doc{background:#fff;margin:1em 0;padding:1em;border-radius:6px}
.item{border-left:4px solid #ccc;margin:.6em 0;padding:.2em .6em}
.text{border-color:#4a8;white-space:pre-wrap}.image{border-color:#48c}
.prov{font-size:.75em;color:#666;font-family:monospace}img{max-width:min(100%,560px);border:1px solid #ddd}"""


def _prov(row: dict[str, Any], labels: list[str] | None) -> str:
    parts = [row["kind"], f"seq {row['seq']}"]
    if row.get("page") is not None:
        label = labels[row["page"]] if labels and row["page"] < len(labels) else None
        parts.append(f"page {row['page'] + 1}" + (f" (label {label})" if label and label != str(row["page"] + 1) else ""))
    if row.get("bbox") is not None:
        parts.append("bbox " + ",".join(f"{v:.0f}" for v in row["bbox"]))
    if row.get("timestamp") is not None:
        parts.append(f"t={row['timestamp']:.2f}s")
    if row.get("width"):
        parts.append(f"{row['width']}x{row['height']} {row['image_format']}")
    parts.append(f"{row['tokens']} tokens")
    return html.escape(" | ".join(parts))


def write_html(root: Path, out: Path, doc_ids: list[str] | None = None, max_docs: int = 3, max_pages: int = 8) -> Path:
    """Write a preview of documents (`doc_ids`, else the first `max_docs`), showing at most
    `max_pages` pages of each (of documents without pages, videos and webpages: `max_pages`
    images, with the text around them): images inline, text interleaved, provenance on every
    item."""
    root, out = Path(root), Path(out)
    docs = {r["doc_id"]: r for r in read_documents(root).to_pylist()}
    chosen = list(doc_ids) if doc_ids else list(docs)[:max_docs]
    unknown = [d for d in chosen if d not in docs]
    if unknown:
        raise ValueError(f"{root}: no document(s) {unknown}")
    wanted = set(chosen)
    meta = {d: json.loads(docs[d]["metadata"] or "{}") for d in chosen}
    parts: dict[str, list[str]] = {d: [] for d in chosen}
    shown_images = {d: 0 for d in chosen}
    for batch in iter_item_batches(root, batch_size=16, doc_ids=wanted):
        for row in batch.to_pylist():
            d = row["doc_id"]
            if d not in wanted or (row["page"] is not None and row["page"] >= max_pages):
                continue
            if row["page"] is None:  # frames, figures: count images instead of pages
                if shown_images[d] >= max_pages:
                    continue
                shown_images[d] += row["kind"] in IMAGE_KINDS
            if row["kind"] in IMAGE_KINDS:
                data = base64.b64encode(row["image"]).decode()
                body = f'<img src="data:image/{row["image_format"]};base64,{data}" alt="{row["kind"]}">'
                cls = "image"
            else:
                body, cls = html.escape(row["text"] or ""), "text"
            parts[d].append(f'<div class="item {cls}"><div class="prov">{_prov(row, meta[d].get("page_labels"))}</div>{body}</div>')
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        f.write(f"<!doctype html><meta charset=utf-8><title>mmlong preview</title><style>{_CSS}</style>")
        f.write(f"<h1>mmlong preview: {html.escape(str(root))}</h1>")
        for d in chosen:
            r = docs[d]
            toc = "".join(f"<li>{'&nbsp;' * 4 * (lvl - 1)}{html.escape(t)} (p. {p})</li>" for lvl, t, p in meta[d].get("toc", []))
            f.write(
                f'<div class="doc"><h2>{html.escape(Path(r["source"]).name)}</h2>'
                f'<div class="prov">{html.escape(r["source"])} | doc_id {d} | {r["kind"]}'
                + (f' | {r["num_pages"]} pages' if r["num_pages"] else "") + ' | '
                f'{r["text_tokens"]:,} text + {r["vision_tokens"]:,} vision tokens | showing '
                + (f'pages 1-{min(max_pages, r["num_pages"])}' if r["num_pages"] else f"the first {shown_images[d]} images")
                + '</div>'
                + (f"<details><summary>outline</summary><ul>{toc}</ul></details>" if toc else "")
                + "".join(parts[d])
                + "</div>"
            )
    return out
