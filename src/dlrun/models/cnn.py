"""Image classifiers: the seed's small CNN and a pre-activation ResNet.

Both take (B, channels, H, W) float images and return (B, classes) logits,
and expose ``first_activations`` (the first convolution's feature maps after
its non-linearity) for the activation-map figure of seed 002, 2.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dlrun.plan.schema import Named, spec
from dlrun.registry import MODELS


@dataclass(frozen=True)
class KmnistCNNConfig(Named):
    dropout: float = spec(ge=0, lt=1)


@MODELS.register("kmnist_cnn", schema=KmnistCNNConfig)
class KmnistCNN(nn.Module):
    """Seed 002, 2.4: conv 8@5x5 same, ReLU, pool; conv 16@3x3 valid, ReLU, pool;
    linear 576->600, ReLU, dropout; linear 600->120, ReLU; linear 120->classes.

    The seed ends with LogSoftmax and NLLLoss; returning logits to a
    cross-entropy loss is the same computation.
    """

    kind = "image"
    min_image_size = 8  # two poolings and a valid 3x3 convolution leave 1x1

    def __init__(self, cfg: KmnistCNNConfig, channels: int, classes: int, image_size: int):
        super().__init__()
        if image_size < self.min_image_size:
            raise ValueError(f"kmnist_cnn needs images of at least {self.min_image_size} px")
        self.conv1 = nn.Conv2d(channels, 8, kernel_size=5, padding="same")
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3)
        self.pool = nn.MaxPool2d(2)
        side = ((image_size // 2) - 2) // 2  # 28 -> 14 -> 12 -> 6; 8 -> 4 -> 2 -> 1
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 600),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(600, 120),
            nn.ReLU(),
            nn.Linear(120, classes),
        )

    def first_activations(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.first_activations(x))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.head(x)


@dataclass(frozen=True)
class ResNetConfig(Named):
    width: int = spec(ge=1)  # channels of the first stage; doubled at each later stage
    stages: int = spec(ge=1, le=4)  # each after the first halves the resolution
    blocks: int = spec(ge=1)  # residual blocks per stage
    dropout: float = spec(ge=0, lt=1)  # before the classifier


class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv with an identity (or 1x1 projection) shortcut (He et al. 2016)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


@MODELS.register("resnet", schema=ResNetConfig)
class PreActResNet(nn.Module):
    kind = "image"

    def __init__(self, cfg: ResNetConfig, channels: int, classes: int, image_size: int):
        super().__init__()
        self.stem = nn.Conv2d(channels, cfg.width, 3, padding=1, bias=False)
        blocks, cin = [], cfg.width
        for stage in range(cfg.stages):
            cout = cfg.width * 2**stage
            for b in range(cfg.blocks):
                blocks.append(PreActBlock(cin, cout, stride=2 if stage > 0 and b == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(cfg.dropout), nn.Linear(cin, classes)
        )

    def first_activations(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(torch.relu(self.bn(x)))
