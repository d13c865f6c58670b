"""Metric writers: ``log(metrics, step)`` and ``close()``."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write`` a temporary file beside ``path``, then rename it into place.

    A crash mid-write leaves the previous file intact, never a torn one; readers
    (a sweep's other jobs, a person) see the old file or the new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


class JsonlWriter:
    """One JSON object per line, flushed on every write so a crash loses nothing."""

    def __init__(self, path: Path, keep_until_step: int | None = None):
        self.path = path
        if keep_until_step is not None and path.exists():
            # On resume, drop records written after the checkpoint we continue from.
            kept = [r for r in read_jsonl(path) if r.get("step", 0) <= keep_until_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = path.open("a")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        record = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf; write them as strings rather than producing invalid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSONL file; a torn last line (a kill in mid-write) is dropped."""
    from dlrun.errors import UserError

    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise UserError(f"{path}, line {number}: not valid JSON; the file is damaged") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}, line {number}: expected a JSON object per line")
        records.append(record)
    return records


class TensorBoardWriter:
    """Scalars as ``<split>/<metric>`` (train/loss, val/accuracy, test/accuracy...).

    ``hparams`` records the run's settings with its final metrics (TensorBoard's
    HPARAMS tab), in the same event directory.
    """

    SKIP = {"step", "epoch", "split", "checkpoint"}
    TRAIN_ONLY = {"lr", "samples_per_sec", "elapsed"}  # repeated on evaluation records

    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(log_dir))

    def log(self, metrics: dict[str, Any], step: int) -> None:
        split = metrics.get("split", "train")
        for key, value in metrics.items():
            if key in self.SKIP or (split != "train" and key in self.TRAIN_ONLY):
                continue
            if isinstance(value, (int, float)):
                self._writer.add_scalar(f"{split}/{key}", value, step)

    def hparams(self, params: dict[str, Any], final: dict[str, float]) -> None:
        final = {f"hparam/{k}": v for k, v in final.items() if isinstance(v, (int, float))}
        self._writer.add_hparams(params, final, run_name=".")

    def close(self) -> None:
        self._writer.close()


class Writers:
    """Several writers as one: every record goes to each."""

    def __init__(self, writers: list):
        self.writers = writers

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for w in self.writers:
            w.log(metrics, step)

    def hparams(self, params: dict[str, Any], final: dict[str, float]) -> None:
        for w in self.writers:
            if hasattr(w, "hparams"):
                w.hparams(params, final)

    def close(self) -> None:
        for w in self.writers:
            w.close()


def flat_hparams(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """``{"optimizer.lr": 0.001, ...}``: scalars as they are, lists and None as text."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


@contextlib.contextmanager
def open_writers(cfg, run_dir: Path, main: bool, keep_until_step: int | None, trackers=None):
    """The run's writers (none on ranks other than 0): metrics.jsonl always, TensorBoard
    and the ``trackers`` that ``cfg.logger`` chose; closed however the run ends."""
    writers: list = []
    if main:
        writers.append(JsonlWriter(run_dir / "metrics.jsonl", keep_until_step))
        if cfg.logger.tensorboard is not None:
            writers.append(TensorBoardWriter(run_dir / "tensorboard"))
        writers += [trackers] if trackers else []
    writer = Writers(writers)
    try:
        yield writer
    finally:
        writer.close()
