"""What every sequence-to-sequence task shares: character vocabularies, loss, decoding, metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dlrun.data.vocab import Vocab
from dlrun.errors import UserError, printable
from dlrun.models import build_model
from dlrun.models.seq2seq import Tokens
from dlrun.plan.config import RunConfig
from dlrun.rundir.layout import RunDir
from dlrun.tasks.base import Task
from dlrun.tasks.metrics import lengths_to_eos, levenshtein, mask_after_eos, sequence_counts


class Seq2SeqTask(Task):
    """A task whose examples are (source text, target text) pairs.

    Subclasses provide ``load_pairs`` and ``normalize``. Each split holds ``src``
    (N, S) and ``tgt`` (N, T) token ids, padded to the split's longest example
    (at most ``dataset.max_src_len`` / ``max_tgt_len``), each target ending in EOS.
    """

    model_kind = "seq2seq"
    metric_names = ("char_accuracy", "exact_match", "cer")

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.src_vocab: Vocab  # both set by prepare or load
        self.tgt_vocab: Vocab
        self.texts: dict[str, tuple[list[str], list[str]]] = {}
        # Optional label of each example (the module, in a mixture) for statistics.
        self.groups: dict[str, list[str]] = {}
        self.host_widths: dict[str, dict[str, torch.Tensor]] = {}

    def normalize(self, text: str) -> str:
        """The same normalization for training data and for prediction inputs."""
        return text

    def load_pairs(self, cache_dir: Path) -> dict[str, list[tuple[str, str]]]:
        raise NotImplementedError  # pragma: no cover - abstract

    @property
    def max_src_len(self) -> int:
        return self.cfg.dataset.max_src_len

    @property
    def max_tgt_len(self) -> int:
        return self.cfg.dataset.max_tgt_len

    def prepare(self, cache_dir: Path) -> None:
        pairs = self.load_pairs(cache_dir)
        self._check_lengths(pairs)
        train_src = [s for s, _ in pairs["train"]]
        train_tgt = [t for _, t in pairs["train"]]
        # Vocabularies come from the training split only: eval characters it
        # lacks become unk, as they would for a real user's input.
        self.src_vocab = Vocab.build(train_src)
        self.tgt_vocab = Vocab.build(train_tgt)
        for name, split in pairs.items():
            src = [s for s, _ in split]
            tgt = [t for _, t in split]
            self.texts[name] = (src, tgt)
            # Each split is as wide as its longest example, not the configured maximum.
            self.splits[name] = {
                "src": self.src_vocab.encode_batch(src, max([1, *map(len, src)]), eos=False),
                "tgt": self.tgt_vocab.encode_batch(tgt, max(map(len, tgt)) + 1, eos=True),
            }

    fold_rows = ("texts", "groups")

    def fold(self, k: int, folds: int, seed: int) -> None:
        """Training and validation padded to one width first (each split was as wide as its
        longest example); widths found for the old splits are forgotten."""
        if getattr(self, "_unfolded", None) is None:
            for key in ("src", "tgt"):
                width = max(self.splits[s][key].shape[1] for s in ("train", "val"))
                for s in ("train", "val"):
                    v = self.splits[s][key]
                    self.splits[s][key] = F.pad(v, (0, width - v.shape[1]), value=Vocab.pad_id)
        self.host_widths.clear()
        super().fold(k, folds, seed)

    def _check_lengths(self, pairs: dict[str, list[tuple[str, str]]]) -> None:
        for name, split in pairs.items():
            if not split:
                raise UserError(f"the {name} split is empty; check the dataset sizes and files")
            src = max((s for s, _ in split), key=len)
            tgt = max((t for _, t in split), key=len)
            if len(src) > self.max_src_len:
                raise UserError(
                    f"dataset.max_src_len={self.max_src_len} is too short for the data: the "
                    f"{name} split has a {len(src)}-character input ('{src[:60]}')"
                )
            if len(tgt) + 1 > self.max_tgt_len:
                raise UserError(
                    f"dataset.max_tgt_len={self.max_tgt_len} is too short for the data: the "
                    f"{name} split has a {len(tgt)}-character target (+1 for the end token)"
                )

    def stats(self) -> dict[str, Any]:
        """Per split (and per module in a mixture): examples, characters, mean lengths."""
        out: dict[str, Any] = {}
        for name, (src, tgt) in self.texts.items():
            if name == "train_subset":
                continue
            labels = self.groups.get(name) or [""] * len(src)
            for group in sorted(set(labels)):
                rows = [i for i, g in enumerate(labels) if g == group]
                q = sum(len(src[i]) for i in rows)
                a = sum(len(tgt[i]) for i in rows)
                out[f"{group}/{name}" if group else name] = {
                    "examples": len(rows),
                    "question_chars": q,
                    "answer_chars": a,
                    "mean_question_len": q / len(rows),
                    "mean_answer_len": a / len(rows),
                }
        out["vocab"] = {"source": len(self.src_vocab), "target": len(self.tgt_vocab)}
        return out

    def save(self, run: RunDir) -> None:
        self.src_vocab.save(run.file("vocab_src.json"))
        self.tgt_vocab.save(run.file("vocab_tgt.json"))

    def load(self, run: RunDir) -> None:
        self.src_vocab = Vocab.load(run.file("vocab_src.json"))
        self.tgt_vocab = Vocab.load(run.file("vocab_tgt.json"))

    def vocabularies(self) -> dict[str, list[str]]:
        return {"source vocabulary": self.src_vocab.itos, "target vocabulary": self.tgt_vocab.itos}

    def build_model(self) -> nn.Module:
        sizes = len(self.src_vocab), len(self.tgt_vocab)
        tokens = Tokens(*sizes, Vocab.pad_id, Vocab.sos_id, Vocab.eos_id)
        return build_model(self.cfg.model, tokens=tokens)

    @staticmethod
    def decoder_input(tgt: torch.Tensor) -> torch.Tensor:
        """SOS followed by the target shifted right by one."""
        sos = tgt.new_full((tgt.shape[0], 1), Vocab.sos_id)
        return torch.cat([sos, tgt[:, :-1]], dim=1)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(batch["src"], self.decoder_input(batch["tgt"]))
        return F.cross_entropy(
            logits.flatten(0, 1).float(), batch["tgt"].flatten(), ignore_index=Vocab.pad_id
        )

    def _widths(self, split: str) -> dict[str, torch.Tensor]:
        """Each row's length without padding, for src and tgt, on the host (found once)."""
        if split not in self.host_widths:
            self.host_widths[split] = {
                k: (v != Vocab.pad_id).sum(1).clamp(min=1).cpu()
                for k, v in self.splits[split].items()
            }
        return self.host_widths[split]

    def row_lengths(self, split: str) -> torch.Tensor:
        """Source plus target tokens of each pair: what a batch's cut width follows."""
        widths = self._widths(split)
        return widths["src"] + widths["tgt"]

    def batch(self, split: str, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The pairs at ``idx``, cut to the batch's longest source and target.

        Splits are padded to their longest example; a batch needs only its own
        longest, which saves most of the padding's compute. Padding is masked,
        so the cut changes no result. The widths are read on the host.
        """
        widths, rows = self._widths(split), idx.cpu()
        batch = super().batch(split, idx)
        return {k: v[:, : int(widths[k][rows].max())] for k, v in batch.items()}

    # Decoding a split with known targets stops this many tokens past its longest target
    # (EOS included): a prediction cannot be right beyond it, and an untrained model,
    # which never ends, would otherwise run to max_tgt_len at every evaluation.
    DECODE_MARGIN = 8

    def decode_len(self, split: str | None = None) -> int:
        """Most tokens to decode: ``max_tgt_len``, or less for a split whose targets are known."""
        if split is None:
            return self.max_tgt_len
        return min(self.max_tgt_len, self.splits[split]["tgt"].shape[1] + self.DECODE_MARGIN)

    def _decode(self, model: nn.Module, src: torch.Tensor, max_len: int) -> torch.Tensor:
        # The model's own methods (torch types nn.Module's attributes as tensors or modules).
        return model.generate(src, max_len, self.cfg.decode.beam_size)  # type: ignore[operator]

    def eval_order(self, split: str, rows: range) -> torch.Tensor:
        """``rows`` ordered by source width: evaluation batches then carry little padding."""
        widths = self._widths(split)["src"][rows.start : rows.stop]
        return torch.argsort(widths, stable=True) + rows.start

    def eval_sums(
        self, model: nn.Module, batch: dict[str, torch.Tensor], split: str
    ) -> dict[str, torch.Tensor]:
        src, tgt = batch["src"], batch["tgt"]
        beam = self.cfg.decode.beam_size
        # The model's own method, as in _decode.
        logits, pred = model.score_and_generate(  # type: ignore[operator]
            src, self.decoder_input(tgt), self.decode_len(split), beam
        )
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(), tgt.flatten(), ignore_index=Vocab.pad_id, reduction="sum"
        )
        tgt_len = lengths_to_eos(tgt, Vocab.eos_id)
        edits = levenshtein(pred, lengths_to_eos(pred, Vocab.eos_id), tgt, tgt_len).sum()
        counts = sequence_counts(pred, tgt, Vocab.pad_id, Vocab.eos_id)
        return {"loss": loss, **counts, "edits": edits, "target_chars": tgt_len.sum()}

    def metrics(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        return {
            # Per target token (characters + EOS); padding excluded.
            "loss": (totals["loss"] / totals["chars_total"]).item(),
            "char_accuracy": (totals["chars_correct"] / totals["chars_total"]).item(),
            "exact_match": (totals["exact"] / totals["count"]).item(),
            # Character error rate: edit distance over target length, summed over the split.
            "cer": (totals["edits"] / totals["target_chars"].clamp(min=1)).item(),
        }

    def samples(self, model: nn.Module, split: str, n: int) -> list[dict[str, Any]]:
        src, tgt = self.texts[split]
        data = self.splits[split]
        k = min(n * 20, len(src))  # look at more than n so that wrong ones can come first
        rows: list[dict[str, Any]] = []
        # Decoded a part at a time, until n are wrong: the first n wrong ones in data order
        # are then already found (a model early in training decodes a fifth of k).
        step = max(4 * n, 1)
        for start in range(0, k, step):
            part = range(start, min(start + step, k))
            preds = self._predict_ids(
                model, data["src"][part.start : part.stop], max_len=self.decode_len(split)
            )
            rows += [
                {"source": src[i], "target": tgt[i], "prediction": p, "correct": p == tgt[i]}
                for i, p in zip(part, preds)
            ]
            if sum(not r["correct"] for r in rows) >= n:
                break
        rows.sort(key=lambda r: r["correct"])  # stable: wrong first, then in data order
        return rows[:n]

    def _predict_ids(
        self, model: nn.Module, src: torch.Tensor, batch_size: int = 1024, max_len: int = 0
    ):
        out = []
        for start in range(0, src.shape[0], batch_size):
            ids = mask_after_eos(
                self._decode(model, src[start : start + batch_size], max_len or self.max_tgt_len),
                Vocab.eos_id,
                Vocab.pad_id,
            )
            out += [self.tgt_vocab.decode(row) for row in ids.tolist()]
        return out

    def predict(self, model: nn.Module, inputs: list[str], batch_size: int = 1024) -> list[str]:
        texts = [self.normalize(t) for t in inputs]
        too_long = [t for t in texts if len(t) > self.max_src_len]
        if too_long:
            raise UserError(
                f"input '{printable(too_long[0], 40)}' has {len(too_long[0]):,} characters; "
                "this model "
                f"reads at most dataset.max_src_len={self.max_src_len}"
            )
        device = next(model.parameters()).device
        width = max([1, *map(len, texts)])
        src = self.src_vocab.encode_batch(texts, width, eos=False).to(device)
        return self._predict_ids(model, src, batch_size)
