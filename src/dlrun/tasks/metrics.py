"""Sequence metrics on token-id tensors."""

from __future__ import annotations

import torch


def align(pred: torch.Tensor, target: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Pad or cut predictions (N, P) to the target's length (N, T)."""
    n, t = target.shape
    if pred.shape[1] >= t:
        return pred[:, :t]
    fill = pred.new_full((n, t - pred.shape[1]), pad_id)
    return torch.cat([pred, fill], dim=1)


def mask_after_eos(tokens: torch.Tensor, eos_id: int, pad_id: int) -> torch.Tensor:
    """Replace everything after each row's first EOS with padding."""
    is_eos = tokens == eos_id
    after = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    return tokens.masked_fill(after, pad_id)


def sequence_counts(
    pred: torch.Tensor, target: torch.Tensor, pad_id: int, eos_id: int
) -> dict[str, torch.Tensor]:
    """Counts for char accuracy and exact match, summed over the batch.

    Both tensors hold token ids; ``target`` ends each row with EOS followed by
    padding. Counted positions are the target's characters plus its EOS; padding
    is excluded. A prediction that stops early counts as wrong at every
    position it did not produce; anything it produces after its EOS is ignored.
    """
    pred = align(mask_after_eos(pred, eos_id, pad_id), target, pad_id)
    real = target != pad_id
    correct = (pred == target) & real
    exact = (correct | ~real).all(dim=1)
    return {
        "chars_correct": correct.sum(),
        "chars_total": real.sum(),
        "exact": exact.sum(),
        "count": torch.tensor(target.shape[0]),
    }


def char_accuracy(pred: torch.Tensor, target: torch.Tensor, pad_id: int, eos_id: int) -> float:
    c = sequence_counts(pred, target, pad_id, eos_id)
    return (c["chars_correct"] / c["chars_total"]).item()


def exact_match(pred: torch.Tensor, target: torch.Tensor, pad_id: int, eos_id: int) -> float:
    c = sequence_counts(pred, target, pad_id, eos_id)
    return (c["exact"] / c["count"]).item()


def lengths_to_eos(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Number of tokens before each row's first EOS (the whole row if it has none)."""
    is_eos = tokens == eos_id
    first = torch.where(is_eos.any(dim=1), is_eos.float().argmax(dim=1), tokens.shape[1])
    return first.long()


def levenshtein(a: torch.Tensor, a_len: torch.Tensor, b: torch.Tensor, b_len: torch.Tensor):
    """Edit distance between each row of ``a`` (N, La) and ``b`` (N, Lb), up to their lengths.

    Vectorized over rows: one pass per position of ``a``. Within a row of the
    dynamic programme the insertion chain d[j] = min(x[j], d[j-1] + 1) is a
    running minimum, d[j] = j + cummin(x[k] - k), so no loop over ``b`` is needed.
    """
    n, la = a.shape
    lb = b.shape[1]
    cols = torch.arange(lb + 1, device=a.device)
    prev = cols.expand(n, -1).clone()
    for i in range(1, la + 1):
        differ = (a[:, i - 1 : i] != b).long()  # (N, Lb)
        x = torch.empty_like(prev)
        x[:, 0] = i
        x[:, 1:] = torch.minimum(prev[:, 1:] + 1, prev[:, :-1] + differ)
        cur = cols + torch.cummin(x - cols, dim=1).values
        prev = torch.where((i <= a_len).unsqueeze(1), cur, prev)
    return prev.gather(1, b_len.clamp(max=lb).unsqueeze(1)).squeeze(1)
