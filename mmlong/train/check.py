"""`mmlong train check`: packed training computes what each sample alone computes.

For windows of a user's own data and model: the logits of every packed sample equal its
logits alone (at every position), and the packed row's token-weighted loss equals the
token-weighted loss of the samples alone. Prints the largest differences and fails above a
tolerance: the check for the packing bugs (1-D positions, a cache, samples attending across a
boundary) that shipped in several trainers.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmlong.samples import Sample
from mmlong.train.collate import encode, pack_row
from mmlong.train.loss import chunked_cross_entropy
from mmlong.train.positions import sample_positions


@dataclass
class CheckResult:
    windows: int
    samples: int
    tokens: int
    max_logit_diff: float
    loss_packed: float
    loss_alone: float

    @property
    def loss_diff(self) -> float:
        return abs(self.loss_packed - self.loss_alone)

    def ok(self, tolerance: float) -> bool:
        return self.max_logit_diff <= tolerance and self.loss_diff <= tolerance


def _hidden(model, row: dict, positions):
    import torch

    with torch.no_grad():
        return model.model(input_ids=row["input_ids"][None], position_ids=positions[:, None],
                           mm_token_type_ids=row["mm_token_type_ids"][None], pixel_values=row.get("pixel_values"),
                           image_grid_thw=row.get("image_grid_thw"), attention_mask=None, use_cache=False).last_hidden_state[0]


def check_packing(model, processor, windows: list[list[Sample]], chunk: int = 1024, spatial_merge_size: int = 2,
                  tokens_per_second: float = 2) -> CheckResult:
    """Compare packed rows with their samples alone, logits at every position (`chunk` rows of
    the LM head at a time, so long windows fit in memory)."""
    import torch

    worst, tokens, samples = 0.0, 0, 0
    packed_loss = alone_loss = 0.0
    packed_n = alone_n = 0
    for window in windows:
        encoded = [encode(s, processor) for s in window]
        row = pack_row(encoded, spatial_merge_size, tokens_per_second)
        packed = _hidden(model, row, row["position_ids"])
        with torch.no_grad():
            loss, n, _ = chunked_cross_entropy(packed[None], row["labels"][None], model.lm_head)
        packed_loss, packed_n = packed_loss + float(loss), packed_n + n
        start = 0
        for e in encoded:
            size = len(e["input_ids"])
            alone = _hidden(model, e, sample_positions(e, spatial_merge_size, tokens_per_second))
            labels = e["labels"].clone()
            labels[0] = -100  # as packed: the first token is never predicted
            with torch.no_grad():
                loss, n, _ = chunked_cross_entropy(alone[None], labels[None], model.lm_head)
            alone_loss, alone_n = alone_loss + float(loss), alone_n + n
            for i in range(0, size, chunk):
                with torch.no_grad():
                    a = model.lm_head(alone[i : i + chunk]).float()
                    b = model.lm_head(packed[start + i : start + min(size, i + chunk)]).float()
                worst = max(worst, float((a - b).abs().max()))
            start += size
            tokens += size
            samples += 1
    return CheckResult(len(windows), samples, tokens, worst, packed_loss / max(packed_n, 1), alone_loss / max(alone_n, 1))
