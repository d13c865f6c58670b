"""What every classification task shares: loss, metrics, confusion matrix, prediction.

A subclass supplies the data (``prepare``, ``batch``), how a model turns a
batch into logits (``logits``), how to show one example (``describe``) and
how to encode new inputs (``encode``). Models may emit one logit (binary,
BCEWithLogits) or one per class (cross-entropy).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dlrun.engine.distributed import SINGLE, Dist
from dlrun.tasks.base import Task


def classification_loss(
    logits: torch.Tensor, label: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """BCEWithLogits for one logit, cross-entropy for several; in nats either way."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(
            logits[:, 0].float(), label.float(), reduction=reduction
        )
    return F.cross_entropy(logits.float(), label, reduction=reduction)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(B, classes) probabilities; one logit means P(class 1) = sigmoid(logit)."""
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits.float())
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits.float(), dim=1)


class ClassificationTask(Task):
    metric_names = ("accuracy", "perplexity")
    classes: tuple[str, ...] = ()

    # -- what a subclass provides ----------------------------------------------------
    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def describe(self, split: str, i: int) -> str:
        """One example of ``split`` as a short line for samples.txt."""
        return f"#{i}"

    def encode(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        """New inputs (texts, file names) as a batch on the CPU."""
        raise NotImplementedError  # pragma: no cover - abstract

    # -- shared ------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return classification_loss(self.logits(model, batch), batch["label"])

    def _batches(self, split: str, batch_size: int, rows: range | None = None):
        rows = range(self.size(split)) if rows is None else rows
        device = self.splits[split]["label"].device
        for start in range(rows.start, rows.stop, batch_size):
            idx = torch.arange(start, min(start + batch_size, rows.stop), device=device)
            yield idx, self.batch(split, idx)

    def _pass(self, model: nn.Module, split: str, batch_size: int, rows: range | None = None):
        """Summed loss, confusion matrix (true x predicted) and predictions of ``rows``
        (default: the whole split), on the device."""
        k = len(self.classes)
        device = self.splits[split]["label"].device
        loss = torch.zeros((), device=device)
        confusion = torch.zeros(k * k, dtype=torch.long, device=device)
        predictions = [torch.zeros(0, dtype=torch.long, device=device)]  # a rank may have none
        for _, b in self._batches(split, batch_size, rows):
            logits = self.logits(model, b)
            loss += classification_loss(logits, b["label"], reduction="sum")
            pred = probabilities(logits).argmax(1)
            confusion += torch.bincount(b["label"] * k + pred, minlength=k * k)
            predictions.append(pred)
        return loss, confusion.view(k, k), torch.cat(predictions)

    def evaluate(
        self, model: nn.Module, split: str, batch_size: int, dist: Dist = SINGLE
    ) -> dict[str, float]:
        n = self.size(split)
        loss, confusion, _ = self._pass(model, split, batch_size, dist.rows(n))
        loss, confusion = dist.sum({"loss": loss, "confusion": confusion}).values()
        mean = (loss / n).item()
        # Perplexity exp(cross-entropy in nats): 2 for a coin flip between two classes.
        return {
            "loss": mean,
            "accuracy": (confusion.trace() / n).item(),
            "perplexity": math.exp(min(mean, 700.0)),
        }

    def samples(self, model: nn.Module, split: str, n: int) -> list[dict[str, Any]]:
        if n == 0 or split not in self.splits:
            return []
        _, _, pred = self._pass(model, split, 1024)
        label = self.splits[split]["label"]
        order = torch.argsort((pred == label).int(), stable=True)[:n].tolist()
        pred, label = pred.tolist(), label.tolist()
        return [
            {
                "correct": pred[i] == label[i],
                "source": self.describe(split, i),
                "target": self.classes[label[i]],
                "prediction": self.classes[pred[i]],
            }
            for i in order
        ]

    def report(self, model: nn.Module, run_dir: Path) -> None:
        """Per-class accuracy (per_class.json) and a confusion-matrix figure per test split."""
        from dlrun.engine.plots import plot_confusion

        out = {}
        for split in self.test_splits:
            _, confusion, _ = self._pass(model, split, 1024)
            confusion = confusion.cpu()
            totals = confusion.sum(1).clamp(min=1)
            out[split] = {
                "per_class_accuracy": dict(
                    zip(self.classes, (confusion.diag() / totals).tolist(), strict=True)
                ),
                "confusion": confusion.tolist(),
            }
            plot_confusion(confusion, self.classes, run_dir / f"confusion_{split}.png", split)
        (run_dir / "per_class.json").write_text(json.dumps(out, indent=2) + "\n")

    def predict(self, model: nn.Module, inputs: list[str], batch_size: int) -> list[str]:
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(inputs), batch_size):
            batch = self.encode(inputs[start : start + batch_size])
            batch = {k: v.to(device) for k, v in batch.items()}
            p, label = probabilities(self.logits(model, batch)).max(1)
            out += [f"{self.classes[c]}\t{q:.4f}" for c, q in zip(label.tolist(), p.tolist())]
        return out
