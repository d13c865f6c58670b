"""Tiny data and settings for tests and CI: a seconds-long run of every built-in task.

This package imports tasks (``fake.write_kmnist`` reads the KMNIST file names); no task
imports it. A plugin's own tests pass their own overrides, or a ``Tiny`` of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dlrun.testing import fake


@dataclass(frozen=True)
class Tiny:
    """A task's settings for a seconds-long run: ``overrides`` of its keys (data sizes,
    batch size) and, for a task that reads files, ``data``: a writer of a tiny synthetic
    set (``dlrun.testing.fake``) that takes a folder and returns what ``dataset.path`` names.
    """

    overrides: tuple[str, ...] = ()
    data: Callable[[Path], Path] | None = None

    def settings(self, root: Path) -> list[str]:
        """The overrides of the run; writes ``data`` under ``root`` first."""
        path = [] if self.data is None else [f"dataset.path={self.data(root)}"]
        return [*path, *self.overrides]


# Generated pairs (dates, algebra): a few hundred of them.
GENERATED_PAIRS = (
    "dataset.train_size=768",
    "dataset.val_size=128",
    "dataset.test_size=128",
    "dataset.batch_size=64",
)

TINY: dict[str, Tiny] = {
    "dates": Tiny(GENERATED_PAIRS),
    "algebra": Tiny((*GENERATED_PAIRS, "dataset.extrapolate_size=50")),
    "text_pairs": Tiny(("dataset.batch_size=32",), fake.write_text_pairs),
    "imdb": Tiny(("dataset.val_fraction=0.2", "dataset.batch_size=16"), fake.write_aclimdb),
    "text": Tiny(("dataset.batch_size=16",), fake.write_texts),
    "kmnist": Tiny(("dataset.val_fraction=0.17", "dataset.batch_size=32"), fake.write_kmnist),
    "images": Tiny(("dataset.image_size=16", "dataset.batch_size=16"), fake.write_image_folder),
    "tabular": Tiny(("dataset.target=labels", "dataset.batch_size=16"), fake.write_points),
}


def tiny(task: str, root: Path) -> list[str]:
    """The overrides of a seconds-long run of the built-in ``task``; its data under ``root``."""
    if task not in TINY:
        raise KeyError(f"no tiny settings for task {task!r}; built-in: {', '.join(TINY)}")
    return TINY[task].settings(root / task)
