"""Encoder-decoder Transformer built from PyTorch's own layers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dlrun.config import spec
from dlrun.models.seq2seq import Seq2Seq
from dlrun.registry import MODELS


@dataclass
class TransformerSeq2SeqConfig:
    name: str = spec("transformer_seq2seq")
    d_model: int = spec(256, ge=1)
    nhead: int = spec(8, ge=1)
    num_encoder_layers: int = spec(3, ge=1)
    num_decoder_layers: int = spec(2, ge=1)
    dim_feedforward: int = spec(1024, ge=1)
    dropout: float = spec(0.1, ge=0, lt=1)
    positions: str = spec("sinusoidal", choices=["sinusoidal", "learned"])
    max_positions: int = spec(512, ge=1)  # longest source or target sequence it can read
    norm_first: bool = spec(True)  # pre-LayerNorm: trains stably without long warmup


def sinusoidal(n: int, d: int) -> torch.Tensor:
    pos = torch.arange(n).unsqueeze(1)
    freq = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
    table = torch.zeros(n, d)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return table


@MODELS.register("transformer_seq2seq", schema=TransformerSeq2SeqConfig, kind="seq2seq")
class TransformerSeq2Seq(Seq2Seq):
    """Token embeddings + positions -> nn.TransformerEncoder / nn.TransformerDecoder -> logits.

    Source padding is masked as attention keys in the encoder and in the
    decoder's cross-attention; the decoder is causal. Inference encodes once
    and re-runs only the decoder over the growing prefix.
    """

    @classmethod
    def check_config(cls, cfg: dict) -> list[str]:
        m, d = cfg["model"], cfg["dataset"]
        problems = []
        if m["d_model"] % m["nhead"]:
            problems.append(
                f"model.d_model={m['d_model']}: must be divisible by model.nhead={m['nhead']}"
            )
        longest = max(d.get("max_src_len", 0), d.get("max_tgt_len", 0) + 1)
        if m["max_positions"] < longest:
            problems.append(
                f"model.max_positions={m['max_positions']}: must be >= {longest}, the longest "
                "sequence dataset.max_src_len / max_tgt_len allows"
            )
        return problems

    def __init__(
        self,
        cfg: TransformerSeq2SeqConfig,
        src_vocab: int,
        tgt_vocab: int,
        pad_id: int,
        sos_id: int,
        eos_id: int,
    ):
        super().__init__(pad_id, sos_id, eos_id)
        if cfg.d_model % cfg.nhead:
            raise ValueError("d_model must be divisible by nhead")  # checked in check_config
        self.cfg = cfg
        d = cfg.d_model
        self.src_embed = nn.Embedding(src_vocab, d, padding_idx=pad_id)
        self.tgt_embed = nn.Embedding(tgt_vocab, d, padding_idx=pad_id)
        if cfg.positions == "learned":
            self.pos = nn.Embedding(cfg.max_positions, d)
        else:
            self.register_buffer("pos_table", sinusoidal(cfg.max_positions, d), persistent=False)
            self.pos = None
        layer = dict(
            d_model=d,
            nhead=cfg.nhead,
            dim_feedforward=cfg.dim_feedforward,
            dropout=cfg.dropout,
            batch_first=True,
            norm_first=cfg.norm_first,
        )
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**layer),
            cfg.num_encoder_layers,
            norm=nn.LayerNorm(d) if cfg.norm_first else None,
            enable_nested_tensor=False,
        )
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(**layer),
            cfg.num_decoder_layers,
            norm=nn.LayerNorm(d) if cfg.norm_first else None,
        )
        self.out = nn.Linear(d, tgt_vocab)
        self.dropout = nn.Dropout(cfg.dropout)

    def _embed(self, embed: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        if n > self.cfg.max_positions:
            raise ValueError(f"sequence of {n} tokens exceeds model.max_positions")
        pos = self.pos.weight[:n] if self.pos is not None else self.pos_table[:n]
        return self.dropout(embed(tokens) * math.sqrt(self.cfg.d_model) + pos)

    def encode(self, src: torch.Tensor):
        src_pad = src == self.pad_id
        memory = self.encoder(self._embed(self.src_embed, src), src_key_padding_mask=src_pad)
        empty = src.new_empty((src.shape[0], 0))
        return (memory, src_pad), empty

    def _decode(self, memory, tgt_in: torch.Tensor) -> torch.Tensor:
        enc, src_pad = memory
        n = tgt_in.shape[1]
        causal = torch.triu(torch.full((n, n), float("-inf"), device=tgt_in.device), diagonal=1)
        out = self.decoder(
            self._embed(self.tgt_embed, tgt_in),
            enc,
            tgt_mask=causal,
            tgt_is_causal=True,
            memory_key_padding_mask=src_pad,
        )
        return self.out(out)

    def decode_step(self, memory, tokens: torch.Tensor, state: torch.Tensor):
        prefix = torch.cat([state, tokens], dim=1)
        return self._decode(memory, prefix)[:, -1], prefix

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        memory, _ = self.encode(src)
        return self._decode(memory, tgt_in)
