"""The `mmlong train` commands: a Lightning run from a recipe, and the packing check."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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


def add_train_commands(sub) -> None:
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
    p.add_argument("--attn", default="sdpa_packed",
                   help="check: attention implementation (sdpa_packed, sdpa, eager, flash_attention_2)")
    p.set_defaults(func=cmd_train)
