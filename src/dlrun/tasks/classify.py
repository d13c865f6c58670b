"""What every classification task shares: loss, metrics, confusion matrix, prediction.

A subclass supplies the data (``prepare``, ``batch``), how a model turns a
batch into logits (``logits``), how to show one example (``describe``) and
how to encode new inputs (``encode``). Models may emit one logit (binary,
BCEWithLogits) or one per class (cross-entropy).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from dlrun.rundir.layout import RunDir
from dlrun.rundir.write import write_json
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
    metric_names: ClassVar[tuple[str, ...]] = ("accuracy", "perplexity")
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

    def eval_sums(
        self, model: nn.Module, batch: dict[str, torch.Tensor], split: str
    ) -> dict[str, torch.Tensor]:
        """Summed loss and the confusion matrix (true x predicted, flattened)."""
        k = len(self.classes)
        logits = self.logits(model, batch)
        pred = probabilities(logits).argmax(1)
        return {
            "loss": classification_loss(logits, batch["label"], reduction="sum"),
            "confusion": torch.bincount(batch["label"] * k + pred, minlength=k * k),
        }

    def metrics(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        confusion = totals["confusion"]
        n = confusion.sum().clamp(min=1)
        mean = (totals["loss"] / n).item()
        # Perplexity exp(cross-entropy in nats): 2 for a coin flip between two classes.
        return {
            "loss": mean,
            "accuracy": (confusion.view(len(self.classes), -1).trace() / n).item(),
            "perplexity": math.exp(min(mean, 700.0)),
        }

    def _predictions(self, model: nn.Module, split: str, batch_size: int = 1024) -> torch.Tensor:
        """The predicted class of every example of ``split``, in stored order."""
        device = self.splits[split]["label"].device
        out = [torch.zeros(0, dtype=torch.long, device=device)]
        for start in range(0, self.size(split), batch_size):
            idx = torch.arange(start, min(start + batch_size, self.size(split)))
            out.append(probabilities(self.logits(model, self.batch(split, idx))).argmax(1))
        return torch.cat(out)

    def samples(self, model: nn.Module, split: str, n: int) -> list[dict[str, Any]]:
        if n == 0 or split not in self.splits:
            return []
        pred = self._predictions(model, split)
        label = self.splits[split]["label"]
        order = torch.argsort((pred == label).int(), stable=True)[:n].tolist()
        predicted, true = pred.tolist(), label.tolist()
        return [
            {
                "correct": predicted[i] == true[i],
                "source": self.describe(split, i),
                "target": self.classes[true[i]],
                "prediction": self.classes[predicted[i]],
            }
            for i in order
        ]

    def report(self, model: nn.Module, run: RunDir) -> None:
        """Per-class accuracy (per_class.json) and a confusion-matrix figure per test split."""
        from dlrun.engine.evaluate import totals
        from dlrun.engine.plots import plot_confusion

        out = {}
        k = len(self.classes)
        for split in self.test_splits:
            confusion = totals(self, model, split, 1024)["confusion"].view(k, k).cpu()
            support = confusion.sum(1).tolist()  # examples of each true class
            right = confusion.diag().tolist()
            out[split] = {
                # A class with no example in the split has no accuracy there: null, not 0.
                "per_class_accuracy": {
                    c: r / n if n else None
                    for c, r, n in zip(self.classes, right, support, strict=True)
                },
                "confusion": confusion.tolist(),
            }
            plot_confusion(confusion, self.classes, run.file(f"confusion_{split}.png"), split)
        write_json(run.per_class, out)

    def predict(self, model: nn.Module, inputs: list[str], batch_size: int) -> list[str]:
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(inputs), batch_size):
            batch = self.encode(inputs[start : start + batch_size])
            batch = {k: v.to(device) for k, v in batch.items()}
            p, label = probabilities(self.logits(model, batch)).max(1)
            out += [f"{self.classes[c]}\t{q:.4f}" for c, q in zip(label.tolist(), p.tolist())]
        return out
