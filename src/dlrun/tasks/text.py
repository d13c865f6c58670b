"""Text classification: your own labelled texts (``task=text``) and the machinery that
``task=imdb`` shares.

``TextClassifier`` turns the texts of each split into token ids once (cached under
``paths.cache_dir``) in one of two forms, chosen by the model's ``text_input``:

- ``bag``: each text's sorted distinct n-gram ids (``bow_mlp``: a presence vector
  without building it, optionally weighted by naive-Bayes ratios);
- ``sequence``: each text's word ids in order, cut to ``dataset.max_tokens``
  (``text_cnn``).

Either way all texts of a split are one flat id tensor with a start and a length per
text, and a batch gathers its texts' ids end to end with offsets. A subclass says where
the texts come from (``read_splits``) and what identifies that source in the cache key
(``source``).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlrun import walk
from dlrun.data.cache import cache_key, cached
from dlrun.data.image_files import stratified_split
from dlrun.data.ngrams import KeyCounts, Lookup, NgramKeys, WordIndex, Words, distinct_per_doc
from dlrun.data.text import TOKENIZERS, WordVocab, is_text_file, read_labelled, with_ngrams
from dlrun.engine import checkpoint
from dlrun.engine.checkpoint import save_atomic
from dlrun.engine.device import give_back_freed_memory
from dlrun.errors import UserError, printable
from dlrun.models import build_model
from dlrun.plan.config import RunConfig
from dlrun.plan.schema import Named, spec
from dlrun.registry import TASKS, model_entry
from dlrun.rundir.layout import RunDir
from dlrun.rundir.read import read_json, read_torch
from dlrun.rundir.write import write_json
from dlrun.tasks.base import encoding_problems, path_problems
from dlrun.tasks.classify import ClassificationTask

PREP_VERSION = 3  # 2: classes.json and the sequence form; 3: ids in raw files, mapped
SHOWN_CHARS = 120  # of each held-out text, kept for samples.txt
# Texts tokenized and encoded at a time when the cache is built: the build holds one
# chunk's words and n-grams, never every text's (BENCHMARKS.md, "Texts at real size").
CHUNK_TEXTS = 4096


@dataclass(frozen=True)
class TextFeaturesConfig(Named):
    """The dataset keys every text task has: tokens, features, validation, batches."""

    tokenizer: str = spec(choices=list(TOKENIZERS))
    ngrams: int = spec(ge=1, le=3)  # bag models: 2 adds bigrams, 3 trigrams
    vocab_size: int = spec(ge=1)  # most frequent training tokens; id 0 = the rest
    max_tokens: int = spec(ge=1)  # sequence models: each text's first words
    val_fraction: float = spec(gt=0, lt=1)  # of the training texts, held out (seeded)
    seed: int = spec(ge=0)
    batch_size: int = spec(ge=1)
    # none: each distinct token counts 1; nb: it counts its naive-Bayes log-count ratio
    # from the training split (NBSVM, Wang & Manning 2012). Bag models only.
    feature_weights: str = spec(choices=["none", "nb"])
    nb_alpha: float = spec(gt=0)  # smoothing of the counts behind the nb ratios


def ids_file(split: str) -> str:
    """The cache's file of a split's ids (raw int64, end to end)."""
    return f"ids_{split}.bin"


def mapped_ids(path: Path, n: int) -> torch.Tensor:
    """The ``n`` int64 ids in file ``path``, memory-mapped copy-on-write (read from disk
    as used; the pages can leave RAM). ValueError if the file holds another number."""
    if path.stat().st_size != 8 * n:
        raise ValueError(f"{path.name}: {path.stat().st_size} bytes, expected {8 * n}")
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.from_file(str(path), shared=False, size=n, dtype=torch.int64)


def shorter(text: str) -> str:
    """The first ``SHOWN_CHARS`` characters of ``text`` on one line, … where it was cut."""
    return " ".join(text[:SHOWN_CHARS].split()) + ("…" if len(text) > SHOWN_CHARS else "")


def text_input(model_cfg: Any) -> str:
    """How the configured model reads a text: ``bag`` (distinct n-grams) or ``sequence``."""
    return model_entry(model_cfg.name).obj.text_input


def tokens(text: str, tokenizer: str, ngrams: int) -> list[str]:
    return with_ngrams(TOKENIZERS[tokenizer](text), ngrams)


def distinct_ids(docs: list[list[str]], vocab: WordVocab) -> dict[str, torch.Tensor]:
    """Each document's sorted distinct ids, end to end, with ``start`` and ``length``."""
    return _flat([sorted(set(vocab.encode(doc))) for doc in docs])


def sequence_ids(docs: list[list[str]], vocab: WordVocab, max_tokens: int) -> dict:
    """Each document's first ``max_tokens`` ids in order, end to end, with start and length."""
    return _flat([vocab.encode(doc[:max_tokens]) for doc in docs])


def _flat(lists: list[list[int]]) -> dict[str, torch.Tensor]:
    length = torch.tensor([len(s) for s in lists], dtype=torch.long)
    return {
        "start": torch.cumsum(length, 0) - length,
        "length": length,
        "ids": torch.tensor([i for s in lists for i in s], dtype=torch.long),
    }


def nb_ratios(
    ids: torch.Tensor,
    label: torch.Tensor,
    length: torch.Tensor,
    vocab_size: int,
    alpha: float,
    classes: int = 2,
) -> torch.Tensor:
    """Naive-Bayes log-count ratio of each token id: log((p/|p|) / (q/|q|)).

    p and q count the training texts of a class and of the other classes that contain
    the token, plus ``alpha`` (NBSVM, Wang & Manning 2012). Two classes: the ratio of
    class 1 (signed). More: each token's largest ratio of one class against the rest,
    in size (the first layer learns the signs). Id 0 (out of vocabulary) gets its
    ratio like any other token.
    """
    texts = class_counts(ids, label, length, vocab_size, max(classes, 2))
    every = texts.sum(0)

    def ratio(count: torch.Tensor) -> torch.Tensor:
        p, q = count + alpha, every - count + alpha
        return torch.log((p / p.sum()) / (q / q.sum()))

    if classes == 2:
        return ratio(texts[1]).float()
    return torch.stack([ratio(texts[c]).abs() for c in range(classes)]).amax(0).float()


def class_counts(
    ids: torch.Tensor, label: torch.Tensor, length: torch.Tensor, vocab_size: int, classes: int
) -> torch.Tensor:
    """How many texts of each class hold each id (``classes`` x ``vocab_size``, float64),
    ``CHUNK_TEXTS`` texts at a time (the ids may be a memory-mapped file)."""
    counts = torch.zeros(classes * vocab_size, dtype=torch.float64)
    end = torch.cumsum(length, 0)
    for a in range(0, len(length), CHUNK_TEXTS):
        b = min(a + CHUNK_TEXTS, len(length))
        first, last = int(end[a] - length[a]), int(end[b - 1])
        of = torch.repeat_interleave(label[a:b], length[a:b], output_size=last - first)
        counts += torch.bincount(of * vocab_size + ids[first:last], minlength=counts.numel())
    return counts.view(classes, vocab_size)


def sequences(words: Words, lookup: Lookup, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Each document's first ``max_tokens`` word ids (vocabulary ids) in order, end to end,
    and how many each keeps."""
    ids = lookup(words.ids)
    start = np.cumsum(words.lengths) - words.lengths
    position = np.arange(ids.size) - np.repeat(start, words.lengths)
    return ids[position < max_tokens], np.minimum(words.lengths, max_tokens)


class TextClassifier(ClassificationTask):
    """What ``task=text`` and ``task=imdb`` share; a subclass supplies ``read_splits``."""

    model_kind = "text"
    cache_name = "text"
    # Splits are flat id tensors with a start and length per text: folds cannot re-split
    # them (trainer.folds is refused at the config check).
    cross_validates = False
    # Options that change how the cached data are used, not the data: not in the cache key.
    not_cached: tuple[str, ...] = ("batch_size", "feature_weights", "nb_alpha")

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.flat: dict[str, torch.Tensor] = {}  # each split's ids, end to end
        self.host_lengths: dict[str, torch.Tensor] = {}
        self.vocab: WordVocab  # set by prepare or load
        self.shown: dict[str, list[str]] = {}
        self._stats: dict[str, Any] = {}
        self.feature_weights: torch.Tensor | None = None  # per token id, dataset.feature_weights

    # -- what a subclass provides --------------------------------------------------------
    def read_splits(self, path: Path) -> tuple[dict[str, list[tuple[str, int]]], list[str]]:
        """The (text, class index) rows of train, val and test, and the class names."""
        raise NotImplementedError  # pragma: no cover - abstract

    def source(self) -> tuple[Path, dict[str, Any]]:
        """The data's path and what identifies its contents in the cache key."""
        raise NotImplementedError  # pragma: no cover - abstract

    # A split's figures in stats.json beside its classes' counts: a class of one of these
    # names (or starting "class ") is counted as "class NAME", so that no key is lost.
    SPLIT_FIGURES = ("examples", "mean_words", "tokens", "oov_tokens")

    def count_columns(self, labels: list[int]) -> dict[str, int]:
        """A split's examples per class, for stats.json."""
        counts = np.bincount(labels, minlength=len(self.classes)).tolist()
        return {
            f"class {c}" if c in self.SPLIT_FIGURES or c.startswith("class ") else c: n
            for c, n in zip(self.classes, counts)
        }

    # -- data ------------------------------------------------------------------------
    def prepare(self, cache_dir: Path) -> None:
        d = self.cfg.dataset
        path, identity = self.source()
        key = {k: v for k, v in asdict(d).items() if k not in self.not_cached}
        key.update(identity, input=text_input(self.cfg.model))
        if key["input"] == "sequence":
            key.pop("ngrams")  # sequences are words; bags ignore max_tokens
        else:
            key.pop("max_tokens")
        data, _ = cached(
            Path(cache_dir).expanduser() / self.cache_name,
            cache_key(key, PREP_VERSION),
            lambda tmp: self._build(tmp, path),
            self._load_cached,
        )
        for split, tensors in data.items():
            self.flat[split] = tensors.pop("ids")
            self.splits[split] = tensors
        if d.feature_weights == "nb" and text_input(self.cfg.model) == "bag":
            train = self.splits["train"]
            self.feature_weights = nb_ratios(
                self.flat["train"],
                train["label"],
                train["length"],
                len(self.vocab),
                d.nb_alpha,
                len(self.classes),
            )

    def _build(self, out: Path, path: Path, chunk: int = CHUNK_TEXTS) -> None:
        """The texts at ``path`` tokenized and encoded into ``out``, ``chunk`` texts at a
        time: each split's ids end to end as a raw int64 file (``ids_file``), its labels,
        starts and lengths (data.pt), the vocabulary, classes, shown texts and statistics.
        Any ``chunk`` gives the same bytes: the ids and vocabulary of one whole build."""
        d = self.cfg.dataset
        splits, classes = self.read_splits(path)
        sequence = getattr(self.cfg, "model", None) is not None and (
            text_input(self.cfg.model) == "sequence"
        )
        labels = {
            s: torch.tensor([label for _, label in rows], dtype=torch.long)
            for s, rows in splits.items()
        }
        shown = {
            s: [shorter(t) for t, _ in rows]
            for s, rows in splits.items()
            if s not in self.not_tested
        }
        (out / "shown.json").write_text(json.dumps(shown))
        del shown
        # 1. Words become ids once, a chunk of texts at a time; the ids wait in a file
        # (int32) for the two passes below, so no pass holds every text's words.
        index, tokenize = WordIndex(), TOKENIZERS[d.tokenizer]
        lengths: dict[str, np.ndarray] = {}
        with tempfile.TemporaryFile(dir=out) as f:
            for split, rows in splits.items():
                parts = []
                for a in range(0, len(rows), chunk):
                    words = index.encode((t for t, _ in rows[a : a + chunk]), tokenize)
                    f.write(words.ids.astype(np.int32).tobytes())
                    parts.append(words.lengths)
                lengths[split] = np.concatenate(parts) if parts else np.zeros(0, np.int64)
            del splits, rows  # the texts: every word is in the file now
            give_back_freed_memory()
            if len(index.index) >= 2**31:
                raise ValueError(f"{len(index.index):,} distinct words: too many for int32 ids")
            grams = NgramKeys(max(1, len(index.index)), 1 if sequence else d.ngrams)
            tokens = {
                s: sum(int(np.maximum(n - k + 1, 0).sum()) for k in range(1, grams.n + 1))
                for s, n in lengths.items()
            }
            f.flush()
            f.seek(0)

            def chunks(split: str):
                """The split's Words, ``chunk`` texts at a time, read on from ``f``."""
                for a in range(0, len(lengths[split]), chunk):
                    n = lengths[split][a : a + chunk]
                    ids = np.fromfile(f, dtype=np.int32, count=int(n.sum()))
                    yield Words(ids.astype(np.int64), n)

            # 2. The training words (statistics) and n-grams counted, in files, for the
            # vocabulary: the most frequent training n-grams (words alone: the same).
            word_counts = KeyCounts(out, int(lengths["train"].sum()))
            gram_counts = KeyCounts(out, tokens["train"]) if grams.n > 1 else None
            for words in chunks("train"):
                word_counts.add(words.ids)
                if gram_counts is not None:
                    gram_counts.add(grams.of(words)[0])
            f.seek(0)
            word_ranking = word_counts.ranked()
            word_counts.close()
            if gram_counts is None:
                vocab_keys = word_ranking[0][: d.vocab_size]
            else:
                vocab_keys = gram_counts.ranked(d.vocab_size)[0]
                gram_counts.close()
            give_back_freed_memory()  # the counts' merges
            itos = index.words()
            vocab = WordVocab(grams.texts(vocab_keys, itos))
            lookup = Lookup(vocab_keys, grams.base)
            # 3. Each split's ids, written as they come.
            data, oov = {}, {}
            for split in lengths:
                kept, oov[split] = [], 0
                with open(out / ids_file(split), "wb") as ids_out:
                    for words in chunks(split):
                        if sequence:
                            flat, length = sequences(words, lookup, d.max_tokens)
                            oov[split] += int((flat == 0).sum())
                        else:
                            keys, docs = grams.of(words)
                            ids = lookup(keys)
                            oov[split] += int((ids == 0).sum())
                            flat, length = distinct_per_doc(
                                ids, docs, words.lengths.size, len(vocab)
                            )
                        ids_out.write(flat.astype(np.int64).tobytes())
                        kept.append(length)
                kept_length = torch.from_numpy(
                    np.concatenate(kept) if kept else np.zeros(0, np.int64)
                )
                data[split] = {
                    "label": labels[split],
                    "start": torch.cumsum(kept_length, 0) - kept_length,
                    "length": kept_length,
                }
        checkpoint.save(data, out / "data.pt")
        (out / "vocab.json").write_text(json.dumps(vocab.itos))
        (out / "classes.json").write_text(json.dumps(classes))
        self.classes = tuple(classes)
        stats = self.statistics(labels, lengths, tokens, oov, word_ranking, itos, len(vocab))
        (out / "stats.json").write_text(json.dumps(stats))

    def _load_cached(self, folder: Path) -> dict:
        data = torch.load(folder / "data.pt", weights_only=True)
        for split, tensors in data.items():
            tensors["ids"] = mapped_ids(folder / ids_file(split), int(tensors["length"].sum()))
        self.vocab = WordVocab(json.loads((folder / "vocab.json").read_text())[1:])
        self.classes = tuple(json.loads((folder / "classes.json").read_text()))
        self.shown = json.loads((folder / "shown.json").read_text())
        self._stats = json.loads((folder / "stats.json").read_text())
        return data

    def statistics(
        self,
        labels: dict[str, torch.Tensor],
        lengths: dict[str, np.ndarray],
        tokens: dict[str, int],
        oov: dict[str, int],
        word_ranking: tuple[np.ndarray, np.ndarray],
        itos: list[str],
        vocab_size: int,
    ) -> dict:
        """Examples per class, mean length, frequent and rare words, OOV tokens per split.

        Lengths and word ranks count the tokenizer's words; tokens and OOV count the
        tokens the model sees (n-grams included), OOV those outside the vocabulary.
        """
        out: dict[str, Any] = {}
        for split, label in labels.items():
            out[split] = {
                "examples": len(label),
                **self.count_columns(label.tolist()),
                "mean_words": int(lengths[split].sum()) / max(1, len(label)),
                "tokens": tokens[split],
                "oov_tokens": oov[split],
            }
        top, counts = word_ranking  # distinct training words, most frequent first
        pairs = [[itos[int(w)], int(c)] for w, c in zip(top, counts)]
        out["train_words"] = {
            "distinct": len(pairs),
            "most_frequent": pairs[:5],
            "least_frequent": pairs[-5:],
        }
        out["vocab_size"] = vocab_size
        return out

    def stats(self) -> dict[str, Any]:
        return self._stats

    def save(self, run: RunDir) -> None:
        write_json(run.file("vocab.json"), self.vocab.itos, indent=None)
        write_json(run.file("classes.json"), list(self.classes), indent=None)
        if self.feature_weights is not None:
            save_atomic(self.feature_weights, run.file("feature_weights.pt"))

    def load(self, run: RunDir) -> None:
        tokens = read_json(run.file("vocab.json"), list)
        if not tokens or not all(isinstance(t, str) for t in tokens):
            raise UserError(f"{run.file('vocab.json')}: not a dlrun vocabulary (a list of words)")
        self.vocab = WordVocab(tokens[1:])
        if run.file("classes.json").exists() or not self.classes:
            classes = read_json(run.file("classes.json"), list)
            if len(classes) < 2 or not all(isinstance(c, str) for c in classes):
                raise UserError(f"{run.file('classes.json')}: expected a list of class names")
            self.classes = tuple(classes)
        if self.feature_weights_used():
            weights = read_torch(run.file("feature_weights.pt"))
            if not isinstance(weights, torch.Tensor) or weights.shape != (len(self.vocab),):
                raise UserError(
                    f"{run.file('feature_weights.pt')}: not one weight per vocabulary word"
                )
            self.feature_weights = weights

    def feature_weights_used(self) -> bool:
        return self.cfg.dataset.feature_weights != "none" and text_input(self.cfg.model) == "bag"

    def data_bytes(self) -> int:
        """The splits' tensors and the ids, most of the data (``train_subset`` shares
        ``train``'s)."""
        ids = {v.data_ptr(): v.numel() * v.element_size() for v in self.flat.values()}
        return super().data_bytes() + sum(ids.values())

    def to(self, device: torch.device) -> None:
        super().to(device)
        # Streamed, the ids (most of the data) stay mapped from the cache's files on the host.
        if not self.streamed:
            self.flat = {k: v.to(device) for k, v in self.flat.items()}
        if self.feature_weights is not None:
            self.feature_weights = self.feature_weights.to(device)

    def add_train_subset(self, n: int) -> None:
        super().add_train_subset(n)  # slices label/start/length; the ids stay shared
        if n > 0:
            self.flat["train_subset"] = self.flat["train"]

    def batch(self, split: str, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The texts at ``idx`` as EmbeddingBag-style input: their ids end to end, offsets."""
        d = self.splits[split]
        # Lengths are also kept on the host: a batch's size is known without a device sync.
        if split not in self.host_lengths:
            self.host_lengths[split] = d["length"].cpu()
        total = int(self.host_lengths[split][idx.cpu()].sum())
        idx = idx.to(d["label"].device, non_blocking=True)
        start, length = d["start"][idx], d["length"][idx]
        offsets = torch.cumsum(length, 0) - length
        # Position of each id in the flat tensor: its text's start + its rank within it.
        pos = torch.arange(total, device=idx.device) + torch.repeat_interleave(
            start - offsets, length, output_size=total
        )
        ids = self.gather(self.flat[split], pos)
        return {"ids": ids, "offsets": offsets, "label": d["label"][idx], **self._weights(ids)}

    def _weights(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {} if self.feature_weights is None else {"weights": self.feature_weights[ids]}

    def describe(self, split: str, i: int) -> str:
        texts = self.shown.get(split)
        return texts[i] if texts else f"text #{i}"

    # -- model --------------------------------------------------------------------------
    def vocabularies(self) -> dict[str, list[str]]:
        return {"vocabulary": self.vocab.itos, "classes": list(self.classes)}

    def build_model(self) -> nn.Module:
        return build_model(self.cfg.model, vocab_size=len(self.vocab), classes=len(self.classes))

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(batch["ids"], batch["offsets"], batch.get("weights"))

    def encode(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        d = self.cfg.dataset
        if text_input(self.cfg.model) == "sequence":
            docs = [TOKENIZERS[d.tokenizer](text) for text in inputs]
            flat = sequence_ids(docs, self.vocab, d.max_tokens)
        else:
            docs = [tokens(text, d.tokenizer, d.ngrams) for text in inputs]
            flat = distinct_ids(docs, self.vocab)
        batch = {"ids": flat["ids"], "offsets": flat["start"]}
        if self.feature_weights is not None:
            batch["weights"] = self.feature_weights.cpu()[flat["ids"]]
        return batch


# -- task=text ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextDataConfig(TextFeaturesConfig):
    path: str = spec()  # a .csv/.tsv/.jsonl file, or a folder of class subfolders of .txt
    test_path: str | None = spec()  # held-out texts in the same form; null: split `path`
    text_column: str = spec()
    label_column: str = spec()
    encoding: str = spec()
    test_fraction: float = spec(ge=0, lt=1)  # of `path`, when there is no test_path


def _stat(path: Path) -> dict[str, Any]:
    """What identifies a file's or a folder's contents: names, sizes, modification times."""
    if path.is_dir():
        files = [f for _, paths in walk.class_folders(path, is_text_file) for f in paths]
        listing = [
            (str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in files
        ]
        return {"path": str(path), "files": listing}
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime": stat.st_mtime_ns}


@TASKS.register("text", schema=TextDataConfig)
class TextTask(TextClassifier):
    """Your own texts: any number of classes, labels as you wrote them."""

    @classmethod
    def check_config(cls, cfg: RunConfig) -> list[str]:
        problems = super().check_config(cfg) + encoding_problems(cfg.dataset)
        d = cfg.dataset
        held = d.val_fraction + (0 if d.test_path else d.test_fraction)
        if held >= 0.9:
            what = "dataset.val_fraction" + ("" if d.test_path else " + dataset.test_fraction")
            problems.append(f"{what} = {held:g}: leaves too little to train on; keep it under 0.9")
        if d.test_path is None and d.test_fraction == 0:
            problems.append(
                "dataset.test_fraction=0 with no dataset.test_path: nothing to test on; give "
                "dataset.test_path=FILE or a test_fraction such as 0.1"
            )
        if d.text_column == d.label_column:
            problems.append(
                f"dataset.text_column and dataset.label_column are both '{d.text_column}': "
                "the model would read the answer; name two different columns"
            )
        return problems

    @classmethod
    def check_data(cls, cfg: RunConfig) -> list[str]:
        d = cfg.dataset
        fix = "give a .csv, .tsv or .jsonl file of texts and labels, or a folder of class folders"
        return path_problems("dataset.path", d.path, "file or folder", fix) + path_problems(
            "dataset.test_path", d.test_path, "file or folder", "give the held-out texts"
        )

    def source(self) -> tuple[Path, dict[str, Any]]:
        d = self.cfg.dataset
        path = Path(d.path).expanduser().resolve()
        identity = {"path": _stat(path)}
        if d.test_path is not None:
            identity["test_path"] = _stat(Path(d.test_path).expanduser().resolve())
        return path, identity

    def read_splits(self, path: Path) -> tuple[dict[str, list[tuple[str, int]]], list[str]]:
        d = self.cfg.dataset
        rows = read_labelled(path, d.text_column, d.label_column, d.encoding)
        test_rows = None
        if d.test_path is not None:
            test_path = Path(d.test_path).expanduser().resolve()
            test_rows = read_labelled(test_path, d.text_column, d.label_column, d.encoding)
        classes = sorted({label for _, label in rows})
        if len(classes) < 2:
            raise UserError(
                f"{path}: every text has the label '{printable(classes[0])}' (column "
                f"'{printable(d.label_column)}'); a classifier needs at least two classes"
            )
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index[label] for _, label in rows])
        test_fraction = 0.0 if test_rows is not None else d.test_fraction
        parts = stratified_split(labels, d.val_fraction, test_fraction, d.seed)
        trained = np.bincount(labels[parts["train"]], minlength=len(classes))
        empty = not len(parts["val"]) or (test_rows is None and not len(parts["test"]))
        if empty or trained.min() == 0:
            left_out = [c for c, n in zip(classes, trained) if n == 0]
            why = (
                f"no '{printable(left_out[0])}' text left to train on"
                if left_out
                else ("nothing left to validate or test on")
            )
            raise UserError(
                f"{path}: {len(rows)} texts split by dataset.val_fraction={d.val_fraction:g} "
                f"and dataset.test_fraction={test_fraction:g} leave {why}; add texts or "
                "change the fractions"
            )
        splits = {s: [(rows[i][0], int(labels[i])) for i in parts[s]] for s in ("train", "val")}
        if test_rows is None:
            splits["test"] = [(rows[i][0], int(labels[i])) for i in parts["test"]]
        else:
            unknown = sorted({label for _, label in test_rows} - set(classes))
            if unknown:
                raise UserError(
                    f"{d.test_path}: label '{printable(unknown[0])}' is not among the training "
                    f"labels ({', '.join(map(printable, classes))})"
                )
            splits["test"] = [(text, index[label]) for text, label in test_rows]
        return splits, classes
