"""What template synthesis makes of real long PDFs (default: the MMLongBench-Doc dev PDFs in
../shared), printed as a table:

    python benchmarks/synth_report.py [--pdfs DIR] [--work DIR] [--segments 2]

samples per document, the question-type distribution, the scanned documents (no text layer)
covered thanks to OCR, and the share of page answers verifiable from the sample's own input
(the "Page N" marker before the evidence page's image). Ingest (pdf-144dpi) and OCR are cached
in --work, so a second run only re-writes the questions.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAGE_KINDS = {"section-start", "caption-page", "sentence-page", "sentence-pages", "line-page"}


def verifiable(sample) -> bool:
    """Every page the answer names has its marker right before that page's image."""
    answer = json.loads(sample.answer)
    pages = answer if isinstance(answer, list) else [answer]
    content = sample.user_content()
    marked = {prov["page"] + 1 for k, (e, prov) in enumerate(zip(content, sample.items))
              if prov.get("marker") and e["text"].strip() == f"Page {prov['page'] + 1}"
              and k + 1 < len(sample.items) and sample.items[k + 1]["page"] == prov["page"]}
    return all(isinstance(p, int) and p in marked for p in pages)


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from mmlong.ingest import ingest
    from mmlong.samples import read_samples
    from mmlong.store import iter_documents
    from mmlong.synthesis.ocr_text import scanned_pages
    from mmlong.synthesis.run import synth

    ap = argparse.ArgumentParser()
    ap.add_argument("--pdfs", default=str(ROOT.parent / "shared" / "benchmarks" / "mmlongbench-doc" / "documents"))
    ap.add_argument("--work", default="/tmp/mmlong-synth-report")
    ap.add_argument("--segments", type=int, default=2)
    args = ap.parse_args()
    work = Path(args.work)
    pdfs = sorted(Path(args.pdfs).glob("*.pdf"))
    if not pdfs:
        sys.exit(f"{args.pdfs}: no PDFs")
    ingest([str(p) for p in pdfs], work / "ds", preset="pdf-144dpi", workers=2)
    summary = synth(work / "ds", work / "samples", segments=args.segments)
    samples = read_samples(work / "samples")
    docs = {d.source: d for d in iter_documents(work / "ds", images=False)}
    scanned = [s for s, d in docs.items() if d.num_pages and len(scanned_pages(d)) == d.num_pages]
    per_doc = Counter(s.source for s in samples)
    page_answers = [s for s in samples if s.kind in PAGE_KINDS]

    console = Console()
    t = Table(title=f"template synthesis over {len(docs)} PDFs ({sum(d.num_pages for d in docs.values())} pages)")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("samples", str(len(samples)))
    t.add_row("samples per document (min / median / max)",
              f"{min(per_doc.values(), default=0)} / {sorted(per_doc.values())[len(per_doc) // 2] if per_doc else 0} / "
              f"{max(per_doc.values(), default=0)}")
    t.add_row("documents without samples", str(len(summary["without_samples"])))
    t.add_row("scanned documents covered", f"{sum(1 for s in scanned if per_doc[s])} / {len(scanned)}")
    t.add_row("pages read with OCR", str(summary["ocr"]["pages"]))
    t.add_row("page answers verifiable from the input",
              f"{sum(map(verifiable, page_answers))} / {len(page_answers)}")
    console.print(t)
    kinds = Table(title="question types")
    for col in ("kind", "task", "samples", "share"):
        kinds.add_column(col, justify="right" if col in ("samples", "share") else "left")
    for (kind, task), n in sorted(Counter((s.kind, s.task) for s in samples).items(), key=lambda x: -x[1]):
        kinds.add_row(kind, task, str(n), f"{n / len(samples):.1%}")
    console.print(kinds)
    for source, why in summary["without_samples"].items():
        console.print(f"no samples: {Path(source).name}: {why}")


if __name__ == "__main__":
    main()
