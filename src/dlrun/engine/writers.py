"""Metric writers: ``log(metrics, step)`` and ``close()``."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

from dlrun.rundir.layout import RunDir
from dlrun.rundir.read import read_jsonl
from dlrun.rundir.write import write_text_atomic


class JsonlWriter:
    """One JSON object per line, flushed on every write so a crash loses nothing."""

    def __init__(self, path: Path, keep_until_step: int | None = None):
        self.path = path
        if keep_until_step is not None and path.exists():
            # On resume, drop records written after the checkpoint we continue from.
            kept = [r for r in read_jsonl(path) if r.get("step", 0) <= keep_until_step]
            write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
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
def open_writers(logger, run: RunDir, main: bool, keep_until_step: int | None, trackers=None):
    """The run's writers (none on ranks other than 0): metrics.jsonl always, TensorBoard
    and the ``trackers`` that the ``logger`` section chose; closed however the run ends."""
    writers: list = []
    if main:
        writers.append(JsonlWriter(run.metrics, keep_until_step))
        if logger.tensorboard is not None:
            writers.append(TensorBoardWriter(run.tensorboard))
        writers += [trackers] if trackers else []
    writer = Writers(writers)
    try:
        yield writer
    finally:
        writer.close()
