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

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain

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


class KeyCounts:
    """Keys counted chunk by chunk, as if the chunks were one array end to end, keeping
    only the distinct keys with their counts and first positions."""

    def __init__(self) -> None:
        self.seen = 0  # keys added so far: where the next chunk starts
        # (distinct keys in order, counts, first positions): the merged part first
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, keys: np.ndarray) -> None:
        distinct, counts, first = _distinct(keys)
        self.parts.append((distinct, counts, first + self.seen))
        self.seen += keys.size
        # Merge once the parts added since the last merge outgrow the merged one: each
        # key is merged a few times at most, so the cost stays in step with the data.
        if sum(p[0].size for p in self.parts[1:]) > self.parts[0][0].size:
            self._merge()

    def _merge(self) -> None:
        if len(self.parts) < 2:
            return
        keys, counts, first = (np.concatenate(p) for p in zip(*self.parts))
        if keys.size == 0:
            self.parts = [(keys, counts, first)]
            return
        order = np.argsort(keys, kind="stable")
        keys, counts, first = keys[order], counts[order], first[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        self.parts = [
            (
                keys[starts],
                np.add.reduceat(counts, starts),
                np.minimum.reduceat(first, starts),
            )
        ]

    def ranked(self) -> tuple[np.ndarray, np.ndarray]:
        """Distinct keys by count, most frequent first, ties in order of first appearance,
        and their counts."""
        self._merge()
        if not self.parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        keys, counts, first = self.parts[0]
        rank = np.lexsort((first, -counts))
        return keys[rank], counts[rank]


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
            sorted_keys = self.gram_keys
            at = np.minimum(np.searchsorted(sorted_keys, keys[long]), sorted_keys.size - 1)
            hit = sorted_keys[at] == keys[long]
            ids[long[hit]] = self.gram_rank[at[hit]]
        return ids


def distinct_per_doc(ids: np.ndarray, docs: np.ndarray, n_docs: int, size: int):
    """Each document's sorted distinct ids end to end, and how many each has."""
    pairs = np.sort(docs * (size + 1) + ids)  # a sort: np.unique hashes, slower here
    pairs = pairs[np.r_[True, pairs[1:] != pairs[:-1]]]
    doc, uid = np.divmod(pairs, size + 1)
    return uid, np.bincount(doc, minlength=n_docs).astype(np.int64)
