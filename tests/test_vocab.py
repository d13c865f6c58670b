"""Character vocabularies: specials, round trips, unk for unseen characters."""

from __future__ import annotations

from dlrun.data.vocab import Vocab


def test_build_encode_decode_round_trip():
    vocab = Vocab.build(["20 nov. 1989", "1989-11-20"])
    assert vocab.itos[:4] == ["<pad>", "<sos>", "<eos>", "<unk>"]
    ids = vocab.encode("20 nov. 1989")
    assert vocab.decode(ids + [vocab.eos_id, 7, 7]) == "20 nov. 1989"


def test_unseen_character_becomes_unk():
    vocab = Vocab.build(["abc"])
    assert vocab.encode("abz") == [vocab.stoi["a"], vocab.stoi["b"], vocab.unk_id]
    assert vocab.decode(vocab.encode("abz")) == "ab?"


def test_encode_batch_pads_and_appends_eos():
    vocab = Vocab.build(["ab"])
    out = vocab.encode_batch(["ab", "a"], length=4, eos=True)
    a, b = vocab.stoi["a"], vocab.stoi["b"]
    assert out.tolist() == [[a, b, vocab.eos_id, 0], [a, vocab.eos_id, 0, 0]]


def test_save_load(tmp_path):
    vocab = Vocab.build(["æøå 123"])
    vocab.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json").itos == vocab.itos
