"""Bag-of-words classifiers over sets of token ids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlrun.plan.schema import Named, spec
from dlrun.registry import MODELS


@dataclass(frozen=True)
class BowMLPConfig(Named):
    hidden_size: int = spec(ge=1)
    # 1: one logit with BCEWithLogits for two classes (more classes: one logit each);
    # 2: one logit per class with cross-entropy (seed 003, V.3: two for two classes).
    outputs: int = spec(ge=1, le=2)
    dropout: float = spec(ge=0, lt=1)  # on the hidden layer; the seed has none
    # Gradients of the first layer only for the rows a batch uses: several times
    # faster (BENCHMARKS.md); needs plain SGD (no momentum, weight decay or clipping).
    sparse_grad: bool = spec()


def argsort_ids(ids: torch.Tensor) -> torch.Tensor:
    """A stable argsort of token ids (< 2**32, on the CPU).

    numpy's radix sort of 16-bit keys, twice (low then high half) when ids need
    more than 16 bits: 0.15 ms for a batch's 17,000 ids, where ``torch.sort``
    takes 0.65 ms.
    """
    keys = ids.numpy()
    order = np.argsort((keys & 0xFFFF).astype(np.uint16))
    if keys.size and keys.max() >= 2**16:
        high = (keys[order] >> 16).astype(np.uint16)
        order = order[np.argsort(high, kind="stable")]
    return torch.from_numpy(order)


class BagSum(torch.autograd.Function):
    """``F.embedding_bag(mode="sum")`` on the CPU whose weight gradient is sparse and coalesced.

    EmbeddingBag's own sparse gradient holds one row per id occurrence (about
    17,000 for a batch of 128 reviews, 4,600 of them distinct), which the
    optimizer then adds row by row. Here the occurrences are grouped by token
    (an argsort) and each token's row is summed once, by EmbeddingBag itself
    run over the output gradient: row t = sum of the gradients of the examples
    that contain t, weighted like the forward.
    """

    @staticmethod
    def forward(ctx, weight, ids, offsets, weights):
        ctx.save_for_backward(ids, offsets, weights)
        ctx.shape = weight.shape
        return F.embedding_bag(ids, weight, offsets, mode="sum", per_sample_weights=weights)

    @staticmethod
    def backward(ctx, grad):
        ids, offsets, weights = ctx.saved_tensors
        n = ids.numel()
        lengths = torch.diff(offsets, append=offsets.new_tensor([n]))
        example = torch.repeat_interleave(
            torch.arange(offsets.numel(), device=ids.device), lengths, output_size=n
        )
        order = argsort_ids(ids)
        tokens, counts = torch.unique_consecutive(ids.index_select(0, order), return_counts=True)
        rows = F.embedding_bag(
            example.index_select(0, order),
            grad.contiguous(),
            torch.cumsum(counts, 0) - counts,
            mode="sum",
            per_sample_weights=None if weights is None else weights.index_select(0, order),
        )
        coalesced = torch.sparse_coo_tensor(
            tokens[None], rows, ctx.shape, is_coalesced=True, check_invariants=False
        )
        return coalesced, None, None, None


@MODELS.register("bow_mlp", schema=BowMLPConfig)
class BowMLP(nn.Module):
    """The seed's one-hot MLP (vocab -> hidden -> ReLU -> outputs), without the one-hot matrix.

    Multiplying a 0/1 presence vector by the first layer's weights is the sum
    of the weight rows of the tokens present, which EmbeddingBag computes from
    the token ids alone; the input is the distinct ids of each example, end to
    end, and the offset where each example starts.
    """

    kind = "text"
    text_input = "bag"  # each text's distinct n-gram ids

    compile_note = (
        "model.sparse_grad=true: inductor fails on EmbeddingBag's sparse gradient; "
        "model.sparse_grad=false compiles"
    )

    def __init__(self, cfg: BowMLPConfig, vocab_size: int, classes: int = 2):
        super().__init__()
        self.cfg = cfg
        self.compilable = not cfg.sparse_grad  # device.compile runs it eagerly
        self.first = nn.EmbeddingBag(
            vocab_size, cfg.hidden_size, mode="sum", sparse=cfg.sparse_grad
        )
        self.bias = nn.Parameter(torch.zeros(cfg.hidden_size))
        self.dropout = nn.Dropout(cfg.dropout)
        # One logit stands for two classes only; with more, there is one per class.
        self.out = nn.Linear(cfg.hidden_size, 1 if cfg.outputs == 1 and classes == 2 else classes)
        # Initialise like the dense nn.Linear(vocab_size, hidden) it stands for.
        bound = 1 / vocab_size**0.5
        nn.init.uniform_(self.first.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(
        self, ids: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, outputs) for the examples whose ids start at ``offsets`` in ``ids``.

        ``weights`` (one per id) makes the input a weighted presence vector.
        """
        # On the CPU the coalesced gradient pays (BENCHMARKS.md). On a GPU its
        # unique_consecutive would wait for the device every step, while
        # EmbeddingBag's own sparse gradient does not and scatter-adds are cheap there.
        if (
            self.cfg.sparse_grad
            and ids.device.type == "cpu"
            and torch.is_grad_enabled()
            and not torch.compiler.is_compiling()
        ):
            summed = BagSum.apply(self.first.weight, ids, offsets, weights)
        else:
            summed = self.first(ids, offsets, per_sample_weights=weights)
        hidden = torch.relu(summed + self.bias)
        return self.out(self.dropout(hidden))
