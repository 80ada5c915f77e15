"""Multimodal retrieval heads: which attention heads look from the question (or from the
positions that predict the answer) at the evidence, measured on samples whose evidence spans
are known (text tokens, or an image's / page's / frame's vision tokens, vision_start..vision_end).

Detection runs the haystack once and keeps its key/value cache; the question (and answer)
tokens then run twice on copies of that cache, once as they are and once with the question
replaced by "N/A" (the null pass: only the question rows change). Each layer's post-RoPE
queries and keys are captured in those passes (an attention function registered with
transformers' AttentionInterface, so M-RoPE and GQA are the model's own), and only the rows of
interest are recomputed, chunked over keys: memory O(rows x chunk), never the (n x n) matrix,
never `output_attentions`.

Scores per (layer, head) and example: `question` = mean over question tokens of the
post-softmax attention mass on the evidence; `answer` = the same from the positions that
predict the answer tokens (teacher-forced). Each has its null-pass value; calibrated =
score - null.
"""

from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mmlong.samples import Sample, Span, layout

CAPTURE = "mmlong_capture"
NULL_QUESTION = "N/A"
SCORES = ("question", "answer")
_STORE: dict[int, tuple[Any, Any, float]] | None = None


def _capture(module, query, key, value, attention_mask, **kwargs):
    """sdpa attention that also keeps each text layer's post-RoPE queries and keys (keys before
    the GQA repeat, with the cached prefix)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if _STORE is not None and getattr(module, "layer_idx", None) is not None and hasattr(module, "o_proj"):
        _STORE[module.layer_idx] = (query.detach(), key.detach(), float(module.scaling))
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(CAPTURE, _capture)
    AttentionMaskInterface.register(CAPTURE, sdpa_mask)  # else the function gets no mask at all


@contextlib.contextmanager
def capturing(model):
    """Within: every text attention layer's (query, key, scaling) of the last forward pass,
    keyed by layer. The text decoder runs through sdpa meanwhile."""
    global _STORE
    from mmlong.train.model import text_config

    _register()
    config = text_config(model)
    before = config._attn_implementation
    config._attn_implementation = CAPTURE
    _STORE = {}
    try:
        yield _STORE
    finally:
        _STORE = None
        config._attn_implementation = before


def evidence_mass(query, key, scaling: float, rows, evidence, chunk: int = 4096):
    """Post-softmax attention mass that query rows put on the evidence keys, computed in chunks
    of keys with a running log-sum-exp. Shapes: query (H, R, D) for rows at absolute positions
    `rows` (R,); key (Hkv, L, D); evidence (L,) bool -> (H, R)."""
    import torch

    heads, groups = query.shape[0], query.shape[0] // key.shape[0]
    q = query.float()
    total = torch.full((heads, len(rows)), float("-inf"))
    on = torch.full((heads, len(rows)), float("-inf"))
    rows = torch.as_tensor(rows)
    for c in range(0, key.shape[1], chunk):
        k = key[:, c : c + chunk].float().repeat_interleave(groups, dim=0)  # (H, C, D)
        logits = torch.einsum("hrd,hcd->hrc", q, k) * scaling
        cols = torch.arange(c, c + k.shape[1])
        logits = logits.masked_fill(cols[None, None] > rows[None, :, None], float("-inf"))  # causal
        total = torch.logaddexp(total, torch.logsumexp(logits, -1))
        ev = evidence[c : c + k.shape[1]]
        if ev.any():
            on = torch.logaddexp(on, torch.logsumexp(logits[:, :, ev], -1))
    return torch.exp(on - total)


def null_sample(sample: Sample, question: str = NULL_QUESTION) -> Sample:
    """`sample` with its question replaced (the last element of the user turn)."""
    messages = copy.deepcopy(sample.messages)
    user = next(m for m in messages if m["role"] == "user")
    user["content"][-1]["text"] = question
    null = replace(sample, messages=messages, question=question)
    lay = layout(null)
    null.total_tokens, null.answer_start, null.answer_end = lay.length, lay.answer.start, lay.answer.end
    return null


def _rows(lay, which: str) -> list[int]:
    if which == "question":
        return list(range(lay.question.start, lay.question.end))
    return list(range(lay.answer.start - 1, lay.answer.end - 1))  # the positions that predict answer tokens


def _forward(model, enc, positions, start: int, stop: int, cache=None):
    import torch

    from mmlong.train.collate import vision_kwargs

    kwargs = vision_kwargs(enc) if start == 0 else {}
    with torch.no_grad():
        out = model.model(input_ids=enc["input_ids"][None, start:stop], position_ids=positions[:, None, start:stop],
                          mm_token_type_ids=enc["mm_token_type_ids"][None, start:stop], attention_mask=None,
                          use_cache=True, cache=cache, **kwargs)
    return out.cache if hasattr(out, "cache") else out.past_key_values


def span_mask(length: int, spans: list[Span]):
    import torch

    mask = torch.zeros(length, dtype=torch.bool)
    for s in spans:
        mask[s.start : s.end] = True
    return mask


def capture(model, processor, sample: Sample, null: str = NULL_QUESTION) -> dict[str, Any]:
    """The rows detection needs, from one haystack pass and two question passes: for the
    sample ("") and its null version ("_null"), per score (question / answer), per layer the
    rows' queries (H, R, D), all keys (Hkv, L, D), the attention scaling and the rows'
    absolute positions."""
    import torch

    from mmlong.train.collate import encode
    from mmlong.train.model import text_config
    from mmlong.train.positions import sample_positions

    cfg = getattr(model.config, "vision_config", None)
    merge, tps = getattr(cfg, "spatial_merge_size", 2), getattr(cfg, "tokens_per_second", 2)
    variants = {"": sample, "_null": null_sample(sample, null)}
    encoded = {k: encode(s, processor) for k, s in variants.items()}
    lays = {k: layout(s) for k, s in variants.items()}
    prefix = lays[""].question.start
    same_prefix = torch.equal(encoded[""]["input_ids"][:prefix], encoded["_null"]["input_ids"][:prefix])
    out: dict[str, Any] = {"length": len(encoded[""]["input_ids"])}
    cache = None
    for key, enc in encoded.items():
        positions = sample_positions(enc, merge, tps)
        if cache is None or not same_prefix:  # the haystack runs once: the null pass reuses its keys and values
            cache = _forward(model, enc, positions, 0, prefix)
        with capturing(model) as store:
            _forward(model, enc, positions, prefix, len(enc["input_ids"]), copy.deepcopy(cache))
        for which in SCORES:
            rows = _rows(lays[key], which)
            out[which + key] = [(store[layer][0][0, :, [r - prefix for r in rows]], store[layer][1][0], store[layer][2], rows)
                                for layer in range(text_config(model).num_hidden_layers)]
    return out


def masses(captured: dict[str, Any], evidence: list[Span], chunk: int = 4096) -> dict[str, Any]:
    """Attention mass on `evidence` per (layer, head), averaged over each score's rows, for
    every entry of `capture`. Shapes: (layers, heads)."""
    import torch

    mask = span_mask(captured["length"], evidence)
    out = {}
    for key, layers in captured.items():
        if key == "length":
            continue
        out[key] = torch.stack([evidence_mass(q, k, scaling, rows, mask[: k.shape[1]], chunk).mean(dim=1)
                                for q, k, scaling, rows in layers])
    return out


def head_scores(model, processor, sample: Sample, evidence: list[Span], chunk: int = 4096,
                null: str = NULL_QUESTION) -> dict[str, Any]:
    """Raw and null scores of every (layer, head) on one sample, for both scores:
    {"question", "question_null", "answer", "answer_null"} -> (layers, heads) tensors.
    `evidence` are spans of the sample's layout."""
    return masses(capture(model, processor, sample, null), evidence, chunk)


def needle_evidence(sample: Sample) -> list[Span]:
    """Evidence of a needle sample: its needles' spans."""
    return layout(sample).needles()


def page_evidence(sample: Sample, pages: list[int]) -> list[Span]:
    """Evidence of a document question: the image spans (else all spans) of its 0-based pages,
    page markers left out."""
    spans = [s for s in layout(sample).items if s.page in pages and not s.marker]
    images = [s for s in spans if s.kind != "text"]
    return images or spans


@dataclass
class Detection:
    """Head scores aggregated over examples."""

    model: str
    scores: dict[str, Any]
    """Mean raw and null score tensors (layers, heads), keys as `head_scores` returns."""
    examples: int
    groups: dict[str, int]

    def calibrated(self, which: str = "question", calibrate: bool = True):
        return self.scores[which] - self.scores[which + "_null"] if calibrate else self.scores[which]

    def ranking(self, which: str = "question", calibrate: bool = True, exclude_layers: tuple[int, ...] = ()) -> list[list[int]]:
        """[layer, head] pairs, best first."""
        s = self.calibrated(which, calibrate)
        pairs = [(float(s[l, h]), l, h) for l in range(s.shape[0]) for h in range(s.shape[1]) if l not in exclude_layers]
        return [[l, h] for _, l, h in sorted(pairs, key=lambda x: (-x[0], x[1], x[2]))]


def detect(model, processor, samples: list[Sample], evidence_of=needle_evidence, name: str = "", chunk: int = 4096,
           progress: bool = False) -> Detection:
    """Head scores averaged over `samples` (`evidence_of(sample)` gives each one's spans)."""
    from rich.progress import track

    if not samples:
        raise ValueError("head detection needs samples")
    sums: dict[str, Any] = {}
    groups: dict[str, int] = {}
    for s in track(samples, description="heads", disable=not progress, transient=True):
        one = head_scores(model, processor, s, evidence_of(s), chunk)
        for k, v in one.items():
            sums[k] = sums.get(k, 0) + v
        group = s.extra.get("modality", "text")
        groups[group] = groups.get(group, 0) + 1
    return Detection(name, {k: v / len(samples) for k, v in sums.items()}, len(samples), groups)


def rho(scores) -> float:
    """Sparsity rho_0.5: the fewest heads whose scores reach half the positive score mass, as a
    share of all heads."""
    flat = sorted((float(x) for x in scores.flatten()), reverse=True)
    positive = sum(x for x in flat if x > 0)
    if positive <= 0:
        return 1.0
    total = 0.0
    for k, x in enumerate(flat, 1):
        total += max(x, 0)
        if total >= positive / 2:
            return k / len(flat)
    return 1.0


def select(ranking: list[list[int]], top: int | None = None, share: float | None = None,
           exclude_layers: tuple[int, ...] = ()) -> list[list[int]]:
    """The first `top` heads (or the top `share` of all, rounded up) not in `exclude_layers`."""
    import math

    kept = [p for p in ranking if p[0] not in exclude_layers]
    n = top if top is not None else math.ceil((share or 0.05) * len(ranking))
    return kept[:n]


def overlap(a: list[list[int]], b: list[list[int]]) -> float:
    """Jaccard overlap of two head sets."""
    sa, sb = {tuple(x) for x in a}, {tuple(x) for x in b}
    return len(sa & sb) / max(len(sa | sb), 1)


def heads_json(det: Detection, score: str = "question", calibrate: bool = True, top_share: float = 0.05) -> dict[str, Any]:
    """The detection as JSON another tool reads without mmlong: model, num_layers, num_heads,
    examples, score, scores (per layer, one float per head), ranking ([layer, head], best
    first) and rho_0.5, with both scores' rankings and their overlap beside."""
    chosen = det.calibrated(score, calibrate)
    other = "answer" if score == "question" else "question"
    rank, rank_other = det.ranking(score, calibrate), det.ranking(other, calibrate)
    k = max(1, int(round(top_share * len(rank))))
    return {
        "model": det.model, "num_layers": int(chosen.shape[0]), "num_heads": int(chosen.shape[1]),
        "examples": det.examples, "groups": det.groups, "score": score, "calibrated": calibrate,
        "scores": [[round(float(x), 6) for x in row] for row in chosen], "ranking": rank, "rho_0.5": rho(chosen),
        "other": {"score": other, "scores": [[round(float(x), 6) for x in row] for row in det.calibrated(other, calibrate)],
                  "ranking": rank_other, "rho_0.5": rho(det.calibrated(other, calibrate))},
        "raw": {k2: [[round(float(x), 6) for x in row] for row in v] for k2, v in det.scores.items()},
        f"overlap_top{k}": overlap(rank[:k], rank_other[:k]),
    }


def heatmap(scores: list[list[float]], path: str | Path, title: str) -> Path:
    """A layer x head heatmap PNG of `scores`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.5 + 0.45 * len(scores[0]), 1.2 + 0.4 * len(scores)), dpi=110)
    im = ax.imshow(scores, cmap="viridis", aspect="auto")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


@contextlib.contextmanager
def masked(model, heads: list[list[int]]):
    """Within: the chosen (layer, head) pairs' attention outputs zeroed before `o_proj`, in every
    forward pass (prefill and decode) and for every attention backend."""
    from mmlong.train.model import decoder

    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(int(layer), []).append(int(head))
    hooks = []
    for layer, chosen in by_layer.items():
        attn = decoder(model).layers[layer].self_attn

        def zero(module, args, chosen=chosen, dim=attn.head_dim):
            x = args[0].clone()
            x.view(*x.shape[:-1], -1, dim)[..., chosen, :] = 0
            return (x, *args[1:])

        hooks.append(attn.o_proj.register_forward_pre_hook(zero))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def exact_match(model, processor, samples: list[Sample], batch_rows: int = 8) -> float:
    """Share of samples whose every answer token is the argmax (teacher-forced: what greedy
    decoding returns), from packed batches."""
    import torch

    from mmlong.train.collate import Collator, vision_kwargs
    from mmlong.train.loss import label_positions

    collate = Collator(processor)
    hits = 0
    for i in range(0, len(samples), batch_rows):
        batch = collate([[s] for s in samples[i : i + batch_rows]])
        with torch.no_grad():
            hidden = model.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                                 mm_token_type_ids=batch["mm_token_type_ids"], attention_mask=None, use_cache=False,
                                 **vision_kwargs(batch)).last_hidden_state
            where, targets = label_positions(batch["labels"])
            right = model.lm_head(hidden[where[:, 0], where[:, 1]]).argmax(-1) == targets
        owner = batch["segments"][where[:, 0], where[:, 1] + 1]
        hits += sum(int(right[owner == k].all()) for k in range(len(batch["groups"])))
    return hits / max(len(samples), 1)


def ablate(model, processor, samples: list[Sample], ranking: list[list[int]], ks: list[int], draws: int = 5,
           seed: int = 0) -> dict[str, Any]:
    """Exact match with the top-k heads masked against k random heads (`draws` draws from the
    heads outside the top-k), for every k; the unmasked accuracy beside."""
    import random

    base = exact_match(model, processor, samples)
    rows = []
    for k in ks:
        top = ranking[:k]
        with masked(model, top):
            top_acc = exact_match(model, processor, samples)
        pool = ranking[k:]
        rng = random.Random(f"{seed}:{k}")
        randoms = []
        for _ in range(draws):
            pick = rng.sample(pool, min(k, len(pool)))
            with masked(model, pick):
                randoms.append(exact_match(model, processor, samples))
        rows.append({"k": k, "top": top, "top_accuracy": top_acc, "random_accuracy": sum(randoms) / len(randoms),
                     "random_worst": min(randoms), "random_draws": randoms,
                     "top_drop": base - top_acc, "random_drop": base - sum(randoms) / len(randoms)})
    return {"baseline": base, "samples": len(samples), "draws": draws, "rows": rows}


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path
