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
