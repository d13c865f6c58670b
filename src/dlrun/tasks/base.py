"""The task interface: data, model, loss and metrics. The training loop knows only this."""

from __future__ import annotations

import codecs
import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from dlrun.errors import printable
from dlrun.plan.config import RunConfig
from dlrun.rundir.layout import RunDir

log = logging.getLogger("dlrun")


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


STREAM_MIN_ROW = 64  # bytes per example: smaller tensors (labels, lengths) are never streamed


def _row_bytes(tensor: torch.Tensor) -> int:
    return tensor[:1].numel() * tensor.element_size()


def memory_mapped(
    splits: dict[str, dict[str, torch.Tensor]], folder: Path, min_row: int
) -> dict[str, dict[str, torch.Tensor]]:
    """``splits`` with every tensor of at least ``min_row`` bytes a row replaced by a
    memory-mapped copy in ``folder`` (the file is unlinked at once: it lives as long as the
    mapping, and its pages leave RAM when memory is short)."""
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, split in splits.items():
        big = {k: v for k, v in split.items() if _row_bytes(v) >= min_row}
        fd, path = tempfile.mkstemp(prefix=f"{name}.", suffix=".pt", dir=folder)
        os.close(fd)
        try:
            torch.save({k: v.contiguous() for k, v in big.items()}, path)
            mapped = torch.load(path, mmap=True, weights_only=True)
        finally:
            os.unlink(path)
        out[name] = {k: mapped.get(k, v) for k, v in split.items()}
    return out


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
    streamed: bool = False  # ``to`` left the large tensors on the host (``device.data``)
    device: torch.device = torch.device("cpu")

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
        pending = self._pending.pop(split, None) if self.streamed else None
        if pending is not None and torch.equal(pending[0], idx):
            return pending[1].result()  # gathered while the previous batch trained
        return self._gather(self.splits[split], idx)

    def prefetch(self, split: str, idx: torch.Tensor) -> None:
        """Start gathering the batch ``idx`` of ``split`` (streamed data: in a background
        thread, while the current batch trains); a no-op for data on the device."""
        if self.streamed:
            self._pending[split] = (idx, self._pool.submit(self._gather, self.splits[split], idx))

    def _gather(self, data: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: self.gather(v, idx) for k, v in data.items()}

    def gather(self, tensor: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``tensor[idx]`` on the device: rows of a streamed (host, memory-mapped) tensor are
        copied out on the host, pinned next to a GPU, and sent asynchronously."""
        if not self.streamed or tensor.device == self.device:
            return tensor[idx.to(tensor.device, non_blocking=True)]
        rows = tensor[idx.cpu()]
        if self.device.type == "cuda":
            rows = rows.pin_memory()
        return rows.to(self.device, non_blocking=True)

    def to(self, device: torch.device) -> None:
        """Move every split to ``device`` once; batches are then index slices there.

        Data that would not fit (``device.data=auto``: more than half the device's free
        memory, or of the RAM available for a CPU), or ``device.data=stream``, stay on the
        host in a memory-mapped file instead: ``batch`` gathers each batch's rows there and
        sends them, the next batch prefetched (``prefetch``). Small per-example tensors
        (labels, lengths: under ``STREAM_MIN_ROW`` bytes a row) go to the device either way.
        """
        from dlrun.engine.device import free_memory

        self.device = torch.device(device)
        tensors = [v for split in self.splits.values() for v in split.values()]
        size = sum(v.numel() * v.element_size() for v in tensors)
        mode = self.cfg.device.data
        self.streamed = mode == "stream" or (
            mode == "auto" and size > free_memory(self.device) // 2
        )
        if self.streamed:
            from concurrent.futures import ThreadPoolExecutor

            log.info(
                "data: %.1f MB streamed from a memory-mapped host copy (device.data=%s)",
                size / 2**20,
                mode,
            )
            self._pending: dict[str, tuple[torch.Tensor, Any]] = {}
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="dlrun-prefetch")
            folder = Path(self.cfg.paths.cache_dir).expanduser() / "stream"
            self.splits = memory_mapped(self.splits, folder, STREAM_MIN_ROW)
        self.splits = {
            name: {
                k: v if self.streamed and _row_bytes(v) >= STREAM_MIN_ROW else v.to(device)
                for k, v in split.items()
            }
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

    def samples(self, model: nn.Module, split: str, n: int) -> list[dict[str, Any]]:
        """Up to ``n`` examples with source, target and prediction, wrong ones first."""
        return []

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
