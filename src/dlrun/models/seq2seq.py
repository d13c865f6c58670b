"""Encoder-decoder models over token ids. Every seq2seq model implements ``Seq2Seq``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from dlrun.plan.schema import Named, spec
from dlrun.registry import MODELS


def select_rows(tree: Any, idx: torch.Tensor) -> Any:
    """Index dim 0 of every tensor in a decoding memory or state: a tensor, or tuples
    (named ones too), lists and dicts of them, nested; anything else (None) is kept."""
    if isinstance(tree, torch.Tensor):
        return tree.index_select(0, idx)
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a namedtuple
        return type(tree)(*(select_rows(x, idx) for x in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(select_rows(x, idx) for x in tree)
    if isinstance(tree, dict):
        return {k: select_rows(v, idx) for k, v in tree.items()}
    return tree


@dataclass(frozen=True)
class Tokens:
    """What a sequence model knows of its task's vocabularies: their sizes, special ids."""

    src_vocab: int
    tgt_vocab: int
    pad_id: int
    sos_id: int
    eos_id: int


class Seq2Seq(nn.Module):
    """Interface shared by sequence models, so that tasks and decoding are model-agnostic.

    ``forward(src, tgt_in)`` returns logits (B, T, V) for teacher-forced training.
    ``encode(src)`` returns ``(memory, state)`` and ``decode_step(memory, tokens,
    state)`` the next-token logits and new state, so inference never recomputes
    the encoder. Every tensor in ``memory`` and ``state`` has the batch as its
    first dimension: that lets greedy and beam search reorder them generically.
    """

    kind = "seq2seq"
    # Dynamo does not trace RNN modules; models built on them set this to False.
    compilable = True

    def __init__(self, cfg: Any, tokens: Tokens):
        super().__init__()
        self.cfg, self.tokens = cfg, tokens
        self.pad_id, self.sos_id, self.eos_id = tokens.pad_id, tokens.sos_id, tokens.eos_id

    def rnn_sizes(self) -> tuple[int, int, int, float]:
        """An RNN model's embedding and hidden sizes, layers and dropout between layers,
        after building its source embedding (``src_embed``)."""
        cfg = self.cfg
        e, h, n = cfg.embedding_size, cfg.hidden_size, cfg.num_layers
        self.src_embed = nn.Embedding(self.tokens.src_vocab, e, padding_idx=self.pad_id)
        return e, h, n, cfg.dropout if n > 1 else 0.0

    def encode(self, src: torch.Tensor) -> tuple[Any, Any]:
        raise NotImplementedError  # pragma: no cover - abstract

    def decode_step(self, memory: Any, tokens: torch.Tensor, state: Any):
        """Logits (B, V) for the next token after ``tokens`` (B, 1), and the new state."""
        raise NotImplementedError  # pragma: no cover - abstract

    @torch.no_grad()
    def generate(
        self, src: torch.Tensor, max_len: int, beam_size: int = 1, encoded: Any = None
    ) -> torch.Tensor:
        """Greedy (beam_size 1) or beam-search decoding; (B, <=max_len) ids, SOS excluded.

        ``encoded``: what ``encode(src)`` returned, if the caller has it already.
        """
        if beam_size == 1:
            return self.greedy(src, max_len, encoded)
        return self.beam_search(src, max_len, beam_size, encoded)

    def teacher_forced(self, encoded: Any, tgt_in: torch.Tensor) -> torch.Tensor | None:
        """``forward``'s logits from what ``encode`` returned, or None where a model
        cannot reuse it (then evaluation runs ``forward``)."""
        return None

    def score_and_generate(
        self, src: torch.Tensor, tgt_in: torch.Tensor, max_len: int, beam_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced logits and decoded ids of one evaluation batch, the source
        encoded once for both where the model allows (``teacher_forced``)."""
        encoded = self.encode(src)
        logits = self.teacher_forced(encoded, tgt_in)
        if logits is None:
            logits = self(src, tgt_in)
        return logits, self.generate(src, max_len, beam_size, encoded)

    @torch.no_grad()
    def greedy(self, src: torch.Tensor, max_len: int, encoded: Any = None) -> torch.Tensor:
        """Batched greedy decoding from the model's own predictions (never the targets).

        Stops when every row has produced EOS or after ``max_len`` tokens.
        """
        memory, state = self.encode(src) if encoded is None else encoded
        tokens = torch.full((src.shape[0], 1), self.sos_id, dtype=torch.long, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        out = []
        for _ in range(max_len):
            logits, state = self.decode_step(memory, tokens, state)
            tokens = logits.argmax(dim=-1, keepdim=True)
            out.append(tokens)
            done |= tokens.squeeze(1) == self.eos_id
            if bool(done.all()):  # one host sync per step, cheap next to the step itself
                break
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def beam_search(
        self, src: torch.Tensor, max_len: int, beam_size: int, encoded: Any = None
    ) -> torch.Tensor:
        """Batched beam search: the ``beam_size`` most probable prefixes of every row.

        A finished beam (it produced EOS) keeps its score and only extends with
        EOS. Returns the most probable sequence of each row; stops when every
        beam has finished or after ``max_len`` tokens.
        """
        b, k, dev = src.shape[0], beam_size, src.device
        memory, state = self.encode(src) if encoded is None else encoded
        rows = torch.arange(b, device=dev).repeat_interleave(k)
        memory, state = select_rows(memory, rows), select_rows(state, rows)
        tokens = torch.full((b * k, 1), self.sos_id, dtype=torch.long, device=dev)
        scores = torch.full((b, k), float("-inf"), device=dev)
        scores[:, 0] = 0.0  # all beams start identical: keep one so the top k differ
        finished = torch.zeros(b * k, dtype=torch.bool, device=dev)
        seqs = torch.empty((b * k, 0), dtype=torch.long, device=dev)
        for _ in range(max_len):
            logits, state = self.decode_step(memory, tokens, state)
            logp = torch.log_softmax(logits.float(), dim=-1)
            vocab = logp.shape[-1]
            logp[finished] = float("-inf")
            logp[finished, self.eos_id] = 0.0
            cand = (scores.view(-1, 1) + logp).view(b, k * vocab)
            scores, flat = cand.topk(k, dim=1)
            origin = (torch.arange(b, device=dev).unsqueeze(1) * k + flat // vocab).view(-1)
            tokens = (flat % vocab).view(-1, 1)
            seqs = torch.cat([seqs.index_select(0, origin), tokens], dim=1)
            state = select_rows(state, origin)
            finished = finished.index_select(0, origin) | (tokens.squeeze(1) == self.eos_id)
            if bool(finished.all()):
                break
        best = scores.argmax(dim=1) + torch.arange(b, device=dev) * k
        return seqs.index_select(0, best)


@dataclass(frozen=True)
class GRUSeq2SeqConfig(Named):
    embedding_size: int = spec(ge=1)
    hidden_size: int = spec(ge=1)
    num_layers: int = spec(ge=1)
    dropout: float = spec(ge=0, lt=1)
    bidirectional: bool = spec()
    # Concatenate the encoder's final state to the decoder input at every step
    # (Cho et al., 2014): still a fixed context, no attention.
    feed_context: bool = spec()
    # 1.0 feeds the targets to the decoder in one call; below 1.0 each row feeds
    # back its own prediction with probability 1 - teacher_forcing at each step.
    teacher_forcing: float = spec(ge=0, le=1)


@MODELS.register("gru_seq2seq", schema=GRUSeq2SeqConfig)
class GRUSeq2Seq(Seq2Seq):
    """GRU encoder whose final state initializes a GRU decoder; no attention."""

    compilable = False

    def __init__(self, cfg: GRUSeq2SeqConfig, tokens: Tokens):
        super().__init__(cfg, tokens)
        tgt_vocab, pad_id = tokens.tgt_vocab, tokens.pad_id
        e, h, n, inner_dropout = self.rnn_sizes()
        self.encoder = nn.GRU(
            e, h, n, batch_first=True, dropout=inner_dropout, bidirectional=cfg.bidirectional
        )
        # A bidirectional encoder has two final states per layer; project them to one.
        self.bridge = nn.Linear(2 * h, h) if cfg.bidirectional else None
        self.tgt_embed = nn.Embedding(tgt_vocab, e, padding_idx=pad_id)
        dec_in = e + h if cfg.feed_context else e
        self.decoder = nn.GRU(dec_in, h, n, batch_first=True, dropout=inner_dropout)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(h, tgt_vocab)

    def encode(self, src: torch.Tensor):
        lengths = (src != self.pad_id).sum(dim=1).clamp(min=1)
        # Packing keeps padding out of the final state (a padded position cannot
        # change the output); lengths must live on the CPU for it.
        packed = pack_padded_sequence(
            self.src_embed(src), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, state = self.encoder(packed)
        if self.bridge is not None:
            n, b, h = self.cfg.num_layers, src.shape[0], self.cfg.hidden_size
            state = state.view(n, 2, b, h).transpose(1, 2).reshape(n, b, 2 * h)
            state = torch.tanh(self.bridge(state))
        # Without attention the decoder sees only a fixed context: the top layer's final state.
        context = state[-1] if self.cfg.feed_context else None
        return context, state.transpose(0, 1)  # batch first, as decoding expects

    def _decoder_input(self, tokens: torch.Tensor, context) -> torch.Tensor:
        x = self.tgt_embed(tokens)
        if context is None:
            return x
        return torch.cat([x, context.unsqueeze(1).expand(-1, x.shape[1], -1)], dim=-1)

    def decode_step(self, memory, tokens: torch.Tensor, state):
        hidden = state.transpose(0, 1).contiguous()
        output, hidden = self.decoder(self._decoder_input(tokens, memory), hidden)
        return self.out(self.dropout(output[:, -1])), hidden.transpose(0, 1)

    def teacher_forced(self, encoded, tgt_in: torch.Tensor) -> torch.Tensor:
        memory, state = encoded
        hidden = state.transpose(0, 1).contiguous()
        output, _ = self.decoder(self._decoder_input(tgt_in, memory), hidden)
        return self.out(self.dropout(output))

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        memory, state = self.encode(src)
        ratio = self.cfg.teacher_forcing
        if ratio >= 1.0 or not self.training:
            return self.teacher_forced((memory, state), tgt_in)
        logits = []
        tokens = tgt_in[:, :1]
        for t in range(tgt_in.shape[1]):
            step_logits, state = self.decode_step(memory, tokens, state)
            logits.append(step_logits)
            if t + 1 < tgt_in.shape[1]:
                teacher = torch.rand(tgt_in.shape[0], 1, device=src.device) < ratio
                own = step_logits.argmax(dim=-1, keepdim=True)
                tokens = torch.where(teacher, tgt_in[:, t + 1 : t + 2], own)
        return torch.stack(logits, dim=1)
