"""IMDB: review sentiment with the text machinery of ``task=text`` (seed 003).

Reviews come from the aclImdb folder or the official tarball at
``dataset.path`` (``dataset.download=true`` fetches the tarball there); the
official test reviews are the test split, and ``dataset.val_fraction`` of the
training reviews (shuffled by ``dataset.seed``) are held out for validation.
Everything else (token ids, n-gram bags or sequences, naive-Bayes weights,
batches, prediction) is ``dlrun.tasks.text.TextClassifier``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrun.data.download import download
from dlrun.data.text import read_aclimdb
from dlrun.errors import UserError
from dlrun.plan.config import RunConfig
from dlrun.plan.schema import spec
from dlrun.registry import TASKS
from dlrun.tasks.base import path_problems
from dlrun.tasks.text import TextClassifier, TextFeaturesConfig, distinct_ids, nb_ratios

__all__ = ["ImdbDataConfig", "ImdbTask", "distinct_ids", "nb_ratios"]

URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
# What to do when dataset.path names nothing.
WHERE = (
    "point it at the aclImdb folder or aclImdb_v1.tar.gz, or add dataset.download=true "
    "to fetch the official tarball (84 MB) to that path"
)


@dataclass(frozen=True)
class ImdbDataConfig(TextFeaturesConfig):
    path: str = spec()  # the aclImdb folder or the official tarball
    download: bool = spec()  # fetch the official tarball to `path` if it is missing
    train_samples: int | None = spec(ge=2)  # balanced subsample (seed I.3.b: 200)


@TASKS.register("imdb", schema=ImdbDataConfig)
class ImdbTask(TextClassifier):
    cache_name = "imdb"
    classes = ("negative", "positive")
    not_cached = (*TextClassifier.not_cached, "download")

    @classmethod
    def check_config(cls, cfg: RunConfig) -> list[str]:
        problems = super().check_config(cfg)
        d = cfg.dataset
        if d.download and not d.path.endswith(".tar.gz"):
            problems.append(
                f"dataset.download=true needs dataset.path to name the tarball to write "
                f"(…/aclImdb_v1.tar.gz), not {d.path}"
            )
        return problems

    @classmethod
    def check_data(cls, cfg: RunConfig) -> list[str]:
        d = cfg.dataset
        return [] if d.download else path_problems("dataset.path", d.path, "file or folder", WHERE)

    def source(self) -> tuple[Path, dict[str, Any]]:
        d = self.cfg.dataset
        path = Path(d.path).expanduser().resolve()
        if d.download:
            download(URL, path, MD5)
        stat = path.stat()
        return path, {"path": str(path), "size": stat.st_size, "mtime": stat.st_mtime}

    def read_splits(self, path: Path) -> tuple[dict[str, list[tuple[str, int]]], list[str]]:
        d = self.cfg.dataset
        reviews = read_aclimdb(path)
        train = [(text, label) for text, label, _ in reviews["train"]]
        random.Random(d.seed).shuffle(train)
        n_val = round(d.val_fraction * len(train))
        val, train = train[:n_val], train[n_val:]
        if not val or len({label for _, label in train}) < 2:
            why = "too few for training (both classes are needed)" if val else "none to validate"
            raise UserError(
                f"{path}: dataset.val_fraction={d.val_fraction:g} of {len(reviews['train'])} "
                f"training reviews leaves {why}; change dataset.val_fraction"
            )
        if d.train_samples:
            half = d.train_samples // 2
            train = [r for r in train if r[1] == 1][:half] + [r for r in train if r[1] == 0][:half]
            random.Random(d.seed).shuffle(train)
        test = [(text, label) for text, label, _ in reviews["test"]]
        return {"train": train, "val": val, "test": test}, list(self.classes)

    def count_columns(self, labels: list[int]) -> dict[str, int]:
        positives = sum(labels)
        return {"positives": positives, "negatives": len(labels) - positives}

    def describe(self, split: str, i: int) -> str:
        texts = self.shown.get(split)
        return texts[i] if texts else f"review #{i}"
