"""The `mmlong` command line: a thin argparse layer over plain functions.

    mmlong ingest PATH... --out DIR [--preset NAME] [options]
    mmlong inspect DIR [--json] [--html OUT]

Exit status: 0 success, 1 some inputs failed (the rest was ingested), 2 unusable arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_ingest(args: argparse.Namespace) -> int:
    from mmlong.ingest import IngestOptions, ingest

    overrides = {
        "pdf": {
            "mode": args.mode,
            "dpi": args.dpi,
            "max_pixels": args.max_pixels,
            "min_pixels": args.min_pixels,
            "figures": args.figures,
            "image_format": args.image_format,
            "quality": args.quality,
        },
        "tokens": {"min_pixels": args.token_min_pixels, "max_pixels": args.token_max_pixels},
    }
    options = IngestOptions.from_preset(args.preset, overrides)
    report = ingest(
        args.paths, args.out, options=options, workers=args.workers, chunk_pages=args.chunk_pages, progress=not args.no_progress
    )
    rate = report.pages / report.seconds if report.seconds else 0.0
    print(
        f"ingested {len(report.ingested)} document(s), {report.pages} pages in {report.seconds:.1f}s ({rate:.1f} pages/s); "
        f"skipped {len(report.skipped)} already present; failed {len(report.failed)}"
    )
    print(f"dataset: {Path(args.out).resolve()}")
    if report.failed:
        print(f"failures listed in {Path(args.out).resolve() / 'failures.json'}")
    return 0 if report.ok else 1


def cmd_inspect(args: argparse.Namespace) -> int:
    from mmlong.report import print_summary, summarize, write_html
    from mmlong.store import read_manifest

    read_manifest(Path(args.dataset))
    summary = summarize(Path(args.dataset))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    if args.html:
        out = write_html(Path(args.dataset), Path(args.html), args.docs, args.max_docs, args.max_pages)
        print(f"preview: {out.resolve()}", file=sys.stderr if args.json else sys.stdout)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmlong", description="Long-context multimodal data for VLMs.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="ingest PDFs into an interleaved dataset (creates or resumes it)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files, folders (searched for *.pdf) or globs")
    p.add_argument("--out", required=True, help="dataset folder")
    p.add_argument("--preset", default="pdf-144dpi", help="ingest preset name (ingest/*.yaml) or a YAML path")
    p.add_argument("--mode", choices=["pages", "text", "interleaved"], help="override the preset's pdf mode")
    p.add_argument("--dpi", type=float, help="render resolution")
    p.add_argument("--max-pixels", type=int, help="upper bound on pixels of one page render")
    p.add_argument("--min-pixels", type=int, help="lower bound on pixels of one page render")
    p.add_argument("--figures", action=argparse.BooleanOptionalAction, default=None, help="embedded images as items")
    p.add_argument("--image-format", choices=["jpeg", "png", "webp"], help="codec of stored images")
    p.add_argument("--quality", type=int, help="JPEG/WebP quality")
    p.add_argument("--token-min-pixels", type=int, help="Qwen processor min_pixels for token counts")
    p.add_argument("--token-max-pixels", type=int, help="Qwen processor max_pixels for token counts")
    p.add_argument("--workers", type=int, default=0, help="processes (0: all cores)")
    p.add_argument("--chunk-pages", type=int, default=8, help="pages per task")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("inspect", help="summarize a dataset; optionally write an HTML preview")
    p.add_argument("dataset", help="dataset folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--html", metavar="OUT", help="write an HTML preview to OUT")
    p.add_argument("--docs", nargs="+", metavar="DOC_ID", help="documents to preview (default: the first --max-docs)")
    p.add_argument("--max-docs", type=int, default=3)
    p.add_argument("--max-pages", type=int, default=8, help="pages shown per document")
    p.set_defaults(func=cmd_inspect)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mmlong.ingest.pdf import IngestError
    from mmlong.store import DatasetError
    from mmlong.tokens import TokenizerNotFound

    try:
        return args.func(args)
    except (DatasetError, IngestError, TokenizerNotFound, ValueError, OSError) as e:
        print(f"mmlong {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmlong {args.command}: interrupted; finished documents are kept, re-run to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
