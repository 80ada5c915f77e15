"""Evaluation reports: the summary of a task's records, written as JSON (with every record and
the protocol), Markdown, HTML and PNG plots (the needle heatmap, accuracy by length bin, bars
per breakdown)."""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from mmlong import tokens as tk
from mmlong.eval.score import score_predictions


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4) if values else 0.0


def by_length(records: list[dict[str, Any]]) -> dict[str, float]:
    """Mean score per prompt-length bin (the standard 8K ... 256K bins)."""
    groups: dict[int, list[float]] = defaultdict(list)
    for r in records:
        groups[tk.length_bin(r["prompt_tokens"])].append(r["score"])
    return {tk.bin_label(i): _mean(v) for i, v in sorted(groups.items())}


def summarize(task: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"items": len(records), "errors": sum(1 for r in records if r.get("error")),
                               "score": _mean([r["score"] for r in records]), "by_length_bin": by_length(records),
                               "prompt_tokens": {"min": min((r["prompt_tokens"] for r in records), default=0),
                                                 "max": max((r["prompt_tokens"] for r in records), default=0)}}
    if task == "longdoc-vqa":
        bench = [{"answer": r["gold"], "pred": r["pred"] if r["pred"] is not None else "", "answer_format": r["answer_format"],
                  "evidence_pages": r["evidence_pages"], "evidence_sources": r["evidence_sources"], "doc_type": r["doc_type"]}
                 for r in records]
        scored = score_predictions(bench)
        summary.update(acc=round(scored["acc"], 4), f1=round(scored["f1"], 4), breakdowns=scored["breakdowns"])
    if task in ("needle", "vtc"):
        contexts = sorted({r.get("context", "text") for r in records})
        for context in contexts:
            mine = [r for r in records if r.get("context", "text") == context]
            grid: dict[int, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
            for r in mine:
                grid[r["length"]][r["depth"]].append(r["score"])
            key = "grid" if task == "needle" else f"grid_{context}"
            summary[key] = {str(n): {str(d): _mean(v) for d, v in sorted(row.items())} for n, row in sorted(grid.items())}
            summary["by_length" if task == "needle" else f"by_length_{context}"] = {
                str(n): _mean([s for v in row.values() for s in v]) for n, row in sorted(grid.items())}
        if task == "vtc":
            summary["by_context"] = {c: _mean([r["score"] for r in records if r.get("context") == c]) for c in contexts}
            rendered = [r for r in records if r.get("context") == "rendered"]
            text = {r["id"]: r["context_tokens"] for r in records if r.get("context") == "text"}
            summary["compression"] = round(sum(text.values()) / max(sum(r["context_tokens"] for r in rendered), 1), 4)
    if task == "video-qa":
        summary["accuracy"] = summary["score"]
    return summary


def _heatmap(grid: dict[str, dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = list(grid)
    depths = sorted({d for row in grid.values() for d in row}, key=float)
    values = [[grid[n].get(d, float("nan")) for n in lengths] for d in depths]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(lengths), 1.2 + 0.5 * len(depths)), dpi=110)
    im = ax.imshow(values, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(lengths)), [f"{int(n) // 1024}K" if int(n) >= 1024 else n for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{float(d) * 100:.0f}%" for d in depths])
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _bars(values: dict[str, float], path: Path, title: str, xlabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.5 + 0.8 * len(values), 3.5), dpi=110)
    ax.bar(list(values), list(values.values()), color="tab:blue")
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    s, task = report["summary"], report["protocol"]["task"]
    made = []
    for key, grid in s.items():
        if key.startswith("grid") and grid:
            path = out / f"{key.replace('grid', 'needle_heatmap')}.png"
            _heatmap(grid, path, f"{task} {key.replace('grid_', '')}".strip())
            made.append(path)
    if s["by_length_bin"]:
        _bars(s["by_length_bin"], out / "accuracy_by_length.png", "score by prompt length", "tokens")
        made.append(out / "accuracy_by_length.png")
    for name, groups in (s.get("breakdowns") or {}).items():
        values = {k: v["acc"] for k, v in groups.items() if v.get("count")}
        if values:
            _bars(values, out / f"breakdown_{name}.png", f"accuracy by {name}", name)
            made.append(out / f"breakdown_{name}.png")
    return made


def _table(rows: list[list[Any]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report: dict[str, Any], images: list[Path]) -> str:
    p, s = report["protocol"], report["summary"]
    model = p["model"].get("path") or f"{p['model'].get('base_url')} ({p['model'].get('model')})"
    head = {k: v for k, v in s.items() if not isinstance(v, dict)}
    parts = [f"# {p['task']}: {model}", "", _table([[k, v] for k, v in head.items()], ["metric", "value"])]
    for key, value in s.items():
        if isinstance(value, dict) and value and all(not isinstance(v, dict) for v in value.values()):
            parts += ["", f"## {key}", "", _table([[k, v] for k, v in value.items()], [key, "score"])]
        elif key.startswith("grid") and value:
            lengths = list(value)
            depths = sorted({d for row in value.values() for d in row}, key=float)
            parts += ["", f"## {key} (rows: depth, columns: length)", "",
                      _table([[d] + [value[n].get(d, "") for n in lengths] for d in depths], ["depth"] + lengths)]
        elif key == "breakdowns":
            for name, groups in value.items():
                parts += ["", f"## accuracy by {name}", "",
                          _table([[k, round(v["acc"], 4), v["count"]] for k, v in groups.items()], [name, "acc", "count"])]
    parts += ["", "## protocol", "", "```json", json.dumps(p, indent=2, default=str), "```"]
    parts += [f"![{img.stem}]({img.name})" for img in images]
    return "\n".join(parts) + "\n"


def write_report(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str, ensure_ascii=False), encoding="utf-8")
    images = plots(report, out)
    md = markdown(report, images)
    (out / "report.md").write_text(md, encoding="utf-8")
    rows = "".join(
        f"<tr><td>{html.escape(str(r['id']))}</td><td>{r['prompt_tokens']}</td><td>{html.escape(str(r['gold']))}</td>"
        f"<td>{html.escape(str(r.get('pred') if r.get('error') is None else r['error']))}</td><td>{r['score']:.2f}</td></tr>"
        for r in report["records"])
    body = "".join(f"<img src='{img.name}' style='max-width:48%'>" for img in images)
    (out / "report.html").write_text(
        "<!doctype html><meta charset=utf-8><title>mmlong eval</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{border-bottom:1px solid #ddd;padding:2px 6px}</style>"
        f"<pre>{html.escape(md.split('## protocol')[0])}</pre>{body}"
        f"<table><tr><th>id</th><th>prompt tokens</th><th>gold</th><th>extracted</th><th>score</th></tr>{rows}</table>",
        encoding="utf-8")
