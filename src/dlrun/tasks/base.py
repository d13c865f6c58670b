"""The task interface: data, model, loss and metrics. The training loop knows only this."""

from __future__ import annotations

import codecs
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from dlrun.errors import UserError, printable, printable_names
from dlrun.plan.config import RunConfig
from dlrun.rundir.layout import RunDir

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("dlrun")

# The most of a data set held out (validation + test) by fractions: at least half trains.
MAX_HELD_OUT = 0.5


def split_problems(
    dataset: Any, what: str, keys: tuple[str, ...] = ("val_fraction", "test_fraction")
) -> list[str]:
    """The fractions ``keys`` of ``dataset`` (those it has) together hold out at most
    ``MAX_HELD_OUT`` of the data (``what``: "rows", "images"...), so that most of it trains."""
    keys = tuple(k for k in keys if hasattr(dataset, k))
    total = sum(getattr(dataset, k) for k in keys)
    if total <= MAX_HELD_OUT:
        return []
    named = " + ".join(f"dataset.{k}" for k in keys)
    return [
        f"{named} = {total:g}: holds out more than {MAX_HELD_OUT:g} of the {what}, too few "
        f"left to train on; lower {' / '.join(f'dataset.{k}' for k in keys)}"
    ]


def held_out_count(n: int, fraction: float) -> int:
    """How many of ``n`` examples a held-out ``fraction`` takes: at least one."""
    return max(1, round(n * fraction))


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

    from dlrun.engine import checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, split in splits.items():
        big = {k: v for k, v in split.items() if _row_bytes(v) >= min_row}
        fd, path = tempfile.mkstemp(prefix=f"{name}.", suffix=".pt", dir=folder)
        os.close(fd)
        try:
            checkpoint.save({k: v.contiguous() for k, v in big.items()}, Path(path))
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
    # The splits are already memory-mapped host files (a task that prepared them so): ``to``
    # streams them as they are instead of copying them into files of its own.
    host_mapped: bool = False
    device: torch.device = torch.device("cpu")
    _pool: ThreadPoolExecutor  # streamed data's prefetching thread (made by ``to``)

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
        # Compared by type: a tensor sent to device "cuda" reports "cuda:0". Streamed host
        # tensors go through ``host_rows`` on a CPU too.
        if not self.streamed or tensor.device.type != "cpu":
            return tensor[idx.to(tensor.device, non_blocking=True)]
        rows = self.host_rows(tensor, idx.cpu())
        if self.device.type == "cpu":
            return rows
        if self.device.type == "cuda":
            rows = rows.pin_memory()
        return rows.to(self.device, non_blocking=True)

    def row_lengths(self, split: str) -> torch.Tensor | None:
        """Each row's length on the host, for tasks whose batches are cut to their longest
        row (``trainer.group_by_length`` batches rows of like length); None: fixed size."""
        return None

    def host_rows(self, tensor: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The rows ``idx`` of a streamed host tensor (a task may read them another way)."""
        return tensor[idx]

    def data_bytes(self) -> int:
        """The bytes of data that ``to`` moves to the device: every split's tensors. A task
        that keeps data beside ``splits`` adds them (``device.data=auto`` decides by it)."""
        tensors = [v for split in self.splits.values() for v in split.values()]
        return sum(v.numel() * v.element_size() for v in tensors)

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
        size = self.data_bytes()
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
            if getattr(self, "_pool", None) is not None:  # a fold's ``to`` after another's
                self._pool.shutdown(wait=False)
            self._pending: dict[str, tuple[torch.Tensor, Any]] = {}
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="dlrun-prefetch")
            folder = Path(self.cfg.paths.cache_dir).expanduser() / "stream"
            if not self.host_mapped:
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

    # Attributes that hold rows of ``train`` and ``val`` beside the tensors, aligned with
    # them (dicts of split name -> list, numpy array, or tuple of lists): ``fold``
    # re-splits them too.
    fold_rows: ClassVar[tuple[str, ...]] = ()

    def fold(self, k: int, folds: int, seed: int) -> None:
        """Make ``train`` and ``val`` fold ``k`` of ``folds`` (``trainer.folds``): the rows
        of training and validation pooled, shuffled by ``seed``, cut into ``folds`` parts;
        part ``k`` validates and the others train. Other splits are untouched.

        The default serves splits of row-aligned tensors (and the ``fold_rows``); a task
        that keeps train or validation data any other way overrides this, or refuses
        ``trainer.folds`` (``cross_validates = False``).
        """
        if getattr(self, "_unfolded", None) is None:  # the first fold: pool the split as made
            self._unfolded = self._fold_pool()
        tensors, rows = self._unfolded
        n = next(iter(tensors.values())).shape[0]
        if not 2 <= folds <= n:
            raise UserError(
                f"trainer.folds={folds}: needs 2 to {n} folds for the {n} training and "
                "validation examples; lower trainer.folds"
            )
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        chunks = torch.tensor_split(order, folds)
        val = chunks[k].sort().values
        train = torch.cat([c for i, c in enumerate(chunks) if i != k])  # stays shuffled
        self.splits.pop("train_subset", None)
        if self.streamed:  # batches prefetched from the previous fold's splits
            self._pending.clear()
        for name, idx in (("train", train), ("val", val)):
            self.splits[name] = {key: v[idx] for key, v in tensors.items()}
            for attr, pooled in rows.items():
                getattr(self, attr)[name] = _take(pooled, idx.tolist())

    def _fold_pool(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The training then the validation rows as prepared, pooled for ``fold``: their
        tensors and their ``fold_rows``; one line for a layout the default cannot re-split."""
        refuse = (
            f"trainer.folds: task {self.cfg.task.name} keeps its data in a way folds cannot "
            "re-split ({}); leave trainer.folds out"
        )
        train, val = self.splits.get("train"), self.splits.get("val")
        if not train or not val or set(train) != set(val):
            raise UserError(refuse.format("no train and val splits of the same tensors"))
        for name, split in (("train", train), ("val", val)):
            if len({v.shape[0] for v in split.values()}) > 1:
                raise UserError(refuse.format(f"its {name} tensors differ in length"))
        if any(v.shape[1:] != val[key].shape[1:] for key, v in train.items()):
            raise UserError(refuse.format("train and val tensors differ in shape"))
        # Per-split data kept beside the tensors that ``fold_rows`` does not name.
        other = [
            attr
            for attr, value in vars(self).items()
            if attr not in ("splits", *self.fold_rows)
            and isinstance(value, dict)
            and {"train", "val"} <= set(value)
        ]
        if other:
            raise UserError(refuse.format(f"per-split {', '.join(other)}"))
        tensors = {key: torch.cat([v, val[key]]) for key, v in train.items()}
        rows = {}
        for attr in self.fold_rows:
            value = getattr(self, attr)
            if "train" in value and "val" in value:
                rows[attr] = _join(value["train"], value["val"])
        return tensors, rows

    def eval_order(self, split: str, rows: range) -> torch.Tensor:
        """The order in which the engine evaluates ``rows`` of ``split`` (default: as stored)."""
        return torch.arange(rows.start, rows.stop)

    def stats(self) -> dict[str, Any]:
        """Dataset statistics written to ``stats.json`` and printed by ``dlrun-stats``."""
        return {name: {"examples": self.size(name)} for name in self.splits}


def _join(a: Any, b: Any) -> Any:
    """Rows ``a`` then rows ``b``: lists, numpy arrays (a table's row indices), or tuples
    of lists (source and target texts)."""
    if isinstance(a, tuple):
        return tuple(_join(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return np.concatenate([a, b])
    return [*a, *b]


def _take(rows: Any, idx: list[int]) -> Any:
    if isinstance(rows, tuple):
        return tuple(_take(r, idx) for r in rows)
    if isinstance(rows, np.ndarray):
        return rows[np.asarray(idx, dtype=np.int64)]
    return [rows[i] for i in idx]


class TaskChecks:
    """Optional: a task's checks of a config, run by validation before anything starts."""

    metric_names: ClassVar[tuple[str, ...]]
    # The kinds of problem ``task.problem`` may choose (none: the task has one kind).
    problems: ClassVar[tuple[str, ...]] = ()
    # Whether ``trainer.folds`` may re-split its data (``TaskData.fold``); False: refused.
    cross_validates: ClassVar[bool] = True

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
        if cfg.trainer and cfg.trainer.folds and not cls.cross_validates:
            problems.append(
                f"trainer.folds={cfg.trainer.folds}: task {cfg.task.name} cannot be "
                "cross-validated; leave trainer.folds out"
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

    def vocabularies(self) -> dict[str, list[str]]:
        """What the model's rows and columns stand for (words, classes, a table's features
        and categories), by name, once prepared or loaded: a run that starts from
        another's weights (``init_from``) must have the same, never remapped."""
        return {}

    cfg: RunConfig

    def samples(self, model: nn.Module, split: str, n: int) -> list[dict[str, Any]]:
        """Up to ``n`` examples with source, target and prediction, wrong ones first (or,
        for numbers, with ``error`` instead of ``correct``, largest first)."""
        return []

    # dlrun-predict's inputs name files (images); else they are texts or rows, and a file
    # named among them is refused rather than predicted as a text.
    inputs_are_paths: ClassVar[bool] = False

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
                    f"its columns are {printable_names(header)}"
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

    @property
    def keep(self) -> str:
        """The weights kept and tested under ``trainer.keep=auto``: "best" (by
        ``task.monitor``) or "last" (where training stopped)."""
        return "best"

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.splits = {}
        # The files the data came from, fingerprinted just before ``prepare`` read them
        # (``provenance.data_fingerprints``): what a resume must find again.
        self.data_read: dict[str, dict[str, Any]] = {}

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
