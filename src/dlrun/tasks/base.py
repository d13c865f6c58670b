"""The task interface: data, model, loss and metrics. The training loop knows only this."""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from dlrun.errors import UserError, printable
from dlrun.plan.config import RunConfig
from dlrun.rundir.layout import RunDir


def split_problems(dataset: Any, what: str) -> list[str]:
    """``dataset.val_fraction`` and ``dataset.test_fraction`` must leave ``what`` to train on."""
    total = dataset.val_fraction + dataset.test_fraction
    if total < 1:
        return []
    return [
        f"dataset.val_fraction + dataset.test_fraction = {total:g}: must leave {what} for training"
    ]


def encoding_problems(dataset: Any) -> list[str]:
    """``dataset.encoding`` must name a codec Python knows."""
    try:
        codecs.lookup(dataset.encoding)
    except LookupError:
        return [f"dataset.encoding={dataset.encoding}: unknown encoding; e.g. utf-8, latin-1"]
    return []


def path_problems(key: str, value: str | None, kind: str, fix: str) -> list[str]:
    """``key=value: no such <kind>; <fix>`` where ``value`` names no existing ``kind``
    ("file", "folder", or "file or folder"); nothing where it does, or is unset."""
    if value is None:
        return []
    path = Path(value).expanduser()
    found = {"file": path.is_file, "folder": path.is_dir}.get(kind, path.exists)()
    return [] if found else [f"{key}={printable(value)}: no such {kind}; {fix}"]


class TaskData:
    """The part of a task the engine reads its data through (and ``stats`` describes).
    Each has a default; a task overrides one only where its data need it (augmentation
    in ``batch``, ids that stay on the host in ``to``).

    Data live in ``self.splits``: for each split name a dict of equally long tensors; a
    batch is an index slice of them (``batch``), so the hot loop runs no per-sample Python.
    """

    # Splits never used for a final test: training, validation, and the
    # training subset evaluated beside validation (``add_train_subset``).
    not_tested: ClassVar[tuple[str, ...]] = ("train", "val", "train_subset")
    cfg: RunConfig
    splits: dict[str, dict[str, torch.Tensor]]

    @property
    def batch_size(self) -> int:
        """Training examples per optimizer step (``dataset.batch_size``)."""
        return self.cfg.dataset.batch_size

    @property
    def test_splits(self) -> list[str]:
        """Held-out splits evaluated once with the best checkpoint (test, extrapolate...)."""
        return [name for name in self.splits if name not in self.not_tested]

    def size(self, split: str) -> int:
        return next(iter(self.splits[split].values())).shape[0]

    def batch(self, split: str, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The examples at ``idx`` (on the host or the data's device) as one batch."""
        data = self.splits[split]
        idx = idx.to(next(iter(data.values())).device, non_blocking=True)
        return {k: v[idx] for k, v in data.items()}

    def to(self, device: torch.device) -> None:
        """Move every split to ``device`` once; batches are then index slices there."""
        self.splits = {
            name: {k: v.to(device, non_blocking=True) for k, v in split.items()}
            for name, split in self.splits.items()
        }

    def add_train_subset(self, n: int) -> None:
        """Expose the first ``n`` training examples as split ``train_subset``.

        Evaluated beside validation, it shows over- or underfitting with the
        same metric (training data are stored in random order).
        """
        if n > 0:
            self.splits["train_subset"] = {k: v[:n] for k, v in self.splits["train"].items()}

    def eval_order(self, split: str, rows: range) -> torch.Tensor:
        """The order in which the engine evaluates ``rows`` of ``split`` (default: as stored)."""
        return torch.arange(rows.start, rows.stop)

    def stats(self) -> dict[str, Any]:
        """Dataset statistics written to ``stats.json`` and printed by ``dlrun-stats``."""
        return {name: {"examples": self.size(name)} for name in self.splits}


class TaskChecks:
    """Optional: a task's checks of a config, run by validation before anything starts."""

    metric_names: ClassVar[tuple[str, ...]]
    # The kinds of problem ``task.problem`` may choose (none: the task has one kind).
    problems: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_config(cls, cfg: RunConfig) -> list[str]:
        """Cross-field problems with a config whose sections are individually valid."""
        problems = []
        monitor = cfg.task.monitor
        valid = [f"{s}/{m}" for s in ("val",) for m in ("loss", *cls.metric_names)]
        if monitor not in valid:
            problems.append(f"task.monitor={monitor}: must be one of {', '.join(valid)}")
        problem = cfg.task.problem
        if problem is not None and problem not in cls.problems:
            problems.append(
                f"task.problem={problem}: task {cfg.task.name} has one kind of problem; "
                "leave task.problem out"
            )
        return problems

    @classmethod
    def check_data(cls, cfg: RunConfig) -> list[str]:
        """Problems finding the data a run would read (skipped when only predicting)."""
        return []


class TaskOutputs:
    """Optional: what a task leaves in a run directory besides what the engine writes."""

    def save(self, run: RunDir) -> None:
        """Write what prediction needs besides weights (vocabularies) into the run dir."""

    def load(self, run: RunDir) -> None:
        """Read what ``save`` wrote, for prediction without the data."""

    cfg: RunConfig

    def samples(self, model: nn.Module, split: str, n: int) -> list[dict[str, Any]]:
        """Up to ``n`` examples with source, target and prediction, wrong ones first (or,
        for numbers, with ``error`` instead of ``correct``, largest first)."""
        return []

    def inputs_from_lines(self, lines: list[str]) -> list[str]:
        """``dlrun-predict``'s inputs from its arguments or stdin lines: the non-blank ones."""
        return [line for line in lines if line.strip()]

    def inputs_from_table(self, header: list[str], rows: list[list[str]], source: str) -> list[str]:
        """One input per row of a table file (``source``) for ``predict``: the column named
        by the run's ``dataset.text_column`` where its dataset has that key, else the
        file's only column."""
        key = getattr(self.cfg.dataset, "text_column", None)
        if key is not None:
            if key not in header:
                raise UserError(
                    f"{source}: no column '{printable(key)}' (this run's dataset.text_column); "
                    f"its columns are {', '.join(map(printable, header))}"
                )
            column = header.index(key)
        elif len(header) == 1:
            column = 0
        else:
            raise UserError(
                f"{source}: {len(header)} columns ({', '.join(map(printable, header))}); this "
                "run reads one input per row: give a file with a single column of inputs"
            )
        return [row[column] for row in rows]

    def report(self, model: nn.Module, run: RunDir) -> None:
        """Task-specific figures and tables of the trained model, written into ``run``."""


class Task(TaskData, TaskChecks, TaskOutputs):
    """One experiment family: what a task author writes. Subclasses register with
    ``TASKS.register``.

    Required: the kind of model it trains and its metrics' names, then its data
    (``prepare``), model (``build_model``), loss, what an evaluation batch adds up
    to (``eval_sums``) and what the totals mean (``metrics``), and ``predict``.
    The parts it inherits have defaults: how the engine reads its data
    (``TaskData``), config checks (``TaskChecks``), and what it saves and reports
    (``TaskOutputs``).
    """

    model_kind: ClassVar[str]
    # Metrics ``evaluate`` returns for every split, besides ``loss``.
    metric_names: ClassVar[tuple[str, ...]]

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.splits = {}

    def prepare(self, cache_dir: Path) -> None:
        """Generate or read the data (cached on disk) and fill ``self.splits``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def build_model(self) -> nn.Module:
        raise NotImplementedError  # pragma: no cover - abstract

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def eval_sums(
        self, model: nn.Module, batch: dict[str, torch.Tensor], split: str
    ) -> dict[str, torch.Tensor]:
        """What one evaluation batch adds up to: summed losses and counts, as tensors.

        The engine adds them over the batches of a split and over the ranks.
        """
        raise NotImplementedError  # pragma: no cover - abstract

    def metrics(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        """``loss`` and every name in ``metric_names``, from a whole split's ``eval_sums``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def predict(self, model: nn.Module, inputs: list[str], batch_size: int) -> list[str]:
        raise NotImplementedError  # pragma: no cover - abstract
