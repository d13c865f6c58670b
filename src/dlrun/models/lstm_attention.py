"""Bidirectional LSTM encoder, LSTM decoder, bilinear attention (seed 002, 3.1.b)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dlrun.models.seq2seq import Seq2Seq, Tokens
from dlrun.plan.schema import Named, spec
from dlrun.registry import MODELS


@dataclass(frozen=True)
class LSTMAttentionConfig(Named):
    embedding_size: int = spec(ge=1)
    hidden_size: int = spec(ge=1)  # per direction in the encoder; the decoder's size
    num_layers: int = spec(ge=1)
    dropout: float = spec(ge=0, lt=1)
    attention: str = spec(choices=["bilinear", "none"])


@MODELS.register("lstm_attention_seq2seq", schema=LSTMAttentionConfig)
class LSTMAttentionSeq2Seq(Seq2Seq):
    """Decoder query q attends over encoder states h_i with s_i = (W_q q)^T h_i.

    p = softmax(s) over non-padded positions, context c = sum_i p_i h_i and the
    output is tanh(W_o [q; c]). With ``attention: none`` the output is
    tanh(W_o q): the same network without attention, for the with/without study.
    The decoder reads only its own inputs (no input feeding), so training runs
    the decoder LSTM over the whole target in one call.
    """

    compilable = False

    def __init__(self, cfg: LSTMAttentionConfig, tokens: Tokens):
        super().__init__(cfg, tokens)
        tgt_vocab, pad_id = tokens.tgt_vocab, tokens.pad_id
        e, h, n, inner = self.rnn_sizes()
        self.encoder = nn.LSTM(e, h, n, batch_first=True, dropout=inner, bidirectional=True)
        self.bridge_h = nn.Linear(2 * h, h)
        self.bridge_c = nn.Linear(2 * h, h)
        self.tgt_embed = nn.Embedding(tgt_vocab, e, padding_idx=pad_id)
        self.decoder = nn.LSTM(e, h, n, batch_first=True, dropout=inner)
        self.attend = cfg.attention == "bilinear"
        self.w_q = nn.Linear(h, 2 * h, bias=False) if self.attend else None
        self.w_o = nn.Linear(h + 2 * h if self.attend else h, h)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(h, tgt_vocab)

    def encode(self, src: torch.Tensor):
        pad = src == self.pad_id
        lengths = (~pad).sum(dim=1).clamp(min=1)
        packed = pack_padded_sequence(
            self.src_embed(src), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        enc, (h, c) = self.encoder(packed)
        enc, _ = pad_packed_sequence(enc, batch_first=True, total_length=src.shape[1])
        n, b, size = self.cfg.num_layers, src.shape[0], self.cfg.hidden_size

        def merge(x: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
            both = x.view(n, 2, b, size).transpose(1, 2).reshape(n, b, 2 * size)
            return torch.tanh(proj(both)).transpose(0, 1)  # (B, layers, H): batch first

        return (enc, pad), (merge(h, self.bridge_h), merge(c, self.bridge_c))

    def _output(self, memory, q: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) from decoder outputs q (B, T, H)."""
        if self.w_q is not None:  # attention (self.attend)
            enc, pad = memory
            scores = self.w_q(q) @ enc.transpose(1, 2)  # (B, T, S)
            scores = scores.masked_fill(pad.unsqueeze(1), float("-inf"))
            context = torch.softmax(scores, dim=-1) @ enc  # (B, T, 2H)
            q = torch.cat([q, context], dim=-1)
        return self.out(self.dropout(torch.tanh(self.w_o(q))))

    def _run_decoder(self, tokens: torch.Tensor, state):
        h, c = (s.transpose(0, 1).contiguous() for s in state)
        q, (h, c) = self.decoder(self.tgt_embed(tokens), (h, c))
        return q, (h.transpose(0, 1), c.transpose(0, 1))

    def decode_step(self, memory, tokens: torch.Tensor, state):
        q, state = self._run_decoder(tokens, state)
        return self._output(memory, q)[:, -1], state

    def teacher_forced(self, encoded, tgt_in: torch.Tensor) -> torch.Tensor:
        memory, state = encoded
        q, _ = self._run_decoder(tgt_in, state)
        return self._output(memory, q)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.teacher_forced(self.encode(src), tgt_in)
