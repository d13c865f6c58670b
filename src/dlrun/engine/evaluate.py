"""Evaluation, written once for every task: batching, summing, reduction across ranks.

A task says what one batch adds up to (``eval_sums``: sums and counts as
tensors) and what the totals mean (``metrics``); the engine walks the split,
adds the batches' sums, adds the ranks' totals under torchrun, and hands the
totals back to the task.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from dlrun.engine.distributed import SINGLE, Dist
from dlrun.errors import UserError


class TaskLike(Protocol):
    """What the engine needs of a task (``dlrun.tasks.base.Task`` provides it)."""

    splits: dict[str, dict[str, torch.Tensor]]

    @property
    def batch_size(self) -> int: ...  # of training

    @property
    def keep(self) -> str: ...  # trainer.keep=auto's choice: "best" or "last"

    def size(self, split: str) -> int: ...

    def batch(self, split: str, idx: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def prefetch(self, split: str, idx: torch.Tensor) -> None: ...

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def eval_order(self, split: str, rows: range) -> torch.Tensor: ...

    def row_lengths(self, split: str) -> torch.Tensor | None: ...

    def eval_sums(
        self, model: nn.Module, batch: dict[str, torch.Tensor], split: str
    ) -> dict[str, torch.Tensor]: ...

    def metrics(self, totals: dict[str, torch.Tensor]) -> dict[str, float]: ...

    @property
    def test_splits(self) -> list[str]: ...


def periodic_splits(task: TaskLike, monitor_split: str, also_eval: list[str]) -> list[str]:
    """The splits evaluated beside the monitored one at every evaluation."""
    extra = (["train_subset"] if "train_subset" in task.splits else []) + list(also_eval)
    unknown = [n for n in extra if n not in task.splits]
    if unknown:
        raise UserError(
            f"trainer.also_eval: no split {unknown[0]!r}; this task has {', '.join(task.splits)}"
        )
    return [n for n in dict.fromkeys(extra) if n != monitor_split]


def totals(
    task: TaskLike, model: nn.Module, split: str, batch_size: int, dist: Dist = SINGLE
) -> dict[str, Any]:
    """The sums of every batch of ``split`` (this rank's rows), added over the ranks."""
    order = task.eval_order(split, dist.rows(task.size(split)))
    out: dict[str, torch.Tensor] = {}
    for start in range(0, order.numel(), batch_size):
        batch = task.batch(split, order[start : start + batch_size])
        if start + batch_size < order.numel():  # streamed data: gathered while this one runs
            task.prefetch(split, order[start + batch_size : start + 2 * batch_size])
        sums = task.eval_sums(model, batch, split)
        out = sums if not out else {k: out[k] + v for k, v in sums.items()}
    if not out:
        # A rank with no rows (a split smaller than the world) still joins the reduction:
        # the sums of one row, times zero, give it the right names and shapes.
        one = task.eval_sums(model, task.batch(split, torch.zeros(1, dtype=torch.long)), split)
        out = {k: v * 0 for k, v in one.items()}
    return dist.sum(out)


def evaluate(
    task: TaskLike, model: nn.Module, split: str, batch_size: int, dist: Dist = SINGLE
) -> dict[str, float]:
    """``loss`` and the task's metrics on a whole split."""
    return task.metrics(totals(task, model, split, batch_size, dist))
