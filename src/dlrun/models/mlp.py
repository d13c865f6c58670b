"""A multilayer perceptron for tables: features in, class logits or one value out."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dlrun.plan.schema import Named, spec
from dlrun.registry import MODELS

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


@dataclass(frozen=True)
class MLPConfig(Named):
    depth: int = spec(ge=0)  # hidden layers (0: a linear model)
    width: int = spec(ge=1)  # units per hidden layer
    activation: str = spec(choices=list(ACTIVATIONS))
    dropout: float = spec(ge=0, lt=1)  # after each hidden layer
    batch_norm: bool = spec()  # before each hidden layer's activation
    loss: str = spec(choices=["mse", "huber"])  # regression (task.problem=regression)
    delta: float = spec(gt=0)  # Huber's delta, in standardized target units


@MODELS.register("mlp", schema=MLPConfig)
class MLP(nn.Module):
    """inputs -> [Linear, (BatchNorm), activation, (Dropout)] x depth -> Linear -> outputs."""

    kind = "tabular"

    def __init__(self, cfg: MLPConfig, inputs: int, outputs: int):
        super().__init__()
        layers: list[nn.Module] = []
        width = inputs
        for _ in range(cfg.depth):
            layers.append(nn.Linear(width, cfg.width))
            if cfg.batch_norm:
                layers.append(nn.BatchNorm1d(cfg.width))
            layers.append(ACTIVATIONS[cfg.activation]())
            if cfg.dropout:
                layers.append(nn.Dropout(cfg.dropout))
            width = cfg.width
        layers.append(nn.Linear(width, outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
