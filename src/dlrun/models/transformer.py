"""Encoder-decoder Transformer built from PyTorch's own layers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dlrun.models.seq2seq import Seq2Seq, Tokens
from dlrun.plan.config import RunConfig
from dlrun.plan.schema import Named, spec
from dlrun.registry import MODELS


@dataclass(frozen=True)
class TransformerSeq2SeqConfig(Named):
    d_model: int = spec(ge=1)
    nhead: int = spec(ge=1)
    num_encoder_layers: int = spec(ge=1)
    num_decoder_layers: int = spec(ge=1)
    dim_feedforward: int = spec(ge=1)
    dropout: float = spec(ge=0, lt=1)
    positions: str = spec(choices=["sinusoidal", "learned"])
    max_positions: int = spec(ge=1)  # longest source or target sequence it can read
    norm_first: bool = spec()  # pre-LayerNorm: trains stably without long warmup
    # Where source positions count from: "end" numbers each source character by its
    # distance to the last one, so a digit's place in a number at the end of a question
    # is its position (place value: 89% test exact match after 300 steps against 34%).
    src_positions: str = spec(choices=["start", "end"])


def sinusoidal(n: int, d: int) -> torch.Tensor:
    pos = torch.arange(n).unsqueeze(1)
    freq = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
    table = torch.zeros(n, d)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return table


CPU_BF16_WIDTH = 256  # d_model from which bf16 pays on a CPU with AMX (cpu_bf16)


@MODELS.register("transformer_seq2seq", schema=TransformerSeq2SeqConfig)
class TransformerSeq2Seq(Seq2Seq):
    """Token embeddings + positions -> nn.TransformerEncoder / nn.TransformerDecoder -> logits.

    Source padding is masked as attention keys in the encoder and in the
    decoder's cross-attention; the decoder is causal. Inference encodes once,
    projects the encoder output to each decoder layer's cross-attention keys
    and values once, and decodes one token per step against a cache of the
    previous tokens' self-attention keys and values (``use_cache``; False
    re-runs the decoder over the whole prefix each step, for comparison).
    """

    use_cache = True

    @property
    def cpu_bf16(self) -> bool:
        """Whether ``device.amp=auto`` trains it in bf16 on a CPU with AMX matrix units
        (``engine.device.amp_for_model``): where its time is in large matrix products, a
        width of ``CPU_BF16_WIDTH`` or more. Measured on a 2-core CPU with AMX: seed 001's
        model (width 256) ran its 20-step dates run in 14.2 s in bf16 and 20.2 s in fp32;
        the compact one (width 128) trained place value at 3.3 steps/s in bf16 and 4.4 in
        fp32 (BENCHMARKS.md)."""
        return self.cfg.d_model >= CPU_BF16_WIDTH

    @classmethod
    def check_config(cls, cfg: RunConfig) -> list[str]:
        m, d = cfg.model, cfg.dataset
        problems = []
        if m.d_model % m.nhead:
            problems.append(
                f"model.d_model={m.d_model}: must be divisible by model.nhead={m.nhead}"
            )
        longest = max(getattr(d, "max_src_len", 0), getattr(d, "max_tgt_len", 0) + 1)
        if m.max_positions < longest:
            problems.append(
                f"model.max_positions={m.max_positions}: must be >= {longest}, the longest "
                "sequence dataset.max_src_len / max_tgt_len allows"
            )
        return problems

    def __init__(self, cfg: TransformerSeq2SeqConfig, tokens: Tokens):
        super().__init__(cfg, tokens)
        src_vocab, tgt_vocab, pad_id = tokens.src_vocab, tokens.tgt_vocab, tokens.pad_id
        if cfg.d_model % cfg.nhead:
            raise ValueError("d_model must be divisible by nhead")  # checked in check_config
        d = cfg.d_model
        self.src_embed = nn.Embedding(src_vocab, d, padding_idx=pad_id)
        self.tgt_embed = nn.Embedding(tgt_vocab, d, padding_idx=pad_id)
        self.pos: nn.Embedding | None  # learned positions, or None: pos_table's
        self.pos_table: torch.Tensor  # a buffer (sinusoidal positions)
        if cfg.positions == "learned":
            self.pos = nn.Embedding(cfg.max_positions, d)
        else:
            self.register_buffer("pos_table", sinusoidal(cfg.max_positions, d), persistent=False)
            self.pos = None
        layer: dict[str, Any] = dict(
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
        _use_fast_dropout(self)
        # Token embeddings start at std d^-1/2, so that scaled by sqrt(d) they have unit size
        # like the positions: nn.Embedding's N(0, 1) made them sqrt(d) times larger and
        # drowned where each character is (place value: 19% test exact match after 300
        # steps against 34% with this init; BENCHMARKS.md).
        for embed in (self.src_embed, self.tgt_embed):
            nn.init.normal_(embed.weight, std=d**-0.5)
            with torch.no_grad():
                embed.weight[pad_id].zero_()

    def _embed(self, embed: nn.Embedding, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        if n > self.cfg.max_positions:
            raise ValueError(f"sequence of {n} tokens exceeds model.max_positions")
        table = self.pos.weight if self.pos is not None else self.pos_table
        pos = table[:n]
        if embed is self.src_embed and self.cfg.src_positions == "end":
            # Counted back from each source's last character (padding gets 0, masked anyway).
            lengths = (tokens != self.pad_id).sum(1, keepdim=True)
            pos = table[(lengths - 1 - torch.arange(n, device=tokens.device)).clamp(min=0)]
        return self.dropout(embed(tokens) * math.sqrt(self.cfg.d_model) + pos)

    def _encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        src_pad = src == self.pad_id
        x = self._embed(self.src_embed, src)
        if self.training and _packs(x) and _packed_rows(src_pad) < src_pad.numel():
            return _packed_encoder(self.encoder, x, src_pad), src_pad
        return self.encoder(x, src_key_padding_mask=src_pad), src_pad

    def encode(self, src: torch.Tensor):
        return self._decoding_start(*self._encode(src))

    def score_and_generate(
        self, src: torch.Tensor, tgt_in: torch.Tensor, max_len: int, beam_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        enc, src_pad = self._encode(src)  # once for both
        logits = self._decode((enc, src_pad), tgt_in)
        pred = self.generate(src, max_len, beam_size, self._decoding_start(enc, src_pad))
        return logits, pred

    def _decoding_start(self, enc: torch.Tensor, src_pad: torch.Tensor):
        """``encode``'s (memory, state) from the encoder's output."""
        b = src_pad.shape[0]
        if not self.use_cache:  # the state is the prefix decoded so far
            return (enc, src_pad), torch.empty((b, 0), dtype=torch.long, device=enc.device)
        heads = self.cfg.nhead
        cross = []
        for layer in self.decoder.layers:
            attn = layer.multihead_attn
            d = attn.embed_dim
            w, bias = attn.in_proj_weight[d:], attn.in_proj_bias[d:]
            k, v = F.linear(enc, w, bias).chunk(2, dim=-1)
            # Laid out once as every step's products read them: keys transposed.
            cross.append(
                (_heads(k, heads).transpose(2, 3).contiguous(), _heads(v, heads).contiguous())
            )
        # Cross-attention mask for scaled_dot_product_attention: True where a key counts.
        keep = ~src_pad.view(b, 1, 1, -1)
        empty = enc.new_zeros((b, heads, 0, self.cfg.d_model // heads))
        state = tuple((empty.transpose(2, 3), empty) for _ in self.decoder.layers)
        return (keep, tuple(cross)), state

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

    def decode_step(self, memory, tokens: torch.Tensor, state):
        if not self.use_cache:
            prefix = torch.cat([state, tokens], dim=1)
            return self._decode(memory, prefix)[:, -1], prefix
        keep, cross = memory
        t = state[0][1].shape[2]  # tokens decoded so far: this one's position
        if t >= self.cfg.max_positions:
            raise ValueError(f"sequence of {t + 1} tokens exceeds model.max_positions")
        pos = self.pos.weight[t] if self.pos is not None else self.pos_table[t]
        x = self.dropout(self.tgt_embed(tokens) * math.sqrt(self.cfg.d_model) + pos)
        new_state = []
        for layer, (k_self, v_self), (k_cross, v_cross) in zip(
            self.decoder.layers, state, cross, strict=True
        ):
            x, k_self, v_self = _cached_layer(layer, x, k_self, v_self, k_cross, v_cross, keep)
            new_state.append((k_self, v_self))
        if self.decoder.norm is not None:
            x = self.decoder.norm(x)
        return self.out(x)[:, -1], tuple(new_state)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self._decode(self._encode(src), tgt_in)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU mask is cut from 64-bit random words, four 16-bit draws
    each. On a CPU torch draws one Bernoulli number per element, which made dropout a
    quarter of a Transformer's training step (a third under bf16); this is about five
    times cheaper. The keep probability is exact to 1/65536 and the scale keeps the
    expectation unchanged. Off the CPU, in eval mode or with p = 0 it is ``nn.Dropout``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        drop = round(self.p * 65536)  # of 65,536 equally likely 16-bit values
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device)
        draws = words.random_(-(2**63), None).view(torch.int16)[:n].view(x.shape)
        mask = (draws >= drop - 32768).to(x.dtype).mul_(65536 / (65536 - drop))
        return x * mask


def _use_fast_dropout(module: nn.Module) -> None:
    """Replace every ``nn.Dropout`` under ``module`` (the layers' own included) by
    ``FastDropout``; attention-weight dropout inside ``nn.MultiheadAttention`` stays."""
    for parent in module.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, D) -> (B, heads, T, D / heads)."""
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


def _attend(attn: nn.MultiheadAttention, q: torch.Tensor, keys_t, v, mask=None) -> torch.Tensor:
    """Attention of queries (B, 1, D) over per-head keys, transposed (B, H, D / H, T), and
    values (B, H, T, D / H), then the output projection. Keys are kept transposed and
    contiguous: the product of each step read them so, where a transposed view was
    copied at every step (8% of a decoding evaluation)."""
    b, t, d = q.shape
    q = _heads(F.linear(q, attn.in_proj_weight[:d], attn.in_proj_bias[:d]), attn.num_heads)
    p = attn.dropout if attn.training else 0.0
    if p == 0.0 and q.device.type == "cpu":
        # One query per row: two batched products and a softmax. PyTorch's fused CPU
        # kernel (flash attention) is built for long queries: it took 1.5-2x as long for
        # this (BENCHMARKS.md, "CPU time of a Transformer: malloc, one-query attention").
        scores = q @ keys_t * (q.shape[-1] ** -0.5)
        if mask is not None:  # the lowest finite value: a row with no key stays finite
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        out = torch.softmax(scores, dim=-1) @ v
    else:
        k = keys_t.transpose(-2, -1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    return attn.out_proj(out.transpose(1, 2).reshape(b, t, d))


def _packs(x: torch.Tensor) -> bool:
    """Whether training may leave padding out of the encoder (``_packed_encoder``): on a
    CPU, where a step of seed 001's Transformer on dates took 391 ms instead of 514 in
    fp32, 256 instead of 315 in bf16 (BENCHMARKS.md). A GPU keeps the padded batch (not
    measured there), and so does ``torch.compile`` (the number of tokens is data)."""
    return x.device.type == "cpu" and not torch.compiler.is_compiling()


PACK_ROWS = 128  # packed tokens are padded to a multiple of this (see _packed_encoder)


def _packed_rows(pad: torch.Tensor) -> int:
    """The rows a packed batch has: its real tokens, rounded up to ``PACK_ROWS``. Packing
    is done only when they are fewer than the padded batch's (a small batch may not be)."""
    return -(-int((~pad).sum()) // PACK_ROWS) * PACK_ROWS


def _packed_encoder(encoder: nn.TransformerEncoder, x: torch.Tensor, pad: torch.Tensor):
    """``encoder(x, src_key_padding_mask=pad)`` in training, its rows of padding left out
    of every product but attention's: the layers' projections and feed-forward run on
    the real tokens only, (N, D) for N of the B x T places, which are put back in place
    around each attention. A random batch of dates is cut to its longest source, twice
    the mean: the products did half their work on padding. Padding's outputs are zeros
    (masked wherever memory is read).

    N is rounded up to a multiple of ``PACK_ROWS`` with filler rows (which read the
    batch's last place, a token or padding, finite either way, and are written to a
    spare row past the batch that is dropped: no output and no gradient comes of them):
    under bf16 a CPU's oneDNN builds and keeps kernels for each new shape, and a new N
    every step grew the process from 1.4 to 2.5 GB in 120 steps."""
    b, t, d = x.shape
    real = (~pad).reshape(-1).nonzero().squeeze(1)
    fill = -real.numel() % PACK_ROWS
    places = torch.cat([real, real.new_full((fill,), b * t)])  # fillers: the spare row
    reads = places.clamp(max=b * t - 1)  # a filler reads the last place: its rows are dropped
    keep = ~pad.view(b, 1, 1, t)  # attention's mask: True where a key takes part
    h = x.reshape(b * t, d).index_select(0, reads)
    for layer in encoder.layers:
        h = _packed_layer(layer, h, places, reads, keep)
    if encoder.norm is not None:
        h = encoder.norm(h)
    return _unpack(h, places, b * t).view(b, t, d)


def _unpack(h: torch.Tensor, places: torch.Tensor, n: int) -> torch.Tensor:
    """Packed rows ``h`` put at their ``places`` among ``n`` rows of zeros (fillers' place,
    ``n``, is a spare row, dropped)."""
    return h.new_zeros(n + 1, h.shape[1]).index_copy(0, places, h)[:n]


def _packed_layer(layer: nn.TransformerEncoderLayer, x, places, reads, keep) -> torch.Tensor:
    """One nn.TransformerEncoderLayer (training mode) on packed tokens ``x`` (N, D): put at
    ``places`` among the B x T for attention (``keep``: the keys' mask, (B, 1, 1, T)),
    read back from ``reads``."""
    attn = layer.self_attn
    d, heads = attn.embed_dim, attn.num_heads
    b, t = keep.shape[0], keep.shape[-1]

    def self_block(h: torch.Tensor) -> torch.Tensor:
        qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)
        qkv = _unpack(qkv, places, b * t).view(b, t, 3 * d)
        q, k, v = (_heads(z, heads) for z in qkv.chunk(3, dim=-1))
        p = attn.dropout if attn.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=p)
        out = out.transpose(1, 2).reshape(b * t, d).index_select(0, reads)
        return layer.dropout1(attn.out_proj(out))

    def ff_block(h: torch.Tensor) -> torch.Tensor:
        return layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(h)))))

    if layer.norm_first:
        x = x + self_block(layer.norm1(x))
        return x + ff_block(layer.norm2(x))
    x = layer.norm1(x + self_block(x))
    return layer.norm2(x + ff_block(x))


def _cached_layer(layer: nn.TransformerDecoderLayer, x, k_self, v_self, k_cross, v_cross, keep):
    """One nn.TransformerDecoderLayer for one new token (B, 1, D), its own keys (kept
    transposed) and values appended to the cache: the same arithmetic as the layer's
    forward over the whole prefix."""
    attn = layer.self_attn
    d, heads = attn.embed_dim, attn.num_heads

    def self_block(h: torch.Tensor) -> torch.Tensor:
        nonlocal k_self, v_self
        k, v = F.linear(h, attn.in_proj_weight[d:], attn.in_proj_bias[d:]).chunk(2, dim=-1)
        k_self = torch.cat([k_self, _heads(k, heads).transpose(2, 3)], dim=3)
        v_self = torch.cat([v_self, _heads(v, heads)], dim=2)
        return layer.dropout1(_attend(attn, h, k_self, v_self))  # the newest token sees all

    def cross_block(h: torch.Tensor) -> torch.Tensor:
        return layer.dropout2(_attend(layer.multihead_attn, h, k_cross, v_cross, keep))

    def ff_block(h: torch.Tensor) -> torch.Tensor:
        return layer.dropout3(layer.linear2(layer.dropout(layer.activation(layer.linear1(h)))))

    if layer.norm_first:
        x = x + self_block(layer.norm1(x))
        x = x + cross_block(layer.norm2(x))
        x = x + ff_block(layer.norm3(x))
    else:
        x = layer.norm1(x + self_block(x))
        x = layer.norm2(x + cross_block(x))
        x = layer.norm3(x + ff_block(x))
    return x, k_self, v_self
