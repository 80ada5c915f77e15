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
        "html": {"mode": args.html_mode, "allow_network": True if args.allow_network else None},
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
    summary = synth(args.dataset, args.out, writer, args.segments, args.seed, args.min_pages, args.max_pages)
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
                      "packing": report.packing}, indent=2))
    print(f"mixture: {Path(args.out).resolve()} (mix.parquet, packs.parquet, report.json, lengths.png)")
    return 0 if report.drawn else 1


def cmd_needles(args: argparse.Namespace) -> int:
    from mmlong.synthesis.needles import needle_dataset

    summary = needle_dataset(args.dataset, args.out, args.lengths, [d / 100 for d in args.depths], args.variants,
                             args.modality, args.count, args.seed, args.unit, args.strip_digits)
    print(json.dumps(summary, indent=2))
    print(f"samples: {Path(args.out).resolve() / 'samples.parquet'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.action == "check":
        return _train_check(args)
    if not args.config or not args.out:
        raise ValueError("train needs --config RECIPE and --out DIR (or: mmlong train check --model ... --data ...)")
    from mmlong.train.run import train

    overrides = [f"--{kv}" for kv in args.set or []]
    try:
        folder = train(args.config, args.out, overrides, args.checkpoint_every, threads=args.threads)
    except argparse.ArgumentError as e:
        raise ValueError(f"recipe {args.config}: {e}") from None
    print(f"model: {folder.resolve()}")
    return 0


def _train_check(args: argparse.Namespace) -> int:
    from mmlong.train.check import check_packing
    from mmlong.train.data import windows_from_mixture, windows_from_samples
    from mmlong.train.model import ModelSettings, build_model
    from mmlong.train.processor import load_processor

    if not args.model or not args.data:
        raise ValueError("train check needs --model PATH and --data MIXTURE_OR_SAMPLES")
    data = Path(args.data)
    if (data / "packs.parquet").is_file():
        windows, _, budget = windows_from_mixture(data)
    else:
        if not args.max_length:
            raise ValueError("train check on samples needs --max-length (the window they are packed into)")
        windows, budget = windows_from_samples([args.data], args.max_length)
    model = build_model(ModelSettings(path=args.model, attn_implementation=args.attn)).eval()
    result = check_packing(model, load_processor(args.model, budget), windows[: args.windows])
    ok = result.ok(args.tolerance)
    print(json.dumps({"windows": result.windows, "samples": result.samples, "tokens": result.tokens,
                      "max_logit_diff": result.max_logit_diff, "loss_packed": result.loss_packed,
                      "loss_alone": result.loss_alone, "loss_diff": result.loss_diff, "tolerance": args.tolerance,
                      "ok": ok}, indent=2))
    return 0 if ok else 1


def _values(pairs: list[str] | None) -> dict:
    """KEY=VALUE overrides, each value read as YAML (numbers, lists, booleans)."""
    import yaml

    out = {}
    for kv in pairs or []:
        key, sep, value = kv.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {kv!r}")
        out[key] = yaml.safe_load(value)
    return out


def cmd_eval(args: argparse.Namespace) -> int:
    from mmlong.eval.run import evaluate, rerun

    if args.from_report:
        report = rerun(args.from_report, args.out, progress=not args.no_progress)
    else:
        from mmlong.eval.models import LocalModel, ServerModel
        from mmlong.eval.tasks import SECTIONS

        if not args.task or bool(args.model) == bool(args.server):
            raise ValueError("eval needs a TASK and one of --model PATH or --server URL (or --from REPORT.json)")
        model = (LocalModel(args.model, batch_size=args.batch_size, attn_implementation=args.attn) if args.model else
                 ServerModel(args.server, args.server_model or "default", concurrency=args.concurrency))
        from mmlong.presets import load_preset

        task = load_preset("eval", args.task).get("task")
        section = SECTIONS.get(task, task)
        overrides = _values(args.set)
        for flag, key in (("samples", "samples"), ("documents", "documents"), ("haystack", "haystack"), ("questions", "questions")):
            value = getattr(args, flag)
            if value:
                overrides[f"{section}.{key}"] = value if flag == "haystack" else value[0]
        if args.limit:
            overrides["limit"] = args.limit
        report = evaluate(args.task, model, args.out, overrides, progress=not args.no_progress)
    summary = {k: v for k, v in report["summary"].items() if not isinstance(v, dict)}
    print(json.dumps(summary, indent=2))
    print(f"report: {Path(args.out).resolve() / 'report.json'} (report.md, report.html, plots)")
    return 0 if not report["summary"]["errors"] else 1


def cmd_score(args: argparse.Namespace) -> int:
    from mmlong.eval.score import score_predictions

    if args.benchmark != "mmlongbench-doc":
        raise ValueError(f"unknown benchmark {args.benchmark!r} (known: mmlongbench-doc)")
    try:
        records = json.loads(Path(args.predictions).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{args.predictions}: cannot read predictions ({e})") from None
    need = {"answer", "answer_format", "pred"}
    if not isinstance(records, list) or not all(isinstance(r, dict) and need <= set(r) for r in records):
        raise ValueError(f"{args.predictions}: expected a JSON list of benchmark records, each with {sorted(need)}")
    result = score_predictions(records)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"acc {result['acc']:.4f}  f1 {result['f1']:.4f}  ({len(records)} records)")
    return 0


def _evidence_of(sample):
    """A sample's evidence: its needles, else the spans of its evidence pages."""
    from mmlong.eval.heads import needle_evidence, page_evidence

    return needle_evidence(sample) or page_evidence(sample, [p - 1 for p in sample.evidence_pages])


def cmd_heads(args: argparse.Namespace) -> int:
    from mmlong.eval.heads import ablate, detect, heads_json, heatmap, write_json
    from mmlong.samples import read_samples
    from mmlong.train.model import ModelSettings, build_model
    from mmlong.train.processor import load_processor

    samples = read_samples(args.samples)[: args.limit or None]
    if not samples:
        raise ValueError(f"{args.samples}: no samples")
    model = build_model(ModelSettings(path=args.model, attn_implementation=args.attn)).eval()
    processor = load_processor(args.model, samples[0].budget)
    if args.action == "detect":
        det = detect(model, processor, samples, _evidence_of, str(Path(args.model).resolve()), progress=not args.no_progress)
        data = heads_json(det, args.score, not args.raw)
        out = write_json(data, args.out)
        heatmap(data["scores"], out.with_suffix(".png"), f"{args.score} score{'' if args.raw else ' (calibrated)'}")
        print(json.dumps({k: data[k] for k in ("model", "examples", "score", "rho_0.5")} | {"top": data["ranking"][:10]}, indent=2))
        print(f"heads: {out.resolve()} (heatmap {out.with_suffix('.png').name})")
        return 0
    heads = json.loads(Path(args.heads).read_text(encoding="utf-8"))
    ranking = heads["ranking"] if args.ranking == heads["score"] else heads["other"]["ranking"]
    ranking = [p for p in ranking if p[0] not in (args.exclude_layers or [])]
    result = ablate(model, processor, samples, ranking, [int(k) for k in args.k.split(",")], args.draws, args.seed)
    result["ranking"] = args.ranking
    if args.out:
        write_json(result, args.out)
    print(json.dumps(result, indent=2) if args.json else "\n".join(
        f"k={r['k']}: top {r['top_accuracy']:.3f}  random {r['random_accuracy']:.3f} (worst {r['random_worst']:.3f})  "
        f"baseline {result['baseline']:.3f}" for r in result["rows"]))
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    from mmlong.eval.ranking import rank_dataset

    result = rank_dataset(args.dataset, args.questions, args.ranker, args.model, args.heads, args.top_heads, args.content,
                          args.max_tokens, args.ocr)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['ranker']}: recall@1 {result['recall@1']:.3f}  recall@3 {result['recall@3']:.3f}  "
              f"recall@5 {result['recall@5']:.3f}  mrr {result['mrr']:.3f}  ({result['questions']} questions)")
        for s in result["skipped"]:
            print(f"skipped question {s['question']}: {s['reason']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
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
    p.add_argument("--unit", choices=["sentence", "item"], default="sentence",
                   help="haystack text in sentences (fills short lengths) or whole items")
    p.add_argument("--strip-digits", action="store_true", help="remove digits from the haystack text (RULER)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_needles)

    p = sub.add_parser("train", help="train a VLM with Lightning from a recipe (resumes); or `train check` packing")
    p.add_argument("action", nargs="?", choices=["check"], help="check: packed logits and loss equal per-sample ones")
    p.add_argument("--config", help="training recipe (LightningCLI YAML), e.g. train/tiny-cpu.yaml")
    p.add_argument("--out", help="run folder: checkpoints, logs, validation.json, hf/ (the trained model)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe value, e.g. trainer.max_steps=10")
    p.add_argument("--checkpoint-every", type=int, default=50, help="optimizer steps between checkpoints")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all cores; results depend on it)")
    p.add_argument("--model", help="check: a Hugging Face model folder")
    p.add_argument("--data", help="check: a mixture folder (mmlong mix) or a samples file")
    p.add_argument("--max-length", type=int, help="check: window length for samples files")
    p.add_argument("--windows", type=int, default=4, help="check: windows compared")
    p.add_argument("--tolerance", type=float, default=1e-4, help="check: largest logit / loss difference allowed")
    p.add_argument("--attn", default="sdpa", help="check: attention implementation (sdpa, eager, flash_attention_2)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a model on a task (long-doc VQA, needles, compression, video QA)")
    p.add_argument("task", nargs="?", help="task recipe (eval/*.yaml name or path)")
    p.add_argument("--out", required=True, help="folder for records, cache and the report")
    p.add_argument("--model", help="a local Hugging Face model folder")
    p.add_argument("--server", help="an OpenAI-compatible server, e.g. http://localhost:8000/v1")
    p.add_argument("--server-model", help="the model name the server knows")
    p.add_argument("--from", dest="from_report", metavar="REPORT", help="run a report.json again from its protocol")
    p.add_argument("--samples", nargs=1, help="longdoc-vqa: an MMLongBench-Doc samples.json")
    p.add_argument("--documents", nargs=1, help="longdoc-vqa: the folder of its PDFs (or an ingested dataset)")
    p.add_argument("--haystack", nargs="+", help="needle, vtc: haystack datasets or files")
    p.add_argument("--questions", nargs=1, help="video-qa: the questions file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe value, e.g. needles.lengths=[128,256]")
    p.add_argument("--limit", type=int, help="only the first N items")
    p.add_argument("--batch-size", type=int, default=1, help="local model: prompts per forward")
    p.add_argument("--attn", default="sdpa", help="local model: attention implementation")
    p.add_argument("--concurrency", type=int, default=4, help="server: requests in flight")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("score", help="score predictions with a benchmark's reference rules")
    p.add_argument("benchmark", help="mmlongbench-doc")
    p.add_argument("predictions", help="a JSON list of benchmark records, each with an added `pred`")
    p.add_argument("--json", action="store_true", help="print one JSON object: acc, f1, scores")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("heads", help="retrieval heads: detect them on samples, or ablate (mask) them")
    p.add_argument("action", choices=["detect", "ablate"])
    p.add_argument("--model", required=True, help="a Hugging Face model folder")
    p.add_argument("--samples", required=True, help="samples (needles, or questions with evidence pages)")
    p.add_argument("--out", help="detect: HEADS.json to write (a heatmap PNG beside); ablate: optional JSON")
    p.add_argument("--heads", help="ablate: a HEADS.json from detect")
    p.add_argument("--score", choices=["question", "answer"], default="question", help="detect: the score that ranks heads")
    p.add_argument("--raw", action="store_true", help="detect: without the null-question calibration")
    p.add_argument("--ranking", choices=["question", "answer"], default="question", help="ablate: which ranking picks heads")
    p.add_argument("--k", default="1,2,3", help="ablate: numbers of heads masked, e.g. 1,2,3,8")
    p.add_argument("--draws", type=int, default=5, help="ablate: random draws per k")
    p.add_argument("--exclude-layers", type=int, nargs="*", help="ablate: layers whose heads are never picked")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="only the first N samples")
    p.add_argument("--attn", default="sdpa")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_heads)

    p = sub.add_parser("rank", help="rank the pages of a dataset's documents for questions; Recall@k and MRR")
    p.add_argument("dataset", help="an ingested dataset")
    p.add_argument("--questions", required=True, help="MMLongBench-Doc-format questions (doc_id, question, evidence_pages)")
    p.add_argument("--ranker", choices=["bm25", "embedding", "heads"], default="bm25")
    p.add_argument("--model", help="heads: a Hugging Face model folder")
    p.add_argument("--heads", help="heads: a HEADS.json from mmlong heads detect")
    p.add_argument("--top-heads", type=int, default=8, help="heads: how many of the ranking score")
    p.add_argument("--content", choices=["image", "text", "both"], help="what a page shows the ranker (heads: image)")
    p.add_argument("--max-tokens", type=int, help="heads: window size in tokens (longer documents go in windows)")
    p.add_argument("--ocr", choices=["auto", "tesseract", "rapidocr"], help="read pages without a text layer with OCR")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_rank)
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


if __name__ == "__main__":
    sys.exit(main())
