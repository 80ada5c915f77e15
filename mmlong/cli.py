"""The `mmlong` command line: a thin argparse layer over plain functions.

    mmlong ingest PATH... --out DIR [--preset NAME] [options]
    mmlong inspect DIR [--json] [--html OUT]
    mmlong render PATH... --out DIR [--preset NAME] [--ocr ENGINE]
    mmlong render-search TEXT... --out DIR [--floor 0.9] [--budget 40] [--seed 0]
    mmlong synth DATASET --out DIR [--writer template|llm]
    mmlong mix SAMPLES... --recipe NAME --out DIR
    mmlong needles DATASET --out DIR [--lengths ...] [--depths ...] [--variants ...] [--modality text|image|video]
    mmlong train --config RECIPE --out DIR [--set KEY=VALUE ...]
    mmlong train check --model PATH --data MIXTURE [--tolerance 1e-4]
    mmlong eval TASK --model PATH | --server URL --out DIR [--samples ... --documents ... | --haystack ...]
    mmlong score mmlongbench-doc PREDICTIONS.json [--json]
    mmlong heads detect|ablate --model PATH --samples SAMPLES [--out HEADS.json | --heads HEADS.json --k 1,2,3]
    mmlong rank DATASET --questions SAMPLES.json --ranker bm25|embedding|heads [--json]
    mmlong serve --model PATH [--port 8000]

Exit status: 0 success, 1 some inputs failed (the rest was ingested), 2 unusable arguments or
input, 3 an internal error (a bug to report).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


ISSUES = "https://github.com/mmlong/mmlong/issues"


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
        "html": {"mode": args.html_mode, "allow_network": True if args.allow_network else None},
    }
    from mmlong.pool import Limits

    options = IngestOptions.from_preset(args.preset, overrides)
    limits = Limits(args.page_timeout or None, args.worker_memory or None, "render")
    report = ingest(
        args.paths, args.out, options=options, workers=args.workers, chunk_pages=args.chunk_pages, progress=not args.no_progress,
        limits=limits,
    )
    units = report.pages + report.frames
    rate = units / report.seconds if report.seconds else 0.0
    what = [f"{n} {name}" for n, name in ((report.pages, "pages"), (report.frames, "video frames"),
                                           (report.webpages, "webpages")) if n] or ["nothing new"]
    print(f"ingested {len(report.ingested)} document(s): {', '.join(what)} in {report.seconds:.1f}s "
          f"({rate:.1f} pages+frames/s); skipped {len(report.skipped)} already present; failed {len(report.failed)}")
    print(f"dataset: {Path(args.out).resolve()}")
    if report.failed:
        print(f"failures listed in {Path(args.out).resolve() / 'failures.json'}")
    return 0 if report.ok else 1


def cmd_inspect(args: argparse.Namespace) -> int:
    from mmlong.report import print_summary, write_html
    from mmlong.store import read_manifest, summarize

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


def cmd_render(args: argparse.Namespace) -> int:
    from mmlong.presets import load_preset
    from mmlong.render.glyph import RenderConfig
    from mmlong.render.run import print_report, render
    from mmlong.tokens import PixelBudget

    data = load_preset("render", args.preset)
    data.update({k: v for k, v in {"dpi": args.dpi, "font_size": args.font_size, "format": args.format}.items() if v is not None})
    budget = PixelBudget(args.token_min_pixels, args.token_max_pixels)
    report = render(args.paths, args.out, config=RenderConfig.from_dict(data), budget=budget, ocr=args.ocr,
                    workers=args.workers, progress=not args.no_progress)
    print_report(report)
    print(f"dataset: {Path(args.out).resolve()}")
    return 0 if report.ok else 1


def cmd_render_search(args: argparse.Namespace) -> int:
    from mmlong.presets import load_preset
    from mmlong.render.glyph import RenderConfig
    from mmlong.render.search import SearchSettings, ocr_scorer, search, write_results

    text = "\n\n".join(Path(p).read_text(encoding="utf-8") for p in args.paths)[: args.sample_chars]
    settings = SearchSettings(floor=args.floor, population=args.population, budget=args.budget, mutation=args.mutation,
                              crossover=args.crossover, seed=args.seed, top=args.top)
    base = RenderConfig.from_dict(load_preset("render", args.base))
    space = load_preset("render", args.space)

    def show(e) -> None:
        print(f"[{e.generation}] compression {e.ratio:.2f}x legibility {e.legibility:.3f} {'ok' if e.feasible else '--'} {e.genes}")

    result = search(text, ocr_scorer(args.ocr), space, settings, base, progress=show)
    presets = write_results(result, Path(args.out), settings, base)
    best = result.best(1)[0]
    print(f"best: {best.ratio:.2f}x at legibility {best.legibility:.3f}; presets {', '.join(map(str, presets))}; "
          f"plot {Path(args.out).resolve() / 'search.png'}")
    return 0 if best.feasible else 1


def cmd_synth(args: argparse.Namespace) -> int:
    from mmlong.synthesis.run import synth
    from mmlong.synthesis.template import TemplateWriter

    if args.writer == "llm":
        from mmlong.synthesis.llm import LlmWriter

        writer = LlmWriter(base_url=args.llm_base_url, model=args.llm_model, api_key_env=args.llm_key_env,
                           cache_dir=Path(args.out) / "llm-cache", unanswerable_rate=args.unanswerable)
    else:
        writer = TemplateWriter(per_kind=args.per_kind, unanswerable_rate=args.unanswerable, ocr_baselines=args.ocr_baselines)
    from mmlong.messages import View

    view = View(args.view, page_markers=not args.no_page_markers)
    summary = synth(args.dataset, args.out, writer, args.segments, args.seed, args.min_pages, args.max_pages, view,
                    None if args.ocr == "none" else args.ocr)
    for source, why in summary["without_samples"].items():
        print(f"warning: {source}: no samples: {why}", file=sys.stderr)
    print(json.dumps(summary, indent=2))
    print(f"samples: {Path(args.out).resolve() / 'samples.parquet'}")
    return 0 if summary["samples"] else 1


def cmd_mix(args: argparse.Namespace) -> int:
    from mmlong.presets import load_preset
    from mmlong.mixtures.mix import MixtureSpec, run_mix
    from mmlong.samples import read_samples

    data = load_preset("train", args.recipe)
    data.update({k: v for k, v in {"samples": args.samples, "seed": args.seed, "max_length": args.max_length}.items() if v is not None})
    spec = MixtureSpec.from_dict(data)
    pool = []
    for p in args.samples_from:
        path = Path(p) / "samples.parquet" if Path(p).is_dir() else Path(p)
        pool += read_samples(path)
    report = run_mix(pool, spec, args.out)
    print(json.dumps({"drawn": report.drawn, "tasks": report.tasks_realised, "bins": {b["bin"]: b["realised"] for b in report.bins},
                      "trimmed": report.trimmed, "dropped_too_long": report.dropped_too_long, "shortfall": report.shortfall,
                      "capped": report.capped, "packing": report.packing}, indent=2))
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)
    print(f"mixture: {Path(args.out).resolve()} (mix.parquet, packs.parquet, report.json, lengths.png)")
    return 0 if report.drawn else 1


def cmd_needles(args: argparse.Namespace) -> int:
    from mmlong.synthesis.needles import needle_dataset

    summary = needle_dataset(args.dataset, args.out, args.lengths, [d / 100 for d in args.depths], args.variants,
                             args.modality, args.count, args.seed, args.unit, args.strip_digits)
    print(json.dumps(summary, indent=2))
    print(f"samples: {Path(args.out).resolve() / 'samples.parquet'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from mmlong.eval.cli import add_eval_commands
    from mmlong.train.cli import add_train_commands

    parser = argparse.ArgumentParser(prog="mmlong", description="Long-context multimodal data for VLMs.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="ingest PDFs, videos and webpages into an interleaved dataset (creates or resumes it)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files, folders (searched for PDFs, videos, HTML) or globs")
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
    p.add_argument("--html-mode", choices=["interleaved", "screenshot"], help="webpages: text and images, or screenshots")
    p.add_argument("--allow-network", action="store_true", help="webpages may fetch http(s) resources (off: nothing leaves)")
    p.add_argument("--workers", type=int, default=0, help="processes (0: all cores)")
    p.add_argument("--chunk-pages", type=int, default=8, help="pages per task")
    p.add_argument("--page-timeout", type=float, default=300,
                   help="seconds one page (a chunk of frames, a webpage) may take before its document fails (0: none)")
    p.add_argument("--worker-memory", type=int, default=4096, help="MB a worker may hold before its document fails (0: none)")
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

    p = sub.add_parser("render", help="render text files or a dataset's text to page images (visual compression)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="text files, folders of them, or mmlong datasets")
    p.add_argument("--out", required=True, help="dataset folder for the rendered pages")
    p.add_argument("--preset", default="glyph-default", help="render preset name (render/*.yaml) or a YAML path")
    p.add_argument("--dpi", type=float, help="override the preset's dpi")
    p.add_argument("--font-size", type=float, help="override the preset's font size (pt)")
    p.add_argument("--format", choices=["text", "markdown", "code"], help="how to read the text")
    p.add_argument("--ocr", choices=["auto", "tesseract", "rapidocr"], help="also measure OCR legibility")
    p.add_argument("--token-min-pixels", type=int, default=3136)
    p.add_argument("--token-max-pixels", type=int, default=12845056)
    p.add_argument("--workers", type=int, default=0, help="processes (0: all cores)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("render-search", help="search render configs: most compression above a legibility floor")
    p.add_argument("paths", nargs="+", metavar="TEXT", help="text files to render while searching")
    p.add_argument("--out", required=True, help="folder for search.jsonl, best-N.yaml presets and search.png")
    p.add_argument("--space", default="search-space", help="search space (render/*.yaml name or path)")
    p.add_argument("--base", default="glyph-default", help="preset giving the genes the space leaves out")
    p.add_argument("--floor", type=float, default=0.9, help="minimum OCR character accuracy")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--budget", type=int, default=40, help="configs evaluated in all")
    p.add_argument("--mutation", type=float, default=0.25)
    p.add_argument("--crossover", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=int, default=3, help="best configs written as presets")
    p.add_argument("--sample-chars", type=int, default=4000, help="characters of text rendered per evaluation")
    p.add_argument("--ocr", choices=["auto", "tesseract", "rapidocr"], default="auto")
    p.set_defaults(func=cmd_render_search)

    p = sub.add_parser("synth", help="write long-document QA samples from an ingested dataset")
    p.add_argument("dataset", help="an mmlong dataset (from mmlong ingest)")
    p.add_argument("--out", required=True, help="folder for samples.parquet and synth.json")
    p.add_argument("--writer", choices=["template", "llm"], default="template")
    p.add_argument("--segments", type=int, default=1, help="segments sampled per document")
    p.add_argument("--min-pages", type=int, default=8)
    p.add_argument("--max-pages", type=int, default=15)
    p.add_argument("--per-kind", type=int, default=2, help="template writer: questions per kind and segment")
    p.add_argument("--unanswerable", type=float, default=0.1, help="share of unanswerable questions")
    p.add_argument("--ocr-baselines", action="store_true", help="template writer: also OCR-full / OCR-needle tasks")
    p.add_argument("--view", choices=["images", "all", "text"], default="images",
                   help="what samples show: page images only (default; documents without images as text), all items, or text")
    p.add_argument("--no-page-markers", action="store_true", help='no "Page N" text before each page')
    p.add_argument("--ocr", choices=["auto", "tesseract", "rapidocr", "none"], default="auto",
                   help="engine that reads scanned pages (no text layer) to write questions from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--llm-base-url", default=None, help="OpenAI-compatible server, e.g. http://localhost:8000/v1")
    p.add_argument("--llm-model", default=None)
    p.add_argument("--llm-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("mix", help="draw a length-balanced task mixture from samples and pack it")
    p.add_argument("samples_from", nargs="+", metavar="SAMPLES", help="samples.parquet files or synth output folders")
    p.add_argument("--recipe", default="mmprolong-128k", help="mixture recipe (train/*.yaml) or a YAML path")
    p.add_argument("--out", required=True)
    p.add_argument("--samples", type=int, help="override the recipe's sample count")
    p.add_argument("--max-length", type=int, help="override the recipe's max length")
    p.add_argument("--seed", type=int)
    p.set_defaults(func=cmd_mix)

    p = sub.add_parser("needles", help="needle-in-a-haystack samples over lengths, depths and variants")
    p.add_argument("dataset", help="an mmlong dataset whose documents make the haystacks")
    p.add_argument("--out", required=True)
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 16384, 32768, 65536, 131072])
    p.add_argument("--depths", type=float, nargs="+", default=[0, 25, 50, 75, 100], help="percent")
    p.add_argument("--variants", nargs="+", default=["single"],
                   choices=["single", "multi-key", "multi-value", "multi-query", "count", "sum"])
    p.add_argument("--modality", choices=["text", "image", "video"], default="text")
    p.add_argument("--count", type=int, default=4, help="needles of the multi, count and sum variants")
    p.add_argument("--unit", choices=["sentence", "item", "crop"], default="sentence",
                   help="haystack text in sentences (fills short lengths), whole items, or sentences and page images cut "
                        "into strips of <= 256 tokens (needles within a few percent of their depth in short haystacks of pages)")
    p.add_argument("--strip-digits", action="store_true", help="remove digits from the haystack text (RULER)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_needles)

    add_train_commands(sub)
    add_eval_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mmlong.chat_api import ChatError
    from mmlong.errors import DatasetError, IngestError
    from mmlong.render.ocr import OcrUnavailable
    from mmlong.tokens import TokenizerNotFound

    try:
        return args.func(args)
    except (DatasetError, IngestError, TokenizerNotFound, OcrUnavailable, ChatError, ValueError, OSError) as e:
        print(f"mmlong {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmlong {args.command}: interrupted; finished documents are kept, re-run to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (`mmlong inspect --json | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception:  # a bug of ours, not bad input: say where to report it, with a status of its own
        import traceback

        traceback.print_exc()
        print(f"mmlong {args.command}: internal error (a bug in mmlong, not in your input); please report it with the "
              f"traceback above at {ISSUES}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
