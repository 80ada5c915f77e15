"""The LightningModule: a transformers VLM trained on packed rows with answer-only, chunked,
token-weighted cross-entropy.

One optimizer step covers `accumulate` micro-batches on every rank. Each micro-batch adds the
gradient of its *summed* token loss; before the step the gradients are divided by the number
of label tokens of the whole step (all micro-batches, all ranks), so a token weighs the same
wherever it sits: packing, accumulation and sharding do not change the loss (averaging per
micro-batch would weigh short answers more). Optimization is manual for this reason.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import torch

from mmlong.train.loss import chunked_cross_entropy, label_positions
from mmlong.train.model import ModelSettings, build_model, decoder, set_rope


@dataclass
class OptimSettings:
    """AdamW with linear warmup and cosine decay (MMProLong: lr 1e-5, 10% warmup, cosine to
    1e-6, weight decay 0.1, betas 0.9/0.95)."""

    lr: float = 1e-5
    min_lr: float = 1e-6
    warmup: float = 0.1
    """Warmup steps: a share of the run (< 1) or a number of steps (>= 1)."""
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0
    """Clip the global gradient norm (0: no clipping)."""
    tokens_per_step: int | None = None
    """Gradient accumulation to this many tokens per optimizer step (all ranks); None: one
    micro-batch per step."""

    def __post_init__(self) -> None:
        if not 0 < self.min_lr <= self.lr:
            raise ValueError(f"optim: need 0 < min_lr <= lr, got {self.min_lr}, {self.lr}")
        if self.warmup < 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("optim: warmup, grad_clip and weight_decay must be >= 0")
        self.betas = tuple(self.betas)


def lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Linear warmup to 1, then cosine to `floor` (min_lr / lr) at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class VLMModule(L.LightningModule):
    """A vision-language model and how it is optimized."""

    def __init__(self, model: ModelSettings, optim: OptimSettings | None = None, loss_chunk: int = 4096,
                 sampled_negatives: int = 0) -> None:
        """`sampled_negatives` > 0 trains with a sampled softmax (the batch's targets and that
        many random tokens, drawn from a stream seeded by the step: resumable); validation and
        evaluation always score over the whole vocabulary."""
        super().__init__()
        self.settings = model
        self.optim = optim or OptimSettings()
        self.loss_chunk = loss_chunk
        self.negatives = sampled_negatives
        self.save_hyperparameters({"model": asdict(model), "optim": asdict(self.optim), "loss_chunk": loss_chunk,
                                   "sampled_negatives": sampled_negatives})
        self.model = build_model(model)
        self.automatic_optimization = False
        self.accumulate = 1
        self._window: dict[str, float] = {}
        self._started = time.perf_counter()

    def forward(self, batch: dict[str, Any]):
        """Last hidden states of a packed batch. Shape: (B, L, D)."""
        kwargs: dict[str, Any] = {}
        for pixels, grid, kind in (("pixel_values", "image_grid_thw", "image"), ("pixel_values_videos", "video_grid_thw", "video")):
            if pixels not in batch:
                continue
            if self.settings.freeze_vision:  # a fixed vision tower runs without a graph
                encode = self.model.model.get_image_features if kind == "image" else self.model.model.get_video_features
                with torch.no_grad():
                    kwargs.setdefault("mm_encoder_outputs", {})[kind] = encode(batch[pixels], batch[grid])
            else:
                kwargs[pixels] = batch[pixels]
            kwargs[grid] = batch[grid]
        out = self.model.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                               mm_token_type_ids=batch["mm_token_type_ids"], attention_mask=None, use_cache=False, **kwargs)
        return out.last_hidden_state

    def loss(self, batch: dict[str, Any], negatives: int = 0, draw: int = 0) -> tuple[torch.Tensor, int, int]:
        """Summed token loss of the batch's labels, their count and how many the argmax gets."""
        generator = torch.Generator().manual_seed(self.settings.seed * 1_000_003 + draw) if negatives else None
        return chunked_cross_entropy(self(batch), batch["labels"], self.model.lm_head, self.loss_chunk, negatives, generator)

    def _keep_rope_fp32(self) -> None:
        """A precision plugin may have cast the whole module (bf16-true): recompute the RoPE
        frequencies in fp32, or angles at 128K positions are off by radians."""
        if decoder(self.model).rotary_emb.inv_freq.dtype != torch.float32:
            set_rope(self.model)

    def on_validation_start(self) -> None:
        self._keep_rope_fp32()

    def on_fit_start(self) -> None:
        self._keep_rope_fp32()
        data = self.trainer.datamodule
        if self.optim.tokens_per_step and data is not None:
            per_micro = data.tokens_per_batch * self.trainer.world_size
            self.accumulate = max(1, math.ceil(self.optim.tokens_per_step / per_micro))
        self._started = time.perf_counter()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        draw = self.global_step * self.accumulate + self._window.get("micro", 0)  # the same negatives after a resume
        loss, n, correct = self.loss(batch, self.negatives, draw)
        self.manual_backward(loss)
        w = self._window
        for key, value in (("loss", float(loss.detach())), ("tokens", n), ("correct", correct),
                           ("real", batch["real_tokens"]), ("capacity", batch["input_ids"].numel())):
            w[key] = w.get(key, 0) + value
        w["micro"] = w.get("micro", 0) + 1
        if w["micro"] % self.accumulate == 0:
            self._step()

    def _step(self) -> None:
        opt, sched = self.optimizers(), self.lr_schedulers()
        w, self._window = self._window, {}
        totals = torch.tensor([w["tokens"], w["loss"], w["correct"], w["real"], w["capacity"]], dtype=torch.float64)
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum") if self.trainer.world_size > 1 else totals
        tokens = max(float(totals[0]), 1.0)
        scale = self.trainer.world_size / tokens  # DDP averages gradients over ranks: undo it, divide by all tokens
        for p in self.model.parameters():
            if p.grad is not None:
                p.grad.mul_(scale)
        norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None],
                                              self.optim.grad_clip if self.optim.grad_clip else float("inf"))
        lr = opt.param_groups[0]["lr"]
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        elapsed = time.perf_counter() - self._started
        self._started = time.perf_counter()
        self.log_dict({"train/loss": float(totals[1]) / tokens, "train/accuracy": float(totals[2]) / tokens,
                       "train/lr": lr, "train/grad_norm": float(norm),
                       "train/tokens_per_s": float(totals[3]) / max(elapsed, 1e-9),
                       "train/packing": float(totals[3]) / max(float(totals[4]), 1.0)},
                      prog_bar=True, on_step=True, on_epoch=False, batch_size=1, rank_zero_only=True)

    def on_validation_epoch_start(self) -> None:
        self._val: dict[int, list[int]] = {}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Teacher-forced exact match per sample (every answer token the argmax: what greedy
        decoding returns) and token accuracy, grouped by the samples' target lengths."""
        hidden = self(batch)
        where, targets = label_positions(batch["labels"])
        with torch.no_grad():
            right = self.model.lm_head(hidden[where[:, 0], where[:, 1]]).argmax(-1) == targets
        owner = batch["segments"][where[:, 0], where[:, 1] + 1]
        for k, length in enumerate(batch["groups"]):
            mine = right[owner == k]
            if len(mine):
                hits = self._val.setdefault(length, [0, 0, 0, 0])
                hits[0] += int(mine.all())
                hits[1] += 1
                hits[2] += int(mine.sum())
                hits[3] += len(mine)

    def on_validation_epoch_end(self) -> None:
        totals = self._val
        if self.trainer.world_size > 1:
            keys = sorted(totals)
            flat = self.trainer.strategy.reduce(torch.tensor([totals[k] for k in keys], dtype=torch.float64), reduce_op="sum")
            totals = {k: [int(x) for x in row] for k, row in zip(keys, flat.tolist())}
        metrics = {}
        for length, (em, n, right, tokens) in sorted(totals.items()):
            metrics[f"val/exact_match@{length}"] = em / n
            metrics[f"val/token_accuracy@{length}"] = right / max(tokens, 1)
        if totals:
            metrics["val/exact_match"] = sum(v[0] for v in totals.values()) / sum(v[1] for v in totals.values())
        self.log_dict(metrics, rank_zero_only=True)

    def configure_optimizers(self):
        decay = [p for n, p in self.model.named_parameters() if p.requires_grad and p.ndim >= 2]
        plain = [p for n, p in self.model.named_parameters() if p.requires_grad and p.ndim < 2]
        o = self.optim
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay}, {"params": plain, "weight_decay": 0.0}],
                                lr=o.lr, betas=o.betas, eps=o.eps, fused=True)  # one kernel over all parameters
        total = self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 else 1000
        warmup = int(o.warmup * total) if o.warmup < 1 else int(o.warmup)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, max(1, warmup), o.min_lr / o.lr))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
