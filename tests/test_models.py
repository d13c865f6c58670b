"""Seq2seq models: shapes, padding that cannot change the output, greedy and beam search."""

from __future__ import annotations

import pytest
import torch

from dlrun.models import build_model
from dlrun.models.seq2seq import Seq2Seq, Tokens, select_rows
from dlrun.plan.config import DeviceConfig, validate
from dlrun.registry import model_entry

PAD, SOS, EOS = 0, 1, 2

BASE = {
    "gru_seq2seq": {
        "embedding_size": 8,
        "hidden_size": 16,
        "num_layers": 1,
        "dropout": 0.0,
        "bidirectional": False,
        "feed_context": False,
        "teacher_forcing": 1.0,
    },
    "transformer_seq2seq": {
        "d_model": 16,
        "nhead": 2,
        "num_encoder_layers": 2,
        "num_decoder_layers": 1,
        "dim_feedforward": 32,
        "dropout": 0.0,
        "positions": "sinusoidal",
        "max_positions": 64,
        "norm_first": True,
        "src_positions": "start",
    },
    "lstm_attention_seq2seq": {
        "embedding_size": 8,
        "hidden_size": 16,
        "num_layers": 1,
        "dropout": 0.0,
        "attention": "bilinear",
    },
}
VARIANTS = [
    ("gru_seq2seq", {}),
    ("gru_seq2seq", {"bidirectional": True}),
    ("gru_seq2seq", {"num_layers": 2, "dropout": 0.1}),
    ("gru_seq2seq", {"feed_context": True}),
    ("gru_seq2seq", {"teacher_forcing": 0.5}),
    ("transformer_seq2seq", {}),
    ("transformer_seq2seq", {"positions": "learned", "norm_first": False}),
    ("transformer_seq2seq", {"src_positions": "end"}),
    ("lstm_attention_seq2seq", {}),
    ("lstm_attention_seq2seq", {"attention": "none", "num_layers": 2}),
]
IDS = [
    f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}" for name, kw in VARIANTS
]


def make(name: str, **kw) -> Seq2Seq:
    torch.manual_seed(0)
    cfg = model_entry(name).schema(name=name, **{**BASE[name], **kw})
    return build_model(cfg, tokens=Tokens(20, 15, PAD, SOS, EOS))


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=IDS)
def test_shapes(name, kw):
    model = make(name, **kw)
    src = torch.randint(4, 20, (3, 9))
    tgt_in = torch.randint(4, 15, (3, 6))
    assert model(src, tgt_in).shape == (3, 6, 15)
    model.eval()
    for beam in (1, 3):
        out = model.generate(src, max_len=7, beam_size=beam)
        assert out.shape[0] == 3 and 1 <= out.shape[1] <= 7


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=IDS)
def test_padded_positions_cannot_change_the_output(name, kw):
    model = make(name, **kw).eval()
    src = torch.randint(4, 20, (2, 10))
    src[0, 6:] = PAD
    src[1, 3:] = PAD
    longer = torch.cat([src, torch.full((2, 5), PAD)], dim=1)
    tgt_in = torch.randint(4, 15, (2, 4))
    with torch.no_grad():
        reference = model(src, tgt_in)
        assert torch.allclose(reference, model(longer, tgt_in), atol=1e-5)
        garbage = src.clone()
        garbage[0, 6:] = 7  # not padding any more: the output must now differ
        assert not torch.allclose(reference, model(garbage, tgt_in), atol=1e-5)
        greedy = model.generate(src, 6)
        assert torch.equal(greedy, model.generate(longer, 6))


@pytest.mark.parametrize("name", ["transformer_seq2seq"])
def test_decoder_is_causal(name):
    model = make(name).eval()
    src = torch.randint(4, 20, (2, 7))
    tgt_in = torch.randint(4, 15, (2, 6))
    changed = tgt_in.clone()
    changed[:, 4:] = 9
    with torch.no_grad():
        a, b = model(src, tgt_in), model(src, changed)
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-5)  # later tokens cannot leak backwards


def test_teacher_forcing_one_uses_the_targets_only():
    model = make("gru_seq2seq", teacher_forcing=1.0).train()
    src = torch.randint(4, 20, (2, 5))
    tgt_in = torch.randint(4, 15, (2, 6))
    assert torch.equal(model(src, tgt_in), model(src, tgt_in))


class Scripted(Seq2Seq):
    """A 'model' whose next-token distribution depends only on the previous token.

    From SOS: a (0.6) or b (0.4). After a: x or y (0.5 each). After b: z (1.0).
    After x, y or z: EOS. Greedy takes a then x (probability 0.3); beam search
    with two beams finds b z (0.4).
    """

    A, B, X, Y, Z = 3, 4, 5, 6, 7

    def __init__(self):
        super().__init__(None, Tokens(20, 20, PAD, SOS, EOS))
        table = torch.full((8, 8), 1e-9)
        table[SOS, self.A], table[SOS, self.B] = 0.6, 0.4
        table[self.A, self.X], table[self.A, self.Y] = 0.5, 0.5
        table[self.B, self.Z] = 1.0
        for t in (self.X, self.Y, self.Z, EOS):
            table[t, EOS] = 1.0
        self.register_buffer("table", table.log())

    def encode(self, src):
        return src.float(), src.new_zeros((src.shape[0], 0))

    def decode_step(self, memory, tokens, state):
        return self.table[tokens.squeeze(1)], state


def test_greedy_and_beam_on_a_known_model():
    model = Scripted()
    src = torch.zeros(2, 3, dtype=torch.long)
    m = Scripted
    assert model.generate(src, 5, beam_size=1).tolist() == [[m.A, m.X, EOS]] * 2
    assert model.generate(src, 5, beam_size=2).tolist() == [[m.B, m.Z, EOS]] * 2
    assert model.generate(src, 1, beam_size=2).tolist() == [[m.A]] * 2  # max_len respected


def test_greedy_stops_when_every_row_has_eos():
    model = make("gru_seq2seq").eval()
    with torch.no_grad():
        model.out.bias.fill_(-10.0)
        model.out.bias[EOS] = 10.0  # always predicts EOS
    out = model.greedy(torch.randint(4, 20, (4, 5)), max_len=11)
    assert out.tolist() == [[EOS]] * 4


def test_schema_matches_the_yaml(tiny_cfg):
    data = validate(tiny_cfg())
    model = build_model(data.model, tokens=Tokens(10, 10, PAD, SOS, EOS))
    assert model.cfg.hidden_size == 32


def test_transformer_checks(tiny_cfg):
    from dlrun.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        validate(tiny_cfg("model=transformer_seq2seq", "model.nhead=3", "model.max_positions=8"))
    # (the dates task's max_src_len is 40)
    text = str(info.value)
    assert "model.d_model=256: must be divisible by model.nhead=3" in text
    assert "model.max_positions=8: must be >= 40" in text


def _cached_and_uncached(model: Seq2Seq, src: torch.Tensor, max_len: int, beam: int):
    model.use_cache = True
    cached = model.generate(src, max_len, beam_size=beam)
    model.use_cache = False
    try:
        return cached, model.generate(src, max_len, beam_size=beam)
    finally:
        model.use_cache = True


TRANSFORMERS = [v for v in VARIANTS if v[0] == "transformer_seq2seq"]


@pytest.mark.parametrize(("name", "kw"), TRANSFORMERS, ids=[f"{k}" for _, k in TRANSFORMERS])
def test_transformer_cached_decoding_equals_the_whole_prefix(name, kw):
    model = make(name, **kw, num_decoder_layers=2).eval()
    src = torch.randint(4, 20, (6, 9))
    src[1, 5:] = PAD
    src[4, 2:] = PAD
    tgt_in = torch.cat([torch.full((6, 1), SOS), torch.randint(3, 15, (6, 7))], dim=1)
    with torch.no_grad():
        # Step by step with the cache, teacher-forced: every step's logits equal the
        # full forward pass's at that position.
        memory, state = model.encode(src)
        full = model(src, tgt_in)
        for t in range(tgt_in.shape[1]):
            logits, state = model.decode_step(memory, tgt_in[:, t : t + 1], state)
            assert torch.allclose(logits, full[:, t], atol=1e-5), t
    for beam in (1, 3):
        cached, uncached = _cached_and_uncached(model, src, 12, beam)
        assert torch.equal(cached, uncached), beam


def test_transformer_cached_decoding_after_training():
    model = make("transformer_seq2seq", num_decoder_layers=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 15, (32, 6), generator=g)
    tgt = torch.cat([src, torch.full((32, 1), EOS)], dim=1)  # copy the source
    tgt_in = torch.cat([torch.full((32, 1), SOS), tgt[:, :-1]], dim=1)
    for _ in range(100):
        logits = model(src, tgt_in)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for beam in (1, 4):
        cached, uncached = _cached_and_uncached(model, src, 10, beam)
        assert torch.equal(cached, uncached), beam
        learnt = (cached[:, : tgt.shape[1]] == tgt[:, : cached.shape[1]]).float().mean()
        assert learnt > 0.5


@pytest.mark.parametrize(("name", "kw"), VARIANTS, ids=IDS)
def test_score_and_generate_equals_forward_and_generate(name, kw):
    model = make(name, **kw).eval()
    src = torch.randint(4, 20, (3, 8))
    src[2, 5:] = PAD
    tgt_in = torch.randint(4, 15, (3, 5))
    with torch.no_grad():
        logits, pred = model.score_and_generate(src, tgt_in, 9, 2)
        assert torch.allclose(logits, model(src, tgt_in), atol=1e-5)
        assert torch.equal(pred, model.generate(src, 9, 2))


def test_fast_dropout_drops_p_and_keeps_the_expectation():
    from dlrun.models.transformer import FastDropout

    torch.manual_seed(0)
    drop = FastDropout(0.3)
    x = torch.full((500, 401), 2.0, requires_grad=True)  # an odd count: not a multiple of 4
    y = drop(x)
    zeros = (y == 0).float().mean().item()
    assert abs(zeros - 0.3) < 0.005
    assert abs(y.mean().item() - 2.0) < 0.02  # kept values scaled by 1 / (1 - p)
    assert torch.allclose(y[y != 0], torch.tensor(2.0 / 0.7))
    y.sum().backward()  # the gradient flows through the same mask
    assert torch.equal(x.grad == 0, y == 0)
    assert not torch.equal(drop(x), drop(x))  # a new mask each call
    drop.eval()
    assert torch.equal(drop(x), x)


def test_transformer_uses_fast_dropout_everywhere():
    from dlrun.models.transformer import FastDropout

    model = make("transformer_seq2seq", dropout=0.1)
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 1 + 2 * 3 + 1 * 4  # embeddings, 2 encoder + 1 decoder layers
    assert all(type(m) is FastDropout and m.p == 0.1 for m in dropouts)


@pytest.mark.parametrize("amx", [True, False])
def test_auto_amp_on_a_cpu_is_bf16_for_wide_transformers_with_amx(monkeypatch, amx):
    from dlrun.engine import device

    monkeypatch.setattr(device, "cpu_has_amx_bf16", lambda: amx)
    cfg = DeviceConfig(type="cpu", amp="auto", compile=False, threads=None, tf32=True, data="auto")
    dev = device.resolve_device(cfg)
    assert dev.amp_dtype is None
    transformer = make("transformer_seq2seq", d_model=256, nhead=8, dim_feedforward=64)
    compact, gru = make("transformer_seq2seq", d_model=128), make("gru_seq2seq")
    assert device.amp_for_model(dev, transformer, "auto").amp_dtype == (
        torch.bfloat16 if amx else None
    )
    assert device.amp_for_model(dev, compact, "auto").amp_dtype is None  # fp32 was faster
    assert device.amp_for_model(dev, gru, "auto").amp_dtype is None
    assert device.amp_for_model(dev, transformer, "none").amp_dtype is None


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_transformer_source_positions_can_count_from_the_end(positions):
    model = make("transformer_seq2seq", positions=positions, src_positions="end")
    short = torch.tensor([[5, 6, 7, PAD, PAD]])
    long = torch.tensor([[9, 8, 5, 6, 7]])  # the same last three characters, two more before
    with torch.no_grad():
        a = model._embed(model.src_embed, short)
        b = model._embed(model.src_embed, long)
        assert torch.equal(a[0, :3], b[0, 2:])  # positions 2, 1, 0 from the end in both
        start = make("transformer_seq2seq", positions=positions)
        assert not torch.equal(
            start._embed(start.src_embed, short)[0, :3], start._embed(start.src_embed, long)[0, 2:]
        )


def test_transformer_token_embeddings_have_unit_size_once_scaled():
    model = make("transformer_seq2seq", d_model=64, nhead=4)
    for embed in (model.src_embed, model.tgt_embed):
        scaled = embed.weight[1:] * 64**0.5
        assert 0.8 < scaled.std().item() < 1.2  # like the sinusoids, not 8 times larger
        assert torch.equal(embed.weight[PAD], torch.zeros(64))


def test_select_rows_reorders_every_tensor_of_a_nested_state():
    """Beam search reorders ``encode``'s memory and state, whatever tuples, named tuples,
    lists and dicts a model keeps them in; what is not a tensor (None) stays."""
    from collections import namedtuple

    Pair = namedtuple("Pair", "k v")
    x = torch.arange(12.0).view(3, 4)
    idx = torch.tensor([2, 0, 0])
    out = select_rows((None, x, [Pair(x, x[:, :1])], {"mask": x > 5}), idx)
    assert out[0] is None and torch.equal(out[1], x[idx])
    assert isinstance(out[2], list) and isinstance(out[2][0], Pair)
    assert torch.equal(out[2][0].k, x[idx]) and torch.equal(out[2][0].v, x[idx, :1])
    assert torch.equal(out[3]["mask"], (x > 5)[idx])


@pytest.mark.parametrize("rows", [1, 8])  # 1: no fillers; 8: 30 tokens packed as 32
@pytest.mark.parametrize(("name", "kw"), TRANSFORMERS, ids=[f"{k}" for _, k in TRANSFORMERS])
def test_transformer_training_leaves_padding_out_of_the_encoder(name, kw, rows, monkeypatch):
    # In training the encoder's products run on the real tokens only (and fillers up to a
    # multiple of PACK_ROWS); its outputs there, the loss and every gradient are those of
    # nn.TransformerEncoder over the padded batch.
    from dlrun.models import transformer

    monkeypatch.setattr(transformer, "PACK_ROWS", rows)
    _packed_encoder = transformer._packed_encoder
    model = make(name, **kw).train()
    src = torch.randint(4, 20, (5, 9))
    src[1, 4:] = PAD
    src[3, 1:] = PAD
    src[4, 7:] = PAD  # the last place is padding: what fillers read
    pad = src == PAD
    assert transformer._packed_rows(pad) < pad.numel()  # the model's forward packs it
    x = model._embed(model.src_embed, src)
    packed = _packed_encoder(model.encoder, x, pad)
    whole = model.encoder(x, src_key_padding_mask=pad)
    assert torch.allclose(packed[~pad], whole[~pad], atol=1e-5)
    assert (packed[pad] == 0).all()
    tgt_in = torch.randint(3, 15, (5, 6))
    grads = []
    for packing in (True, False):
        model.zero_grad()
        model.train(packing)  # in eval mode (dropout is 0 here) the batch stays padded
        model(src, tgt_in).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1]) > 10
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*grads, strict=True))
