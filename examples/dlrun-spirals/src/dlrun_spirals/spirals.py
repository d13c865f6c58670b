"""Spirals: which arm of K interleaved 2-D spirals a point lies on (a dlrun task plugin).

The plugin is this module, its YAML (``conf/task/spirals.yaml``,
``conf/dataset/spirals.yaml``) and one entry point in ``pyproject.toml``;
dlrun finds all three once the package is installed, and trains dlrun's own
``mlp`` on it: ``pip install examples/dlrun-spirals && dlrun task=spirals``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dlrun.errors import UserError, printable
from dlrun.models import build_model
from dlrun.plan.schema import spec
from dlrun.registry import TASKS
from dlrun.tasks.classify import ClassificationTask


@dataclass(frozen=True)
class SpiralsDataConfig:
    """The ``dataset`` section's types and limits; its values are in conf/dataset/spirals.yaml."""

    name: str = spec()
    arms: int = spec(ge=2, le=10)
    turns: float = spec(gt=0)
    noise: float = spec(ge=0)
    train_size: int = spec(ge=1)
    val_size: int = spec(ge=1)
    test_size: int = spec(ge=1)
    seed: int = spec(ge=0)
    batch_size: int = spec(ge=1)


def spirals(
    n: int, arms: int, turns: float, noise: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points: (n, 2) coordinates in about [-1, 1] and the arm each lies on."""
    label = torch.randint(arms, (n,), generator=generator)
    radius = 0.1 + 0.9 * torch.rand(n, generator=generator)
    angle = 2 * math.pi * (turns * radius + label / arms)
    xy = radius[:, None] * torch.stack([angle.cos(), angle.sin()], dim=1)
    return xy + noise * torch.randn(n, 2, generator=generator), label


@TASKS.register("spirals", schema=SpiralsDataConfig)
class SpiralsTask(ClassificationTask):
    model_kind = "tabular"  # a feature vector in, class logits out: dlrun's mlp

    def __init__(self, cfg):
        super().__init__(cfg)
        self.classes = tuple(f"arm{k}" for k in range(cfg.dataset.arms))

    def prepare(self, cache_dir: Path) -> None:
        d = self.cfg.dataset
        generator = torch.Generator().manual_seed(d.seed)
        for split in ("train", "val", "test"):
            n = getattr(d, f"{split}_size")
            x, label = spirals(n, d.arms, d.turns, d.noise, generator)
            self.splits[split] = {"x": x, "label": label}

    def build_model(self) -> nn.Module:
        return build_model(self.cfg.model, inputs=2, outputs=len(self.classes))

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(batch["x"])

    def describe(self, split: str, i: int) -> str:
        x, y = self.splits[split]["x"][i].tolist()
        return f"{x:.3f},{y:.3f}"

    def encode(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        """Points written ``x,y`` (``dlrun-predict RUN_DIR 0.2,-0.5``)."""
        points = []
        for text in inputs:
            try:
                x, y = (float(v) for v in text.split(","))
            except ValueError:
                message = f"'{printable(text)}': expected a point x,y, e.g. 0.2,-0.5"
                raise UserError(message) from None
            points.append((x, y))
        return {"x": torch.tensor(points, dtype=torch.float32).reshape(-1, 2)}
