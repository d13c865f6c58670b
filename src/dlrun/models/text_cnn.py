"""A small convolutional text encoder trained from scratch (Kim 2014, one layer)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dlrun.plan.schema import Named, spec
from dlrun.registry import MODELS


@dataclass(frozen=True)
class TextCNNConfig(Named):
    embedding_size: int = spec(ge=1)
    filters: int = spec(ge=1)  # per width
    widths: list[int] = spec()  # convolution widths in tokens, e.g. [3, 4, 5]
    dropout: float = spec(ge=0, lt=1)  # on the pooled features


@MODELS.register("text_cnn", schema=TextCNNConfig)
class TextCNN(nn.Module):
    """Token embeddings -> one convolution per width -> ReLU -> max over time -> classes.

    Takes each text's word ids in order, end to end, and the offset where each text
    starts (the same input as ``bow_mlp``, with ``text_input = "sequence"``); texts
    are padded inside, and pads never win the max.
    """

    kind = "text"
    text_input = "sequence"  # each text's word ids in order

    def __init__(self, cfg: TextCNNConfig, vocab_size: int, classes: int):
        super().__init__()
        if not cfg.widths or min(cfg.widths) < 1:
            raise ValueError("text_cnn needs at least one convolution width of 1 or more")
        self.pad = vocab_size  # one extra row, kept at zero
        self.widths = tuple(cfg.widths)
        self.embedding = nn.Embedding(vocab_size + 1, cfg.embedding_size, padding_idx=self.pad)
        self.convs = nn.ModuleList(
            nn.Conv1d(cfg.embedding_size, cfg.filters, w, padding=w - 1) for w in cfg.widths
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.filters * len(cfg.widths), classes)

    def forward(
        self, ids: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, classes); ``weights`` (bag models' feature weights) are not used."""
        n = ids.numel()
        lengths = torch.diff(offsets, append=offsets.new_tensor([n]))
        width = max(1, int(lengths.max())) if lengths.numel() else 1
        example = torch.repeat_interleave(
            torch.arange(offsets.numel(), device=ids.device), lengths, output_size=n
        )
        position = torch.arange(n, device=ids.device) - offsets[example]
        padded = ids.new_full((offsets.numel(), width), self.pad)
        padded[example, position] = ids
        x = self.embedding(padded).transpose(1, 2)  # (B, E, T)
        # Positions past a text's end: -inf before the max (padding=w-1 keeps every
        # window that touches a real token).
        pooled = []
        for w, conv in zip(self.widths, self.convs):
            h = torch.relu(conv(x))  # (B, F, T + w - 1)
            t = torch.arange(h.shape[2], device=ids.device)
            real = t[None, :] < (lengths.clamp(min=1) + w - 1)[:, None]
            pooled.append(h.masked_fill(~real[:, None, :], float("-inf")).amax(2))
        return self.out(self.dropout(torch.cat(pooled, 1)))
