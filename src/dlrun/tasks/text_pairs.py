"""Text pairs: character-level translation of any parallel text a user brings.

One TSV file, one ``source<TAB>target`` pair per line (more columns are
ignored, so Tatoeba/ManyThings files such as ``spa.txt`` work as they are;
``dataset.reverse=true`` translates the second column into the first). The
pairs are split into train/val/test by a seeded shuffle; pairs longer than
``dataset.max_src_len`` / ``max_tgt_len`` are left out, and the count is logged.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from dlrun.data.text import read_text
from dlrun.errors import UserError, printable
from dlrun.plan.config import RunConfig
from dlrun.plan.schema import Named, spec
from dlrun.registry import TASKS
from dlrun.tasks.base import encoding_problems, held_out_count, path_problems, split_problems
from dlrun.tasks.seq2seq import Seq2SeqTask

log = logging.getLogger("dlrun")


@dataclass(frozen=True)
class TextPairsDataConfig(Named):
    path: str = spec()
    reverse: bool = spec()  # true: the second column is the source
    lowercase: bool = spec()
    max_pairs: int | None = spec(ge=3)  # the first N pairs of the file (null: all)
    val_fraction: float = spec(gt=0, lt=1)
    test_fraction: float = spec(gt=0, lt=1)
    seed: int = spec(ge=0)
    batch_size: int = spec(ge=1)
    max_src_len: int = spec(ge=1)
    max_tgt_len: int = spec(ge=2)  # characters + the end token
    encoding: str = spec()  # of the TSV file (latin-1, cp1252...)


def read_pairs(path: Path, reverse: bool = False, encoding: str = "utf-8") -> list[tuple[str, str]]:
    """(source, target) pairs of a TSV; blank lines skipped, a line without a tab is an error."""
    pairs = []
    text = read_text(path, encoding, key="dataset.encoding")
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) < 2:
            raise UserError(
                f"{path}, line {number}: expected source<TAB>target, found no tab "
                f"('{printable(line, 60)}')"
            )
        src, tgt = columns[0].strip(), columns[1].strip()
        pairs.append((tgt, src) if reverse else (src, tgt))
    return pairs


@TASKS.register("text_pairs", schema=TextPairsDataConfig)
class TextPairsTask(Seq2SeqTask):
    @classmethod
    def check_config(cls, cfg: RunConfig) -> list[str]:
        problems = super().check_config(cfg)
        d = cfg.dataset
        return problems + encoding_problems(d) + split_problems(d, "pairs")

    @classmethod
    def check_data(cls, cfg: RunConfig) -> list[str]:
        fix = (
            "give a TSV of source<TAB>target lines, e.g. dataset.path=~/data/spa.txt "
            "(from manythings.org/anki)"
        )
        return path_problems("dataset.path", cfg.dataset.path, "file", fix)

    def normalize(self, text: str) -> str:
        text = " ".join(text.split())
        return text.lower() if self.cfg.dataset.lowercase else text

    def load_pairs(self, cache_dir: Path) -> dict[str, list[tuple[str, str]]]:
        d = self.cfg.dataset
        path = Path(d.path).expanduser()
        pairs = read_pairs(path, d.reverse, d.encoding)[: d.max_pairs]
        pairs = [(self.normalize(s), self.normalize(t)) for s, t in pairs]
        kept = [
            (s, t)
            for s, t in pairs
            if s and t and len(s) <= d.max_src_len and len(t) < d.max_tgt_len
        ]
        if len(kept) < len(pairs):
            log.info(
                "text_pairs: left out %d of %d pairs longer than dataset.max_src_len=%d / "
                "max_tgt_len=%d (or empty)",
                len(pairs) - len(kept),
                len(pairs),
                d.max_src_len,
                d.max_tgt_len,
            )
        order = list(range(len(kept)))
        random.Random(d.seed).shuffle(order)
        n_test = held_out_count(len(kept), d.test_fraction)
        n_val = held_out_count(len(kept), d.val_fraction)
        if len(kept) < n_test + n_val + 1:
            raise UserError(
                f"{path}: {len(kept)} usable pairs are too few to split into train, val and test"
            )
        shuffled = [kept[i] for i in order]
        return {
            "train": shuffled[n_test + n_val :],
            "val": shuffled[n_test : n_test + n_val],
            "test": shuffled[:n_test],
        }
