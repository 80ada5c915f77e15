"""The evaluation commands: `mmlong eval`, `mmlong score`, `mmlong heads`, `mmlong rank`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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
        report = rerun(args.from_report, args.out, progress=not args.no_progress, cache=args.cache)
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
        report = evaluate(args.task, model, args.out, overrides, progress=not args.no_progress, cache=args.cache)
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


def cmd_serve(args: argparse.Namespace) -> int:
    from mmlong.eval.models import LocalModel
    from mmlong.eval.serve import ChatServer

    server = ChatServer(LocalModel(args.model, attn_implementation=args.attn), args.host, args.port)
    print(f"serving {args.model} at {server.url} (chat/completions; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def add_eval_commands(sub) -> None:
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
    p.add_argument("--cache", help="folder of the response cache and ingested data, shared by runs (default: --out)")
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

    p = sub.add_parser("serve", help="serve a local model as an OpenAI-compatible chat completions endpoint")
    p.add_argument("--model", required=True, help="a Hugging Face model folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--attn", default="sdpa")
    p.set_defaults(func=cmd_serve)
