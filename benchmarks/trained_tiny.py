"""Model-side proofs on the tiny Qwen2.5-VL that `train/tiny-cpu.yaml` trains on 2 CPU cores.

    python benchmarks/trained_tiny.py [--run runs/tiny] [--recipe train/tiny-cpu.yaml] [--out DIR]

Trains the recipe into --run first when its `hf/` folder is missing (about 20 minutes here),
then, with the untrained model of the same recipe and seed beside it:

1. evaluation: the `needle-tiny` grid (held-out haystack text, another seed; 128-512 tokens
   trained, 1K-2K beyond) for the untrained and the trained model, side by side;
2. serving: the trained model behind `mmlong serve` gives the same per-sample predictions as
   the local path;
3. retrieval heads: detection on held-out needles by both scores (question tokens, answer
   positions), their top heads, overlap and rho_0.5; masking the top-k heads against k random
   heads (5 draws, the top-k left out of the pool) for k = 1, 2, 3 and ~10% of the heads, for
   both rankings (and the answer ranking without layer 0);
4. page ranking: generated multi-page documents (held-out text, one page holding the needle)
   ranked by the trained model's heads against BM25 and the embedding ranker, Recall@1/3 and MRR.

Writes proofs.json and proofs.md into --out (default RUN/proofs) and prints the Markdown.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def untrained(recipe: Path, folder: Path) -> Path:
    """The recipe's model at its initial (seeded) weights, as a Hugging Face folder."""
    import yaml

    from mmlong.train.export import export_hf
    from mmlong.train.model import ModelSettings, build_model
    from mmlong.train.processor import build_processor

    if (folder / "config.json").is_file():
        return folder
    settings = yaml.safe_load(recipe.read_text())["model"]["model"]
    return export_hf(build_model(ModelSettings(**settings)), build_processor(), folder)


def needle_grid(model_path: Path, out: Path) -> dict:
    from mmlong.eval.models import LocalModel
    from mmlong.eval.run import evaluate

    return evaluate("needle-tiny", LocalModel(str(model_path)), out, progress=False)


def served(model_path: Path, out: Path, local_report: dict) -> dict:
    from mmlong.eval.models import LocalModel, ServerModel
    from mmlong.eval.run import evaluate
    from mmlong.eval.serve import ChatServer

    with ChatServer(LocalModel(str(model_path))) as srv:
        report = evaluate("needle-tiny", ServerModel(srv.url, "tiny", concurrency=2), out, progress=False)
    here = [r["response"] for r in local_report["records"]]
    there = [r["response"] for r in report["records"]]
    return {"records": len(here), "same_predictions": sum(a == b for a, b in zip(here, there)),
            "accuracy_local": local_report["summary"]["score"], "accuracy_server": report["summary"]["score"]}


def heldout_needles(run: Path, per_length: int) -> list:
    """The run's held-out validation needles at its training lengths."""
    from mmlong.samples import read_samples

    folder = run / "needles" / "val"
    samples = []
    for stage in sorted(folder.glob("stage-*")):
        got = read_samples(stage / "mix.parquet")
        if got and got[0].total_tokens <= 512:
            samples += got[:per_length]
    return samples


def heads_proof(model_path: Path, samples: list, out: Path) -> dict:
    from mmlong.eval.heads import ablate, detect, heads_json, heatmap, overlap, write_json
    from mmlong.train.model import ModelSettings, build_model
    from mmlong.train.processor import load_processor

    model = build_model(ModelSettings(path=str(model_path))).eval()
    processor = load_processor(model_path, samples[0].budget)
    det = detect(model, processor, samples, name=str(model_path), progress=False)
    result: dict = {"examples": len(samples)}
    rankings = {}
    for score in ("question", "answer"):
        data = heads_json(det, score, True)
        write_json(data, out / f"heads-{score}.json")
        heatmap(data["scores"], out / f"heads-{score}.png", f"{score} score (calibrated)")
        result[score] = {"rho_0.5": data["rho_0.5"], "top": data["ranking"][:8]}
        rankings[score] = data["ranking"]
    result["overlap_top8"] = overlap(result["question"]["top"], result["answer"]["top"])
    rankings["answer, layer 0 excluded"] = [p for p in rankings["answer"] if p[0] != 0]
    ks = sorted({1, 2, 3, max(1, round(0.1 * len(rankings["question"])))})
    result["ablation"] = {name: ablate(model, processor, samples, ranking, ks, draws=5, seed=0) for name, ranking in rankings.items()}
    return result


def page_documents(run: Path, folder: Path, docs: int, pages: int, seed: int = 0) -> tuple[Path, Path]:
    """Multi-page PDFs of held-out haystack text, each with one needle on a random page, and
    their questions (MMLongBench-Doc format, 1-indexed evidence pages)."""
    import fitz

    from mmlong.synthesis.needles import RULER, _key, _question, NeedleSpec
    from mmlong.train.needle_data import haystack_units

    recipe = json.loads((run / "needles" / "settings.json").read_text())
    units = haystack_units(recipe["heldout"], run / "needles", True, "sentence").units
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    questions = []
    for d in range(docs):
        key, value = _key(rng, set()), str(rng.randint(10**6, 10**7 - 1))
        where = rng.randrange(pages)
        pdf = fitz.open()
        start = rng.randrange(len(units))
        for p in range(pages):
            text, n = [], 0
            while n < 55:
                u = units[(start + len(text)) % len(units)]
                text.append(u.text)
                n += u.tokens
            start += len(text)
            if p == where:
                text.insert(rng.randrange(len(text) + 1), RULER.format(key=key, value=value))
            page = pdf.new_page(width=595, height=842)
            page.insert_textbox(fitz.Rect(50, 50, 545, 800), " ".join(text), fontsize=10)
        name = f"doc{d:03d}.pdf"
        pdf.save(folder / name)
        question, _, _ = _question(NeedleSpec("single", "text", 0.5, 512), [key], [value])
        questions.append({"doc_id": name, "question": question, "answer": value, "answer_format": "Int",
                          "evidence_pages": [where + 1]})
    qfile = folder.parent / "questions.json"
    qfile.write_text(json.dumps(questions, indent=2))
    return folder, qfile


def ranking_proof(run: Path, model_path: Path, heads: Path, out: Path, docs: int, pages: int) -> dict:
    from mmlong.eval.ranking import rank_dataset
    from mmlong.ingest import IngestOptions, ingest
    from mmlong.ingest.pdf import PdfOptions

    pdfs, questions = page_documents(run, out / "pages" / "pdf", docs, pages)
    dataset = out / "pages" / "dataset"
    if not dataset.exists():
        ingest([str(pdfs)], dataset, options=IngestOptions(pdf=PdfOptions(mode="text")), workers=1, progress=False)
    result = {}
    for ranker in ("bm25", "embedding", "heads"):
        r = rank_dataset(str(dataset), str(questions), ranker, str(model_path), str(heads), top_heads=4, content="text")
        result[ranker] = {k: r[k] for k in ("recall@1", "recall@3", "mrr", "questions")}
    return result


def markdown(proofs: dict) -> str:
    lines = ["# The tiny model of train/tiny-cpu.yaml: proofs", "", "## Needles (needle-tiny, held-out), accuracy by length", "",
             "| length | untrained | trained |", "|---|---|---|"]
    before, after = proofs["needles"]["untrained"], proofs["needles"]["trained"]
    for length in after:
        lines.append(f"| {length} | {before.get(length, 0):.3f} | {after[length]:.3f} |")
    s = proofs["serving"]
    lines += ["", f"Served through `mmlong serve`: {s['same_predictions']}/{s['records']} predictions equal to the local "
              f"path (accuracy {s['accuracy_server']:.3f} vs {s['accuracy_local']:.3f}).", "",
              f"## Retrieval heads ({proofs['heads']['examples']} held-out needles)", ""]
    h = proofs["heads"]
    for score in ("question", "answer"):
        lines.append(f"- {score} score: rho_0.5 {h[score]['rho_0.5']:.3f}, top heads {h[score]['top']}")
    lines += [f"- overlap of the two top-8 sets: {h['overlap_top8']:.3f}", "",
              "| ranking | k | baseline | top-k masked | random-k mean | random-k worst | drop top / random |", "|---|---|---|---|---|---|---|"]
    for name, res in h["ablation"].items():
        for row in res["rows"]:
            ratio = row["top_drop"] / row["random_drop"] if row["random_drop"] > 0 else float("inf")
            lines.append(f"| {name} | {row['k']} | {res['baseline']:.3f} | {row['top_accuracy']:.3f} | "
                         f"{row['random_accuracy']:.3f} | {row['random_worst']:.3f} | {ratio:.1f}x |")
    lines += ["", "## Page ranking on generated multi-page documents", "", "| ranker | Recall@1 | Recall@3 | MRR |", "|---|---|---|---|"]
    for ranker, r in proofs["ranking"].items():
        lines.append(f"| {ranker} | {r['recall@1']:.3f} | {r['recall@3']:.3f} | {r['mrr']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/tiny", help="the training run folder (trained there when hf/ is missing)")
    ap.add_argument("--recipe", default=str(ROOT / "train" / "tiny-cpu.yaml"))
    ap.add_argument("--out", help="default: RUN/proofs")
    ap.add_argument("--heads-samples", type=int, default=40, help="held-out needles per training length for the heads")
    ap.add_argument("--docs", type=int, default=40, help="generated documents for page ranking")
    ap.add_argument("--pages", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(2)
    run, recipe = Path(args.run), Path(args.recipe)
    out = Path(args.out) if args.out else run / "proofs"
    out.mkdir(parents=True, exist_ok=True)
    trained = run / "hf"
    if not (trained / "config.json").is_file():
        from mmlong.train.run import train

        train(recipe, run)
    fresh = untrained(recipe, out / "untrained-hf")
    grids = {name: needle_grid(path, out / f"needle-{name}") for name, path in (("untrained", fresh), ("trained", trained))}
    proofs = {"needles": {name: g["summary"]["by_length"] for name, g in grids.items()},
              "serving": served(trained, out / "needle-served", grids["trained"]),
              "heads": heads_proof(trained, heldout_needles(run, args.heads_samples), out)}
    proofs["ranking"] = ranking_proof(run, trained, out / "heads-question.json", out, args.docs, args.pages)
    (out / "proofs.json").write_text(json.dumps(proofs, indent=2))
    text = markdown(proofs)
    (out / "proofs.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
