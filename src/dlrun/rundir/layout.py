"""The run and sweep directories' layout: every file dlrun keeps there, named here only.

``RunDir`` is one run's folder (``outputs/DATE/TIME``), ``SweepDir`` a sweep's or a
search's (``outputs/multirun/DATE/TIME``). Other modules ask them for a path or for
a file read (``dlrun.rundir.read``: as bounded data, never code) or written
(``dlrun.rundir.write``: atomically). A task's own artifacts (vocabularies, its
figures) are named by the task and placed with ``RunDir.file``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from dlrun import walk
from dlrun.errors import UserError, first_line
from dlrun.rundir import read, write

CHECKPOINTS = "checkpoints"
FOLD = "fold_"  # fold_0, fold_1...: the folds of a cross-validation run (trainer.folds)
# Folders that experiment trackers keep inside a run or sweep directory (their own copies
# of dlrun's files, which reports skip).
STORE_DIRS = ("mlflow", "wandb")


class RunDir:
    """One run's folder and the files dlrun writes into it."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        """``run / "x.json"``: a task's own artifact (``file``), as with the plain Path
        that tasks' ``save``/``load``/``report`` were handed before."""
        return self.file(name)

    # -- names -------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def checkpoint(self, which: str) -> Path:
        """``checkpoints/best.pt`` (``which="best"``) or ``checkpoints/last.pt``."""
        if which not in ("best", "last"):
            raise ValueError(f"checkpoint {which!r}: best or last")
        return self.checkpoints / f"{which}.pt"

    @property
    def last(self) -> Path:
        return self.checkpoint("last")

    @property
    def best(self) -> Path:
        return self.checkpoint("best")

    summary = property(lambda self: self.path / "summary.json")
    stats = property(lambda self: self.path / "stats.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    samples = property(lambda self: self.path / "samples.txt")
    curves = property(lambda self: self.path / "curves.png")
    lr_find = property(lambda self: self.path / "lr_find.png")  # debug=lr_find's figure
    per_class = property(lambda self: self.path / "per_class.json")
    trackers = property(lambda self: self.path / "trackers.json")
    tensorboard = property(lambda self: self.path / "tensorboard")
    profile = property(lambda self: self.path / "profile")
    export = property(lambda self: self.path / "export")  # dlrun-export's default --out
    profile_table = property(lambda self: self.path / "profile" / "top_operators.txt")
    hydra_config = property(lambda self: self.path / ".hydra" / "config.yaml")
    hydra_overrides = property(lambda self: self.path / ".hydra" / "overrides.yaml")
    hydra_runtime = property(lambda self: self.path / ".hydra" / "hydra.yaml")

    def file(self, name: str) -> Path:
        """A task's own artifact in the run directory (``vocab_src.json``...)."""
        return self.path / name

    def fold(self, k: int) -> RunDir:
        """Fold ``k`` of a cross-validation run: a run directory of its own, ``fold_<k>``."""
        return RunDir(self.path / f"{FOLD}{k}")

    def folds(self) -> list[RunDir]:
        """The folds a cross-validation run has started, in order."""
        found = [p for p in self.path.glob(f"{FOLD}*") if p.name[len(FOLD) :].isdigit()]
        return [RunDir(p) for p in sorted(found, key=lambda p: int(p.name[len(FOLD) :]))]

    # -- reading -------------------------------------------------------------------------
    def has_checkpoint(self) -> bool:
        """Whether the run has trained at least once (``checkpoints/last.pt``, or a fold's)."""
        return self._resume_from() is not None

    def _resume_from(self) -> Path | None:
        """``checkpoints/last.pt``; in a cross-validation run, that of the last fold with one."""
        if self.last.is_file():
            return self.last
        started = [f.last for f in self.folds() if f.last.is_file()]
        return started[-1] if started else None

    def resume_checkpoint(self) -> dict:
        """``checkpoints/last.pt``, which a resume continues from: the run's config as
        trained, its training state and weights (a cross-validation run's: those of the
        last fold it started); one line if the run has none."""
        path = self._resume_from()
        if path is None:
            raise UserError(
                f"resume={self.path}: not a dlrun run directory with a checkpoint (expected "
                f"{self.last.relative_to(self.path)}); pass a run directory that dlrun printed"
            )
        return read.read_checkpoint(path)

    def find_checkpoint(self) -> Path:
        """``checkpoints/best.pt`` (or ``last.pt``); a clear error if the run has neither."""
        if not self.path.is_dir():
            raise UserError(f"{self.path}: no such run directory")
        for path in (self.best, self.last):
            if path.is_file():
                return path
        if self.folds():
            raise UserError(
                f"{self.path}: a cross-validation run (trainer.folds); each fold is a model: "
                f"pass one of them, e.g. {self.folds()[0]}"
            )
        raise UserError(
            f"{self.path}: not a complete dlrun run directory (needs {CHECKPOINTS}/best.pt); "
            "pass the directory a finished `dlrun` printed"
        )

    def read_summary(self) -> dict:
        return read.read_json(self.summary)

    def finished(self) -> bool:
        """Whether the run's summary says it finished (a damaged one says it did not)."""
        try:
            return self.read_summary().get("status") == "ok"
        except UserError:
            return False

    def artifacts(self) -> list[Path]:
        """What experiment trackers copy from a finished run: its summary, curves, samples."""
        return [p for p in (self.summary, self.curves, self.samples) if p.is_file()]

    def checkpoint_files(self) -> list[Path]:
        return sorted(self.checkpoints.glob("*.pt"))

    # -- writing -------------------------------------------------------------------------
    def write_summary(self, summary: dict[str, Any]) -> None:
        write.write_json(self.summary, summary)

    def write_failure(self, status: str, error: str) -> None:
        """``summary.json`` of a run that did not finish, with the first line of the reason.

        A finished run's summary is never replaced: a failed or interrupted resume of it
        is recorded in the log only.
        """
        if not self.path.is_dir() or self.finished():
            return
        try:
            self.write_summary({"status": status, "error": first_line(error)})
        except OSError:  # best effort: the disk that failed the run may refuse this too
            pass

    def write_samples(self, rows: list[dict], of: int | None = None, metrics=None) -> None:
        """samples.txt: ``rows`` of the test split's ``of`` examples, and its ``metrics``."""
        write.write_text_atomic(self.samples, write.samples_text(rows, of, metrics))

    def remove_checkpoints(self) -> None:
        """A run that trained nothing keeps no checkpoints (a resume then refuses it)."""
        shutil.rmtree(self.checkpoints, ignore_errors=True)


class SweepDir:
    """A sweep's or a search's folder: its jobs' run directories and the files about them."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    summary_csv = property(lambda self: self.path / "summary.csv")
    summary_md = property(lambda self: self.path / "summary.md")
    journal = property(lambda self: self.path / "optuna.journal")  # the search's study
    multirun_yaml = property(lambda self: self.path / "multirun.yaml")
    best_yaml = property(lambda self: self.path / "best.yaml")
    trackers = property(lambda self: self.path / "trackers.json")  # the parent run's ids

    def report_plot(self, name: str) -> Path:
        """A report's plot: ``summary_<name>.png`` (curves, bars, <metric>_vs_<key>)."""
        return self.path / f"summary_{name}.png"

    def search_plot(self, name: str) -> Path:
        """A search's plot of its study: ``search_<name>.png`` (history, slice...)."""
        return self.path / f"search_{name}.png"

    def report_files(self) -> list[Path]:
        """What a sweep's report wrote: its tables and plots (a tracker's parent run gets them)."""
        return sorted(self.path.glob("summary.*")) + sorted(self.path.glob("*.png"))


def run_dirs_under(root: Path) -> set[Path]:
    """The run directories at or under ``root``: those with a ``summary.json`` or a
    ``.hydra/config.yaml`` (not the copies trackers keep in their own folders)."""
    probe = RunDir(root)
    marks = [m.relative_to(root).parts for m in (probe.summary, probe.hydra_config)]
    found = set()
    for path in walk.files(root, lambda p: p.name in {m[-1] for m in marks}):
        for mark in marks:
            below = path.relative_to(root).parts
            if len(below) >= len(mark) and below[-len(mark) :] == mark:
                where = below[: -len(mark)]  # the run directory's folders below root
                if not set(where) & {*STORE_DIRS}:
                    found.add(root.joinpath(*where))
    # A cross-validation run's folds are its rows (its summary has them), not runs of their own.
    return {run for run in found if not (run != root and _is_fold(run))}


def _is_fold(path: Path) -> bool:
    """Whether ``path`` is a fold (``fold_<k>``) of the run directory above it."""
    parent = RunDir(path.parent)
    numbered = path.name.startswith(FOLD) and path.name[len(FOLD) :].isdigit()
    return numbered and (parent.summary.is_file() or parent.hydra_config.is_file())
