"""Memory and time of retrieval-head detection against the `output_attentions` (eager) path.

    python benchmarks/head_scoring.py [--lengths 4096 8192 16384 32768] [--long 131072]

On the same tiny Qwen2.5-VL and the same text-needle sample at each length, each in a fresh
process: peak RSS and wall time of `mmlong.eval.heads.head_scores` (one haystack pass, two
question passes on its cache, rows recomputed in chunks of keys) and of an eager forward with
`output_attentions=True` (the (n x n) attention of every layer). Prints the table (target: at
32K, detection takes <= 1/20 of the eager path's memory) and then scores one 128K sample with
detection alone (the eager path cannot).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUN = """
import random, resource, sys, time, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(2)
from selectolax.lexbor import LexborHTMLParser
from mmlong import tokens as tk
from mmlong.schema import TEXT, Document, Item
from mmlong.synthesis.needles import Haystack, NeedleSpec, needle_sample, pool
from mmlong.train.model import ModelSettings, build_model, tiny_config
from mmlong.train.processor import build_processor
mode, n = sys.argv[1], int(sys.argv[2])
html = open({html!r}, encoding="utf-8").read()
lines = [t.strip() for t in LexborHTMLParser(html).body.text(separator="\\n").split("\\n") if len(t.strip()) > 40]
hay = Haystack(pool([Document("d", "s", "html", "", items=[Item(TEXT, text=t, tokens=tk.text_tokens(t)) for t in lines])]))
sample, _ = needle_sample(hay, NeedleSpec("single", "text", 0.5, n), random.Random(0), "")
model = build_model(ModelSettings(config=tiny_config(hidden_size=128, layers=4, heads=8, kv_heads=4, intermediate_size=512,
                                                     max_position_embeddings=262144),
                                  attn_implementation="sdpa" if mode == "heads" else "eager")).eval()
proc = build_processor()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if mode == "heads":
    from mmlong.eval.heads import head_scores, needle_evidence
    head_scores(model, proc, sample, needle_evidence(sample))
else:
    from mmlong.train.collate import encode
    from mmlong.train.positions import sample_positions
    enc = encode(sample, proc)
    with torch.no_grad():
        model.model(input_ids=enc["input_ids"][None], position_ids=sample_positions(enc)[:, None],
                    mm_token_type_ids=enc["mm_token_type_ids"][None], attention_mask=None, use_cache=False,
                    output_attentions=True)
print(time.perf_counter() - start, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""


def run(mode: str, n: int) -> tuple[float, float] | None:
    code = RUN.format(root=str(ROOT), html=str(ROOT / "examples" / "debian-handbook" / "sect.apt-get.html"))
    done = subprocess.run([sys.executable, "-c", code, mode, str(n)], capture_output=True, text=True)
    if done.returncode:
        return None  # out of memory (killed) or failed
    seconds, mb = done.stdout.split()[-2:]
    return float(seconds), float(mb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384, 32768])
    parser.add_argument("--long", type=int, default=131072, help="a length scored by detection alone (0: skip)")
    args = parser.parse_args()
    print(f"{'tokens':>8}  {'detect s':>9}  {'detect MB':>10}  {'eager s':>8}  {'eager MB':>9}  {'memory ratio':>12}")
    for n in args.lengths:
        h, e = run("heads", n), run("eager", n)
        ratio = f"{h[1] / e[1]:.3f}" if h and e and e[1] > 0 else "-"
        print(f"{n:>8}  {h[0] if h else float('nan'):>9.1f}  {h[1] if h else float('nan'):>10.0f}  "
              f"{e[0] if e else float('nan'):>8.1f}  {e[1] if e else float('nan'):>9.0f}  {ratio:>12}")
    print("target: at 32K the detection memory ratio <= 0.05")
    if args.long:
        h = run("heads", args.long)
        print(f"{args.long} tokens by detection: " + (f"{h[0]:.1f} s, {h[1]:.0f} MB above the loaded model" if h else "failed"))


if __name__ == "__main__":
    main()
