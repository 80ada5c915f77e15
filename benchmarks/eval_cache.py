"""A cached evaluation re-run against the first run, on the same task and model.

    python benchmarks/eval_cache.py [--model HF_FOLDER] [--per-cell 4]

Runs the needle-tiny task (held-out handbook text) on a model folder (default: a tiny
Qwen2.5-VL built here), then runs it again into a new folder with the first run's response
cache: the second run sends nothing to the model. Prints both wall times and their ratio
(target: the cached re-run >= 20x faster).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a Hugging Face model folder (default: a tiny model built here)")
    parser.add_argument("--per-cell", type=int, default=4)
    args = parser.parse_args()

    from mmlong.eval.models import LocalModel
    from mmlong.eval.run import evaluate, load_recipe
    from mmlong.eval.tasks import needle_items, parse_task

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = args.model
        if folder is None:
            from mmlong.train.export import export_hf
            from mmlong.train.model import ModelSettings, build_model, tiny_config
            from mmlong.train.processor import build_processor

            folder = export_hf(build_model(ModelSettings(config=tiny_config(hidden_size=128, layers=4, heads=8, kv_heads=4,
                                                                            intermediate_size=512))),
                               build_processor(), tmp / "model")
        model = LocalModel(str(folder))
        overrides = {"needles.per_cell": args.per_cell, "needles.haystack": [
            str(ROOT / "examples" / "debian-handbook" / "sect.network-config.html"),
            str(ROOT / "examples" / "debian-handbook" / "sect.http-web-server.html")]}
        _, settings, common = parse_task(load_recipe("needle-tiny", overrides))
        needle_items(settings, common, tmp / "shared")  # ingest the haystack once, outside the timings
        start = time.perf_counter()
        first = evaluate("needle-tiny", model, tmp / "first", overrides, progress=False, cache=tmp / "shared")
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        cached = evaluate("needle-tiny", model, tmp / "again", overrides, progress=False, cache=tmp / "shared")
        cached_s = time.perf_counter() - start
        assert [r["response"] for r in cached["records"]] == [r["response"] for r in first["records"]]
        print(f"{'run':<28}{'items':>7}{'seconds':>10}{'model calls':>13}")
        print(f"{'first (model generates)':<28}{len(first['records']):>7}{first_s:>10.2f}{first['cache']['misses']:>13}")
        print(f"{'re-run (response cache)':<28}{len(cached['records']):>7}{cached_s:>10.2f}{cached['cache']['misses']:>13}")
        print(f"speed-up {first_s / cached_s:.1f}x (target >= 20x)")


if __name__ == "__main__":
    main()
