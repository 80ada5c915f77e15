"""Training-step speed and memory of the tiny Qwen2.5-VL on CPU, printed as a table.

    python benchmarks/train_step.py [--steps 6] [--threads 2]

1. Packed vs padded batches holding the same real tokens (needle samples of 128-1024 tokens):
   tokens/s of forward, chunked loss, backward and AdamW (target: packed >= 1.5x padded), both
   through the training default attention `sdpa_packed` (each sample attends alone), and
   packed through transformers' masked `sdpa` (attention over the whole window) beside them.
2. mmlong's Lightning step (VLMModule, manual token-weighted accumulation) vs a plain PyTorch
   loop (forward, chunked loss, backward, AdamW) on the same model and batches: the framework's
   overhead (target >= 0.95x).
3. Peak memory of one training step at 4K, 8K, 16K and 32K tokens with activation
   checkpointing and the chunked loss, each in a fresh process: the peak RSS above the RSS of
   the loaded model (Linux: the peak is reset before the step), target 32K/4K <= 9x (linear).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = dict(hidden_size=128, layers=4, heads=8, kv_heads=4, intermediate_size=512)


def needle_samples(n: int, lengths: list[int], seed: int = 0):
    from selectolax.lexbor import LexborHTMLParser

    from mmlong import tokens as tk
    from mmlong.schema import TEXT, Document, Item
    from mmlong.synthesis.needles import Haystack, NeedleSpec, needle_sample, pool

    html = (ROOT / "examples" / "debian-handbook" / "sect.apt-get.html").read_text(encoding="utf-8")
    lines = [t.strip() for t in LexborHTMLParser(html).body.text(separator="\n").split("\n") if len(t.strip()) > 40]
    hay = Haystack(pool([Document("d", "s", "html", "", items=[Item(TEXT, text=t, tokens=tk.text_tokens(t)) for t in lines])],
                        strip_digits=True))
    rng = random.Random(seed)
    return [needle_sample(hay, NeedleSpec("single", "text", rng.random(), rng.choice(lengths)), rng, "")[0] for _ in range(n)]


def model_and_batches(window: int, packed: bool, samples, attn: str = "sdpa_packed"):
    from mmlong.mixtures.packing import pack
    from mmlong.train.collate import Collator
    from mmlong.train.model import ModelSettings, build_model, tiny_config
    from mmlong.train.processor import build_processor

    model = build_model(ModelSettings(config=tiny_config(**MODEL), attn_implementation=attn))
    collate = Collator(build_processor())
    by_id = {s.sample_id + str(i): s for i, s in enumerate(samples)}
    if packed:
        windows = [[by_id[i] for i, _ in w] for w in pack([(k, s.total_tokens) for k, s in by_id.items()], window).windows]
        batches = [collate(windows[i : i + 2]) for i in range(0, len(windows), 2)]
    else:  # one sample a row, rows padded to the longest in the batch
        ordered = list(by_id.values())
        per = max(1, 2 * window // max(s.total_tokens for s in ordered))
        batches = [collate([[s] for s in ordered[i : i + per]]) for i in range(0, len(ordered), per)]
    return model, batches


def plain_loop(model, batches, steps: int) -> float:
    """Tokens/s of a bare PyTorch loop: forward, chunked loss, backward, AdamW."""
    import torch

    from mmlong.train.loss import chunked_cross_entropy

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    tokens, start = 0, None
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()  # the first step warms up
        b = batches[i % len(batches)]
        hidden = model.model(input_ids=b["input_ids"], position_ids=b["position_ids"], mm_token_type_ids=b["mm_token_type_ids"],
                             attention_mask=None, use_cache=False).last_hidden_state
        loss, n, _ = chunked_cross_entropy(hidden, b["labels"], model.lm_head)
        (loss / max(n, 1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            tokens += b["real_tokens"]
    return tokens / (time.perf_counter() - start)


def lightning_loop(batches, steps: int) -> float:
    """Tokens/s of mmlong's VLMModule under a Lightning Trainer on the same batches."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from mmlong.train.model import ModelSettings, tiny_config
    from mmlong.train.module import OptimSettings, VLMModule

    class Timer(L.Callback):
        def __init__(self):
            self.t, self.tokens = [], 0

        def on_train_batch_start(self, trainer, module, batch, idx):
            if idx == 1:
                self.start = time.perf_counter()
            if idx >= 1:
                self.tokens += batch["real_tokens"]

        def on_train_end(self, trainer, module):
            self.elapsed = time.perf_counter() - self.start

    module = VLMModule(ModelSettings(config=tiny_config(**MODEL)), OptimSettings(lr=1e-3, min_lr=1e-4, warmup=1, grad_clip=0))
    loader = DataLoader([batches[i % len(batches)] for i in range(steps + 1)], batch_size=None)
    timer = Timer()
    trainer = L.Trainer(max_steps=steps + 1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    torch.manual_seed(0)
    trainer.fit(module, train_dataloaders=loader)
    return timer.tokens / timer.elapsed


PEAK = """
import sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads({threads})
from mmlong.train.model import ModelSettings, build_model, tiny_config
from mmlong.train.loss import chunked_cross_entropy
n = int(sys.argv[1])
model = build_model(ModelSettings(config=tiny_config(**{model}), gradient_checkpointing=True))
ids = torch.randint(0, 150000, (1, n))
labels = torch.full((1, n), -100); labels[0, -64:] = ids[0, -64:]
pos = torch.arange(n).expand(4, 1, n)
def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))
open("/proc/self/clear_refs", "w").write("5")  # the peak so far (model building) is forgotten
before = status("VmRSS:")
hidden = model.model(input_ids=ids, position_ids=pos, mm_token_type_ids=torch.zeros_like(ids), attention_mask=None,
                     use_cache=False).last_hidden_state
loss, count, _ = chunked_cross_entropy(hidden, labels, model.lm_head)
loss.backward()
print(status("VmHWM:") - before)
"""


def peak_mb(tokens: int, threads: int) -> float:
    code = PEAK.format(root=str(ROOT), threads=threads, model=MODEL)
    done = subprocess.run([sys.executable, "-c", code, str(tokens)], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return int(done.stdout.split()[-1]) / 1024


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--window", type=int, default=2048)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    samples = needle_samples(96, [128, 256, 512, 1024])
    rows = []
    model, packed = model_and_batches(args.window, True, samples)
    packed_tps = plain_loop(model, packed, args.steps)
    model, padded = model_and_batches(args.window, False, samples)
    padded_tps = plain_loop(model, padded, args.steps)
    rows.append(("packed vs padded batches (tokens/s)", f"{packed_tps:,.0f}", f"{padded_tps:,.0f}", packed_tps / padded_tps, ">= 1.5"))
    model, masked = model_and_batches(args.window, True, samples, attn="sdpa")
    masked_tps = plain_loop(model, masked, args.steps)
    rows.append(("packed: sdpa_packed vs masked sdpa (tokens/s)", f"{packed_tps:,.0f}", f"{masked_tps:,.0f}",
                 packed_tps / masked_tps, ""))
    model, packed = model_and_batches(args.window, True, samples)
    plain = plain_loop(model, packed, args.steps)
    lightning = lightning_loop(packed, args.steps)
    rows.append(("Lightning step vs plain loop (tokens/s)", f"{lightning:,.0f}", f"{plain:,.0f}", lightning / plain, ">= 0.95"))
    peaks = {n: peak_mb(n, args.threads) for n in (4096, 8192, 16384, 32768)}
    for n, mb in peaks.items():
        rows.append((f"step peak RSS at {n // 1024}K tokens (MB)", f"{mb:,.0f}", f"{peaks[4096]:,.0f}", mb / peaks[4096],
                     "<= 9 at 32K" if n == 32768 else ""))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'mmlong':>12}  {'baseline':>12}  {'ratio':>7}  target")
    for name, a, b, ratio, target in rows:
        print(f"{name.ljust(width)}  {a:>12}  {b:>12}  {ratio:>7.2f}  {target}")
    print(json.dumps({"threads": args.threads, "steps": args.steps, "window": args.window}))


if __name__ == "__main__":
    main()
