"""Sequence metrics on hand-made cases: padding excluded, EOS counted, early stops wrong."""

from __future__ import annotations

import pytest
import torch

from dlrun.tasks.metrics import char_accuracy, exact_match, mask_after_eos

PAD, EOS = 0, 2


def t(rows):
    return torch.tensor(rows)


def test_perfect_prediction():
    target = t([[5, 6, 7, EOS], [5, 6, EOS, PAD]])
    assert char_accuracy(target, target, PAD, EOS) == 1.0
    assert exact_match(target, target, PAD, EOS) == 1.0


def test_padding_positions_do_not_count():
    target = t([[5, 6, EOS, PAD, PAD]])
    pred = t([[5, 6, EOS, 9, 9]])  # junk after EOS is ignored
    assert char_accuracy(pred, target, PAD, EOS) == 1.0
    assert exact_match(pred, target, PAD, EOS) == 1.0


def test_one_wrong_character():
    target = t([[5, 6, 7, EOS], [5, 6, 7, EOS]])
    pred = t([[5, 6, 7, EOS], [5, 9, 7, EOS]])
    assert char_accuracy(pred, target, PAD, EOS) == pytest.approx(7 / 8)
    assert exact_match(pred, target, PAD, EOS) == 0.5


def test_missing_eos_is_wrong():
    target = t([[5, 6, EOS]])
    pred = t([[5, 6, 6]])
    assert char_accuracy(pred, target, PAD, EOS) == pytest.approx(2 / 3)
    assert exact_match(pred, target, PAD, EOS) == 0.0


def test_early_eos_makes_later_positions_wrong():
    target = t([[5, 6, 7, EOS]])
    pred = t([[5, EOS, 7, EOS]])  # stopped after one character; '7' after EOS does not count
    assert char_accuracy(pred, target, PAD, EOS) == pytest.approx(1 / 4)
    assert exact_match(pred, target, PAD, EOS) == 0.0


def test_short_prediction_is_padded():
    target = t([[5, 6, 7, EOS]])
    pred = t([[5, 6]])
    assert char_accuracy(pred, target, PAD, EOS) == pytest.approx(2 / 4)


def test_mask_after_eos():
    assert mask_after_eos(t([[1, EOS, 3, EOS]]), EOS, PAD).tolist() == [[1, EOS, PAD, PAD]]


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("kitten", "sitting", 3),
        ("", "abc", 3),
        ("abc", "", 3),
        ("abc", "abc", 0),
        ("flaw", "lawn", 2),
        ("1, -3, -7", "1, -7, -3", 2),
        ("a", "b", 1),
    ],
)
def test_levenshtein_hand_made(a, b, distance):
    from dlrun.tasks.metrics import levenshtein

    def enc(s, n):
        return torch.tensor([[ord(c) for c in s] + [0] * (n - len(s))])

    n = max(len(a), len(b), 1)
    got = levenshtein(enc(a, n), torch.tensor([len(a)]), enc(b, n), torch.tensor([len(b)]))
    assert got.item() == distance


def test_lengths_to_eos():
    from dlrun.tasks.metrics import lengths_to_eos

    assert lengths_to_eos(t([[5, EOS, 0], [5, 6, 7], [EOS, 0, 0]]), EOS).tolist() == [1, 3, 0]
