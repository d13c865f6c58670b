"""Character vocabularies with pad/sos/eos/unk; unseen characters map to unk."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from dlrun.errors import UserError
from dlrun.rundir.write import write_text_atomic

PAD, SOS, EOS, UNK = "<pad>", "<sos>", "<eos>", "<unk>"
SPECIALS = (PAD, SOS, EOS, UNK)


class Vocab:
    """Maps tokens (here: characters) to ids. Ids 0-3 are pad, sos, eos, unk."""

    pad_id, sos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, tokens: Iterable[str]):
        self.itos = list(SPECIALS) + [t for t in tokens if t not in SPECIALS]
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, texts: Iterable[str]) -> Vocab:
        """A vocabulary of every character in ``texts``, in sorted order."""
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        return cls(sorted(chars))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(c, self.unk_id) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """Characters up to the first EOS; pad and sos are dropped, unk shows as '?'."""
        out = []
        for i in ids:
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.sos_id):
                continue
            out.append("?" if i == self.unk_id else self.itos[i])
        return "".join(out)

    def encode_batch(self, texts: list[str], length: int, eos: bool) -> torch.Tensor:
        """(N, length) int64 tensor, right-padded; ``eos`` appends the end token.

        Vectorized: a fixed-width unicode array is a (N, width) grid of code
        points (0 where a string ended), mapped to ids through a lookup table.
        """
        width = max(1, length - int(eos))
        points = np.array(texts, dtype=f"<U{width}").view(np.uint32).reshape(len(texts), width)
        top = int(points.max(initial=0))
        table = np.full(top + 1, self.unk_id, dtype=np.int64)
        table[0] = self.pad_id
        for token, i in self.stoi.items():
            if len(token) == 1 and ord(token) <= top:
                table[ord(token)] = i
        ids = np.full((len(texts), length), self.pad_id, dtype=np.int64)
        ids[:, :width] = table[points]
        if eos:
            ends = (points != 0).sum(axis=1)
            ids[np.arange(len(texts)), ends] = self.eos_id
        return torch.from_numpy(ids)

    def save(self, path: Path) -> None:
        write_text_atomic(path, json.dumps(self.itos, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> Vocab:
        from dlrun.rundir.read import read_json

        itos = read_json(path, list)
        if list(itos[: len(SPECIALS)]) != list(SPECIALS) or not all(
            isinstance(t, str) for t in itos
        ):
            raise UserError(f"{path}: not a dlrun vocabulary (a JSON list of tokens)")
        return cls(itos[len(SPECIALS) :])
