"""IMDB: review sentiment with bag-of-words models (seed 003).

Reviews come from the aclImdb folder or the official tarball at
``dataset.path`` (``dataset.download=true`` fetches the tarball there). Each
review becomes the set of its distinct token ids: the seed's one-hot presence
vector without building it. All reviews of a split are one flat id tensor
with a start and a length per review; a batch gathers its reviews' ids for
``nn.EmbeddingBag``.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlrun.data.cache import cache_key, cached
from dlrun.data.download import download
from dlrun.data.ngrams import NgramKeys, WordIndex, distinct_per_doc, lookup, ranked
from dlrun.data.text import TOKENIZERS, WordVocab, read_aclimdb, with_ngrams
from dlrun.engine.checkpoint import save_atomic
from dlrun.errors import UserError
from dlrun.models import build_model
from dlrun.plan.config import RunConfig
from dlrun.plan.schema import Named, spec
from dlrun.registry import TASKS
from dlrun.rundir.layout import RunDir
from dlrun.rundir.read import read_json, read_torch
from dlrun.rundir.write import write_json
from dlrun.tasks.base import memory_mapped, path_problems
from dlrun.tasks.classify import ClassificationTask

URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
# What to do when dataset.path names nothing.
WHERE = (
    "point it at the aclImdb folder or aclImdb_v1.tar.gz, or add dataset.download=true "
    "to fetch the official tarball (84 MB) to that path"
)
PREP_VERSION = 1  # the array-based build writes the same files as version 1
SHOWN_CHARS = 120  # of each test review, kept for samples.txt


@dataclass(frozen=True)
class ImdbDataConfig(Named):
    path: str = spec()  # the aclImdb folder or the official tarball
    download: bool = spec()  # fetch the official tarball to `path` if it is missing
    tokenizer: str = spec(choices=list(TOKENIZERS))
    ngrams: int = spec(ge=1, le=3)  # 2 adds bigrams, 3 trigrams
    vocab_size: int = spec(ge=1)  # most frequent training tokens; id 0 = the rest
    val_size: int = spec(ge=1)  # held out of the training reviews
    train_samples: int | None = spec(ge=2)  # balanced subsample (seed I.3.b: 200)
    seed: int = spec(ge=0)
    batch_size: int = spec(ge=1)
    # none: each distinct token counts 1 (the seed's one-hot input); nb: it counts its
    # naive-Bayes log-count ratio from the training split (NBSVM, Wang & Manning 2012).
    feature_weights: str = spec(choices=["none", "nb"])
    nb_alpha: float = spec(gt=0)  # smoothing of the counts behind the nb ratios


# Options that change how the cached data are used, not the data: not in the cache key.
NOT_CACHED = ("batch_size", "download", "feature_weights", "nb_alpha")


def tokens(text: str, tokenizer: str, ngrams: int) -> list[str]:
    return with_ngrams(TOKENIZERS[tokenizer](text), ngrams)


def distinct_ids(docs: list[list[str]], vocab: WordVocab) -> dict[str, torch.Tensor]:
    """Each document's sorted distinct ids, end to end, with ``start`` and ``length``."""
    sets = [sorted(set(vocab.encode(doc))) for doc in docs]
    length = torch.tensor([len(s) for s in sets], dtype=torch.long)
    return {
        "start": torch.cumsum(length, 0) - length,
        "length": length,
        "ids": torch.tensor([i for s in sets for i in s], dtype=torch.long),
    }


@TASKS.register("imdb", schema=ImdbDataConfig)
class ImdbTask(ClassificationTask):
    model_kind = "bag_of_words"
    classes = ("negative", "positive")

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.flat: dict[str, torch.Tensor] = {}  # each split's distinct ids, end to end
        self.host_lengths: dict[str, torch.Tensor] = {}
        self.vocab: WordVocab | None = None
        self.shown: dict[str, list[str]] = {}
        self._stats: dict[str, Any] = {}
        self.feature_weights: torch.Tensor | None = None  # per token id, dataset.feature_weights

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

    # -- data ------------------------------------------------------------------------
    def prepare(self, cache_dir: Path) -> None:
        d = self.cfg.dataset
        path = Path(d.path).expanduser().resolve()
        if d.download:
            download(URL, path, MD5)
        stat = path.stat()
        key = {k: v for k, v in asdict(d).items() if k not in NOT_CACHED}
        key.update(path=str(path), size=stat.st_size, mtime=stat.st_mtime)
        data, _ = cached(
            Path(cache_dir).expanduser() / "imdb",
            cache_key(key, PREP_VERSION),
            lambda tmp: self._build(tmp, path),
            self._load_cached,
        )
        for split, tensors in data.items():
            self.flat[split] = tensors.pop("ids")
            self.splits[split] = tensors
        if d.feature_weights == "nb":
            train = self.splits["train"]
            self.feature_weights = nb_ratios(
                self.flat["train"], train["label"], train["length"], len(self.vocab), d.nb_alpha
            )

    def _build(self, out: Path, path: Path) -> None:
        d = self.cfg.dataset
        reviews = read_aclimdb(path)
        train = list(reviews["train"])
        random.Random(d.seed).shuffle(train)
        val, train = train[: d.val_size], train[d.val_size :]
        if len({label for _, label, _ in train}) < 2:
            raise UserError(
                f"{path}: {len(reviews['train'])} training reviews leave too few for training "
                f"after dataset.val_size={d.val_size} (both classes are needed); lower "
                "dataset.val_size"
            )
        if d.train_samples:
            half = d.train_samples // 2
            train = [r for r in train if r[1] == 1][:half] + [r for r in train if r[1] == 0][:half]
            random.Random(d.seed).shuffle(train)
        splits = {"train": train, "val": val, "test": reviews["test"]}
        # Words become ids once; n-grams are int64 keys of those ids, counted by numpy.
        index = WordIndex()
        tokenize = TOKENIZERS[d.tokenizer]
        words = {s: index.encode((t for t, _, _ in rows), tokenize) for s, rows in splits.items()}
        grams = NgramKeys(max(1, len(index.index)), d.ngrams)
        keys = {s: grams.of(w) for s, w in words.items()}
        vocab_keys, _ = ranked(keys["train"][0])
        vocab_keys = vocab_keys[: d.vocab_size]
        itos = index.words()
        vocab = WordVocab(grams.texts(vocab_keys, itos))
        data, oov = {}, {}
        for split, rows in splits.items():
            split_keys, docs = keys[split]
            ids = lookup(split_keys, vocab_keys, grams.base)
            oov[split] = int((ids == 0).sum())
            flat, length = distinct_per_doc(ids, docs, len(rows), len(vocab))
            length = torch.from_numpy(length)
            data[split] = {
                "label": torch.tensor([label for _, label, _ in rows], dtype=torch.long),
                "start": torch.cumsum(length, 0) - length,
                "length": length,
                "ids": torch.from_numpy(flat),
            }
        torch.save(data, out / "data.pt")
        (out / "vocab.json").write_text(json.dumps(vocab.itos))
        shown = {"test": [" ".join(t[:SHOWN_CHARS].split()) for t, _, _ in splits["test"]]}
        (out / "shown.json").write_text(json.dumps(shown))
        stats = statistics(words, keys, oov, splits, itos, len(vocab))
        (out / "stats.json").write_text(json.dumps(stats))

    def _load_cached(self, folder: Path) -> dict:
        data = torch.load(folder / "data.pt", weights_only=True)
        self.vocab = WordVocab(json.loads((folder / "vocab.json").read_text())[1:])
        self.shown = json.loads((folder / "shown.json").read_text())
        self._stats = json.loads((folder / "stats.json").read_text())
        return data

    def stats(self) -> dict[str, Any]:
        return self._stats

    def save(self, run: RunDir) -> None:
        write_json(run.file("vocab.json"), self.vocab.itos, indent=None)
        if self.feature_weights is not None:
            save_atomic(self.feature_weights, run.file("feature_weights.pt"))

    def load(self, run: RunDir) -> None:
        tokens = read_json(run.file("vocab.json"), list)
        if not tokens or not all(isinstance(t, str) for t in tokens):
            raise UserError(f"{run.file('vocab.json')}: not a dlrun vocabulary (a list of words)")
        self.vocab = WordVocab(tokens[1:])
        if self.cfg.dataset.feature_weights != "none":
            weights = read_torch(run.file("feature_weights.pt"))
            if not isinstance(weights, torch.Tensor) or weights.shape != (len(self.vocab),):
                raise UserError(
                    f"{run.file('feature_weights.pt')}: not one weight per vocabulary word"
                )
            self.feature_weights = weights

    def to(self, device: torch.device) -> None:
        super().to(device)
        if self.streamed:  # the ids, most of the data, stay memory-mapped on the host
            folder = Path(self.cfg.paths.cache_dir).expanduser() / "stream"
            own = {s: {"ids": v} for s, v in self.flat.items() if s != "train_subset"}
            mapped = memory_mapped(own, folder, 0)
            self.flat = {s: mapped.get(s, mapped["train"])["ids"] for s in self.flat}
        else:
            self.flat = {k: v.to(device) for k, v in self.flat.items()}
        if self.feature_weights is not None:
            self.feature_weights = self.feature_weights.to(device)

    def add_train_subset(self, n: int) -> None:
        super().add_train_subset(n)  # slices label/start/length; the ids stay shared
        if n > 0:
            self.flat["train_subset"] = self.flat["train"]

    def batch(self, split: str, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The reviews at ``idx`` as EmbeddingBag input: their ids end to end, and offsets."""
        d = self.splits[split]
        # Lengths are also kept on the host: a batch's size is known without a device sync.
        if split not in self.host_lengths:
            self.host_lengths[split] = d["length"].cpu()
        total = int(self.host_lengths[split][idx.cpu()].sum())
        idx = idx.to(d["label"].device, non_blocking=True)
        start, length = d["start"][idx], d["length"][idx]
        offsets = torch.cumsum(length, 0) - length
        # Position of each id in the flat tensor: its review's start + its rank within it.
        pos = torch.arange(total, device=idx.device) + torch.repeat_interleave(
            start - offsets, length, output_size=total
        )
        ids = self.gather(self.flat[split], pos)
        return {"ids": ids, "offsets": offsets, "label": d["label"][idx], **self._weights(ids)}

    def _weights(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {} if self.feature_weights is None else {"weights": self.feature_weights[ids]}

    def describe(self, split: str, i: int) -> str:
        texts = self.shown.get(split)
        return texts[i] + "…" if texts else f"review #{i}"

    # -- model --------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        return build_model(self.cfg.model, vocab_size=len(self.vocab))

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(batch["ids"], batch["offsets"], batch.get("weights"))

    def encode(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        d = self.cfg.dataset
        docs = [tokens(text, d.tokenizer, d.ngrams) for text in inputs]
        flat = distinct_ids(docs, self.vocab)
        batch = {"ids": flat["ids"], "offsets": flat["start"]}
        if self.feature_weights is not None:
            batch["weights"] = self.feature_weights.cpu()[flat["ids"]]
        return batch


def nb_ratios(
    ids: torch.Tensor, label: torch.Tensor, length: torch.Tensor, vocab_size: int, alpha: float
) -> torch.Tensor:
    """Naive-Bayes log-count ratio of each token id: log((p/|p|) / (q/|q|)).

    p and q count the positive and negative training reviews that contain the
    token, plus ``alpha`` (NBSVM, Wang & Manning 2012). Id 0 (out of
    vocabulary) gets its ratio like any other token.
    """
    positive = torch.repeat_interleave(label, length).to(torch.float64)
    p = torch.zeros(vocab_size, dtype=torch.float64).index_add_(0, ids, positive) + alpha
    q = torch.zeros(vocab_size, dtype=torch.float64).index_add_(0, ids, 1 - positive) + alpha
    return torch.log((p / p.sum()) / (q / q.sum())).float()


def statistics(words, keys, oov, splits, itos: list[str], vocab_size: int) -> dict[str, Any]:
    """Seed 003, section I: class counts, mean length, frequent and rare words, OOV tokens.

    Lengths and word ranks count the tokenizer's words; OOV counts the tokens
    the model sees (n-grams included) that fall outside the vocabulary.
    """
    out: dict[str, Any] = {}
    for split, rows in splits.items():
        positives = sum(label for _, label, _ in rows)
        out[split] = {
            "examples": len(rows),
            "positives": positives,
            "negatives": len(rows) - positives,
            "mean_words": int(words[split].lengths.sum()) / max(1, len(rows)),
            "tokens": int(keys[split][0].size),
            "oov_tokens": oov[split],
        }
    top, counts = ranked(words["train"].ids)
    pairs = [[itos[int(w)], int(c)] for w, c in zip(top, counts)]
    out["train_words"] = {
        "distinct": len(pairs),
        "most_frequent": pairs[:5],
        "least_frequent": pairs[-5:],
    }
    out["vocab_size"] = vocab_size
    return out
