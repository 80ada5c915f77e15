"""`mmlong train --config RECIPE --out DIR`: a Lightning run from a LightningCLI YAML recipe.

The recipe holds `trainer:`, `model:` (VLMModule: model and optimizer settings) and `data:`
(a data module class and its arguments). The run writes, under DIR: Lightning checkpoints
(`checkpoints/`, every `checkpoint_every` steps and `last.ckpt`), per-step metrics
(`logs/` CSV, `tb/` TensorBoard), held-out validation before and after training
(`validation.json`), and the trained model as a Hugging Face folder (`hf/`, its path the
last line printed). Running the same command again resumes from `last.ckpt`, to the exact
batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHECKPOINTS = "checkpoints"


def make_cli(config: str | Path, out: str | Path, overrides: list[str] | None = None, checkpoint_every: int = 50):
    """The LightningCLI of a recipe: trainer, module and data module built, nothing run. A
    bad recipe (unknown key, wrong type, missing file) fails here, before any work."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    import lightning as L
    from mmlong.train.module import VLMModule

    out = Path(out)
    defaults: dict[str, Any] = {
        "default_root_dir": str(out),
        "logger": [CSVLogger(str(out), name="logs"), TensorBoardLogger(str(out), name="tb")],  # a resumed run: version_1, ...
        "callbacks": [ModelCheckpoint(dirpath=str(out / CHECKPOINTS), filename="step-{step}", every_n_train_steps=checkpoint_every,
                                      save_last=True, save_top_k=-1)],
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "use_distributed_sampler": False,  # the data module shards by rank itself (its sampler holds the resume state)
    }
    class RecipeCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument("--description", type=str, default="", help="what the recipe is (ignored)")

    return RecipeCLI(VLMModule, L.LightningDataModule, subclass_mode_data=True, run=False, save_config_callback=None,
                     trainer_defaults=defaults, auto_configure_optimizers=False, load_from_checkpoint_support=False,
                     args=["--config", str(config), *(overrides or [])], parser_kwargs={"exit_on_error": False})


def train(config: str | Path, out: str | Path, overrides: list[str] | None = None, checkpoint_every: int = 50,
          validate: bool = True, threads: int | None = None) -> Path:
    """Run (or resume) the recipe into `out`; returns the Hugging Face folder of the model.
    `threads` fixes torch's CPU threads (default: the cores this process may use): results are
    bit-identical run to run for one thread count, not across counts."""
    import os
    import warnings

    import torch

    from mmlong.train.export import export_hf

    # manual optimization checkpoints after the optimizer step: that is the state to resume from
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")

    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cli = make_cli(config, out, overrides, checkpoint_every)
    trainer, module, data = cli.trainer, cli.model, cli.datamodule
    last = out / CHECKPOINTS / "last.ckpt"
    report_path = out / "validation.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    has_val = validate and callable(getattr(data, "val_dataloader", None)) and getattr(data, "validates", False)
    if has_val and "before" not in report:
        report["before"] = _metrics(trainer.validate(module, datamodule=data, verbose=False))
        report_path.write_text(json.dumps(report, indent=2))
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if last.is_file() else None)
    if has_val:
        report["after"] = _metrics(trainer.validate(module, datamodule=data, verbose=False))
        report["steps"] = trainer.global_step
        report_path.write_text(json.dumps(report, indent=2))
    info = {"recipe": str(config), "overrides": overrides or [], "steps": trainer.global_step,
            "model": module.hparams.get("model"), "optim": module.hparams.get("optim"),
            "budget": vars(data.budget) if getattr(data, "budget", None) else None, "validation": report or None}
    return export_hf(module.model, data.processor, out / "hf", info)


def _metrics(results: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(float(v), 4) for r in results for k, v in r.items()}
