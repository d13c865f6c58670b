"""Bags of n-grams for a whole corpus with array operations instead of lists of strings.

Every word gets an integer id once (one dict lookup per token); an n-gram is
then one int64 key computed from its words' ids, so counting, choosing the
vocabulary and finding each document's distinct ids are numpy sorts. The
result is the same as ``with_ngrams`` + ``WordVocab.build`` + per-document
``sorted(set(...))``: the same vocabulary in the same order (most frequent
first, ties in order of first appearance) and the same ids. Counting works a chunk
of documents at a time (``KeyCounts``), so a corpus's words and n-grams need never
be held at once.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np


@dataclass
class Words:
    """The word ids of a split's documents end to end, and each document's length."""

    ids: np.ndarray  # int64
    lengths: np.ndarray  # int64, one per document


class WordIndex:
    """Word -> id, in order of first appearance."""

    def __init__(self) -> None:
        self.index: defaultdict[str, int] = defaultdict()
        self.index.default_factory = self.index.__len__  # a new word gets the next id

    def encode(self, texts: Iterable[str], tokenize: Callable[[str], list[str]]) -> Words:
        lookup = self.index.__getitem__
        chunks, lengths = [], []
        for text in texts:
            ids = list(map(lookup, tokenize(text)))
            chunks.append(ids)
            lengths.append(len(ids))
        flat = np.fromiter(chain.from_iterable(chunks), np.int64, sum(lengths))
        return Words(flat, np.asarray(lengths, dtype=np.int64))

    def words(self) -> list[str]:
        return list(self.index)


class NgramKeys:
    """Each n-gram (n <= ``ngrams``) of word ids as one int64 key; ``base`` > every word id.

    Keys of n-grams of different n never collide: unigrams are the word ids,
    bigrams start at ``base``, trigrams at ``base + base**2``.
    """

    def __init__(self, base: int, ngrams: int):
        if base**ngrams + base**2 + base >= 2**63:
            raise ValueError(f"{base} distinct words are too many for {ngrams}-gram keys")
        self.base, self.n = base, ngrams

    def offset(self, n: int) -> int:
        return sum(self.base**k for k in range(1, n))

    def of(self, words: Words) -> tuple[np.ndarray, np.ndarray]:
        """Keys in ``with_ngrams`` order (per document: its words, then its bigrams, ...),
        and the document each key belongs to. Placed by index arithmetic, no sort."""
        ids, lengths = words.ids, words.lengths
        doc = np.repeat(np.arange(lengths.size), lengths)
        start = np.cumsum(lengths) - lengths
        per_doc = sum(np.maximum(lengths - n + 1, 0) for n in range(1, self.n + 1))
        out_start = np.cumsum(per_doc) - per_doc
        keys = np.empty(int(per_doc.sum()), dtype=np.int64)
        keys[out_start[doc] + np.arange(ids.size) - start[doc]] = ids
        before = lengths.copy()  # keys of smaller n that come first in each document
        for n in range(2, self.n + 1):
            m = ids.size - n + 1
            if m <= 0:
                break
            pos = np.flatnonzero(doc[:m] == doc[n - 1 : n - 1 + m])  # n words of one document
            key = np.zeros(pos.size, dtype=np.int64)
            for k in range(n):
                key = key * self.base + ids[pos + k]
            d = doc[pos]
            keys[out_start[d] + before[d] + pos - start[d]] = key + self.offset(n)
            before = before + np.maximum(lengths - n + 1, 0)
        return keys, np.repeat(np.arange(lengths.size), per_doc)

    def texts(self, keys: np.ndarray, words: list[str]) -> list[str]:
        """The n-grams keys stand for, words joined by spaces (as ``with_ngrams``)."""
        n_of = np.ones(keys.size, dtype=np.int64)
        for n in range(2, self.n + 1):
            n_of[keys >= self.offset(n)] = n
        rest = keys - np.array([0, 0, *map(self.offset, range(2, self.n + 1))])[n_of]
        digits = []  # word ids, last word first
        for _ in range(self.n):
            rest, w = np.divmod(rest, self.base)
            digits.append(w.tolist())
        n_list = n_of.tolist()
        return [
            " ".join(words[digits[k][i]] for k in range(n - 1, -1, -1))
            for i, n in enumerate(n_list)
        ]


def _distinct(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct keys in order, how often each occurs, and where each occurs first."""
    n = keys.size
    if n == 0:
        return keys, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if int(keys.max()) < (2**63 - 1) // n:
        # Key and position in one int64: a plain sort (much faster than a stable argsort
        # of 64-bit keys) leaves each key's first appearance first.
        both = np.sort(keys * n + np.arange(n))
        ordered, first = np.divmod(both, n)
    else:
        order = np.argsort(keys, kind="stable")  # equal keys keep their order
        ordered, first = keys[order], order
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return ordered[starts], np.diff(np.r_[starts, ordered.size]), first[starts]


# Keys whose counts ``KeyCounts`` merges at a time (one file's worth): its memory
# (about 60 bytes a key at the merge) stays bounded whatever the size of the corpus.
KEYS_PER_BUCKET = 2**21
MAX_BUCKETS = 512  # files open at once
_RECORD = np.dtype([("key", np.int64), ("count", np.int64), ("first", np.int64)])


class KeyCounts:
    """Keys counted chunk by chunk as if the chunks were one array end to end, in files:
    each chunk's distinct keys, with their counts and first positions, go by a hash of
    the key to one of several temporary files in ``folder``, so that ``ranked`` merges
    one file at a time (external counting: memory bounded, time in step with the data).

    ``expected``: about how many keys will be added; it sets the number of files.
    """

    def __init__(self, folder: Path, expected: int, per_bucket: int | None = None):
        buckets = -(-expected // (per_bucket or KEYS_PER_BUCKET))
        self.files = [
            tempfile.TemporaryFile(dir=folder) for _ in range(max(1, min(MAX_BUCKETS, buckets)))
        ]
        self.seen = 0  # keys added so far: where the next chunk starts

    def add(self, keys: np.ndarray) -> None:
        distinct, counts, first = _distinct(keys)
        records = np.empty(distinct.size, dtype=_RECORD)
        records["key"], records["count"], records["first"] = distinct, counts, first + self.seen
        self.seen += keys.size
        n = len(self.files)
        # A multiplicative hash: n-gram keys of one word share low digits.
        bucket = (distinct.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
        bucket = (bucket % np.uint64(n)).astype(np.int64)
        order = np.argsort(bucket, kind="stable")
        bounds = np.searchsorted(bucket[order], np.arange(n + 1))
        records = records[order]
        for b, file in enumerate(self.files):
            file.write(records[bounds[b] : bounds[b + 1]].tobytes())

    def ranked(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``limit`` (default: all) distinct keys by count, most frequent first, ties in
        order of first appearance (``Counter.most_common``), and their counts."""
        empty = np.zeros(0, dtype=np.int64)
        best = (empty, empty, empty)  # the best so far: with each file's best, the best of all
        for file in self.files:
            file.flush()
            file.seek(0)
            records = np.fromfile(file, dtype=_RECORD)
            merged = _merged(records["key"], records["count"], records["first"])
            del records
            keys, counts, first = (np.concatenate(pair) for pair in zip(best, merged))
            top = np.lexsort((first, -counts))[:limit]
            best = (keys[top], counts[top], first[top])
        return best[0], best[1]

    def close(self) -> None:
        """Remove the files (they were never named: nothing is left if this is not called)."""
        for file in self.files:
            file.close()


def _merged(keys: np.ndarray, counts: np.ndarray, first: np.ndarray):
    """Each distinct key once, in order, with its counts summed and its first position."""
    if not keys.size:
        return keys, counts, first
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return (
        keys[starts],
        np.add.reduceat(counts[order], starts),
        np.minimum.reduceat(first[order], starts),
    )


class Lookup:
    """Vocabulary id of each key: 1 + its rank in ``vocab_keys``, 0 where it is absent.

    Words (keys below ``base``) are looked up in a dense table, longer n-grams by a
    binary search among the vocabulary's n-grams. Built once, used for every chunk.
    """

    def __init__(self, vocab_keys: np.ndarray, base: int):
        rank = np.arange(1, vocab_keys.size + 1)
        word = vocab_keys < base
        self.base = base
        self.table = np.zeros(base, dtype=np.int64)
        self.table[vocab_keys[word]] = rank[word]
        gram_keys, gram_rank = vocab_keys[~word], rank[~word]
        order = np.argsort(gram_keys)
        self.gram_keys, self.gram_rank = gram_keys[order], gram_rank[order]

    def __call__(self, keys: np.ndarray) -> np.ndarray:
        ids = np.zeros(keys.size, dtype=np.int64)
        short = keys < self.base
        ids[short] = self.table[keys[short]]
        long = np.flatnonzero(~short)
        if self.gram_keys.size and long.size:
            at = np.searchsorted(self.gram_keys, keys[long])
            at = np.minimum(at, self.gram_keys.size - 1)
            hit = self.gram_keys[at] == keys[long]
            ids[long[hit]] = self.gram_rank[at[hit]]
        return ids


def distinct_per_doc(ids: np.ndarray, docs: np.ndarray, n_docs: int, size: int):
    """Each document's sorted distinct ids end to end, and how many each has."""
    pairs = np.sort(docs * (size + 1) + ids)  # a sort: np.unique hashes, slower here
    pairs = pairs[np.r_[True, pairs[1:] != pairs[:-1]]]
    doc, uid = np.divmod(pairs, size + 1)
    return uid, np.bincount(doc, minlength=n_docs).astype(np.int64)
