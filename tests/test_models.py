"""Seq2seq model shapes, greedy decoding, and padding that cannot change the output."""

from __future__ import annotations

import pytest
import torch

from dlrun.config import validate
from dlrun.models import build_model

PAD, SOS, EOS = 0, 1, 2


def gru(**kw):
    cfg = {
        "name": "gru_seq2seq",
        "embedding_size": 8,
        "hidden_size": 16,
        "num_layers": 1,
        "dropout": 0.0,
        "bidirectional": False,
        "feed_context": False,
        "teacher_forcing": 1.0,
        **kw,
    }
    torch.manual_seed(0)
    return build_model(cfg, src_vocab=20, tgt_vocab=15, pad_id=PAD, sos_id=SOS, eos_id=EOS)


VARIANTS = [
    {},
    {"bidirectional": True},
    {"num_layers": 2, "dropout": 0.1},
    {"feed_context": True},
    {"teacher_forcing": 0.5},
]


@pytest.mark.parametrize("kw", VARIANTS)
def test_shapes(kw):
    model = gru(**kw)
    src = torch.randint(4, 20, (3, 9))
    tgt_in = torch.randint(4, 15, (3, 6))
    assert model(src, tgt_in).shape == (3, 6, 15)
    model.eval()
    out = model.greedy(src, max_len=7)
    assert out.shape[0] == 3 and out.shape[1] <= 7


@pytest.mark.parametrize("kw", VARIANTS)
def test_padded_positions_cannot_change_the_output(kw):
    model = gru(**kw).eval()
    src = torch.randint(4, 20, (2, 10))
    src[0, 6:] = PAD
    src[1, 3:] = PAD
    longer = torch.cat([src, torch.full((2, 5), PAD)], dim=1)
    tgt_in = torch.randint(4, 15, (2, 4))
    with torch.no_grad():
        assert torch.allclose(model(src, tgt_in), model(longer, tgt_in), atol=1e-6)
        garbage = src.clone()
        garbage[0, 6:] = 7  # not padding any more: the output must now differ
        assert not torch.allclose(model(src, tgt_in), model(garbage, tgt_in), atol=1e-6)


def test_teacher_forcing_one_uses_the_targets_only():
    model = gru(teacher_forcing=1.0).train()
    src = torch.randint(4, 20, (2, 5))
    tgt_in = torch.randint(4, 15, (2, 6))
    # Deterministic (no feedback sampling): two calls agree exactly.
    assert torch.equal(model(src, tgt_in), model(src, tgt_in))


def test_greedy_stops_when_every_row_has_eos():
    model = gru().eval()
    with torch.no_grad():
        model.out.bias.fill_(-10.0)
        model.out.bias[EOS] = 10.0  # always predicts EOS
    out = model.greedy(torch.randint(4, 20, (4, 5)), max_len=11)
    assert out.tolist() == [[EOS]] * 4


def test_schema_matches_the_yaml(tiny_cfg):
    data = validate(tiny_cfg())
    model = build_model(
        data["model"], src_vocab=10, tgt_vocab=10, pad_id=PAD, sos_id=SOS, eos_id=EOS
    )
    assert model.cfg.hidden_size == 32
