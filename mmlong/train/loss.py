"""Cross-entropy from hidden states, in chunks: the LM head runs only on the positions that
predict a labelled token, a chunk of rows at a time under activation checkpointing, so a
128K-token row never materialises 128K x vocab logits (forward or backward).

Optionally a sampled softmax for small models over a large vocabulary: the loss over the
batch's target tokens and `negatives` random other tokens instead of the whole vocabulary (a
tiny model's LM head over 152K tokens costs more than its layers); evaluation always uses the
whole vocabulary."""

from __future__ import annotations

IGNORE = -100


def label_positions(labels):
    """Positions whose next token carries a label, and those next tokens.
    Shape: labels (B, L) -> (N, 2) index pairs (b, t), (N,) targets."""
    import torch

    nxt = labels[:, 1:]
    where = (nxt != IGNORE).nonzero()
    return where, nxt[where[:, 0], where[:, 1]].to(torch.long)


def chunked_cross_entropy(hidden, labels, lm_head, chunk: int = 4096, negatives: int = 0, generator=None):
    """Summed cross-entropy of the labelled tokens, their count, and how many the argmax gets
    right (over the candidates when sampling). Shape: hidden (B, L, D), labels (B, L); token
    t+1 is predicted from position t. `negatives` > 0: a sampled softmax over the targets and
    that many tokens drawn uniformly with `generator`."""
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    where, targets = label_positions(labels)
    h = hidden[where[:, 0], where[:, 1]]
    total = hidden.new_zeros((), dtype=torch.float32)
    correct = 0
    head = lm_head
    if negatives:
        vocab = lm_head.weight.shape[0]
        drawn = torch.randint(0, vocab, (negatives,), generator=generator)
        candidates = torch.unique(torch.cat([targets, drawn]))
        targets = torch.searchsorted(candidates, targets)
        weight, bias = lm_head.weight[candidates], None if lm_head.bias is None else lm_head.bias[candidates]
        head = lambda x: F.linear(x, weight, bias)  # noqa: E731

    def piece(x, y):
        logits = head(x).float()
        return F.cross_entropy(logits, y, reduction="sum"), (logits.argmax(-1) == y).sum()

    for i in range(0, len(targets), chunk):
        x, y = h[i : i + chunk], targets[i : i + chunk]
        if torch.is_grad_enabled() and x.requires_grad:
            loss, right = checkpoint(piece, x, y, use_reentrant=False)
        else:
            loss, right = piece(x, y)
        total = total + loss
        correct += int(right)
    return total, len(targets), correct
