"""Word tokenizers, n-grams, vocabularies and the aclImdb reader, on hand-made data."""

from __future__ import annotations

import tarfile

import pytest

from dlrun.data.text import WordVocab, basic_english, read_aclimdb, whitespace, with_ngrams
from dlrun.errors import UserError


def test_basic_english_rules():
    text = 'A "Great" film.<br /><br />I\'d see it (again)! Really? Yes; no: maybe, OK'
    assert basic_english(text) == [
        "a",
        "great",
        "film",
        ".",
        "i",
        "'",
        "d",
        "see",
        "it",
        "(",
        "again",
        ")",
        "!",
        "really",
        "?",
        "yes",
        "no",
        "maybe",
        ",",
        "ok",
    ]


def test_whitespace_keeps_case_and_punctuation():
    assert whitespace("Great film.<br />Yes!") == ["Great", "film.<br", "/>Yes!"]


def test_ngrams():
    assert with_ngrams(["a", "b", "c"], 1) == ["a", "b", "c"]
    assert with_ngrams(["a", "b", "c"], 2) == ["a", "b", "c", "a b", "b c"]
    assert with_ngrams(["a"], 3) == ["a"]


def test_vocab_keeps_the_most_frequent_and_maps_the_rest_to_zero():
    docs = [["good", "film", "good"], ["bad", "film", "good"], ["odd"]]
    vocab = WordVocab.build(docs, size=2)
    assert vocab.itos == ["<oov>", "good", "film"]
    assert vocab.encode(["good", "bad", "film", "unseen"]) == [1, 0, 2, 0]
    assert len(vocab) == 3


def write_corpus(root):
    reviews = {
        "train/pos/0_9.txt": "Loved it.",
        "train/pos/1_8.txt": "Great<br />film",
        "train/neg/2_1.txt": "Awful.",
        "test/pos/3_10.txt": "Superb",
        "test/neg/4_2.txt": "Dull",
    }
    for name, text in reviews.items():
        (root / "aclImdb" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "aclImdb" / name).write_text(text)
    return reviews


def test_reader_from_folder_and_tarball(tmp_path):
    write_corpus(tmp_path)
    from_dir = read_aclimdb(tmp_path / "aclImdb")
    assert from_dir["train"] == [("Awful.", 0, 1), ("Loved it.", 1, 9), ("Great<br />film", 1, 8)]
    assert from_dir["test"] == [("Dull", 0, 2), ("Superb", 1, 10)]
    with tarfile.open(tmp_path / "aclImdb_v1.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "aclImdb", arcname="aclImdb")
    assert read_aclimdb(tmp_path / "aclImdb_v1.tar.gz") == from_dir


def test_reader_errors(tmp_path):
    with pytest.raises(UserError, match="no aclImdb data there"):
        read_aclimdb(tmp_path / "missing")
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b\x08not really gzip")
    with pytest.raises(UserError, match="not a readable aclImdb tarball"):
        read_aclimdb(tmp_path / "broken.tar.gz")
    (tmp_path / "aclImdb" / "train" / "pos").mkdir(parents=True)
    (tmp_path / "aclImdb" / "train" / "pos" / "0_9.txt").write_text("x")
    with pytest.raises(UserError, match="no test/pos or test/neg reviews"):
        read_aclimdb(tmp_path / "aclImdb")


def test_basic_english_in_one_pass_equals_torchtext_s_rules():
    import random

    from dlrun.data.text import basic_english_reference

    texts = [
        'It\'s "great"<br />  (really)?; yes: no.',
        'x<br "/>y',
        "dots...and,commas",
        "tab\tnew\nline\x0bvt \u00a0nbsp \u2003em \x1cfs",
        "ÉCOLE d'été <BR />UPPER",
        ":;",
        "",
    ]
    rng = random.Random(0)
    chars = list("ab '\".,()!?;:<>/br\t\n\x1c\x85\u00a0Ç")
    texts += ["".join(rng.choice(chars) for _ in range(rng.randint(0, 24))) for _ in range(3000)]
    for text in texts:
        assert basic_english(text) == basic_english_reference(text), text


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_reader_reads_every_tar_format(tmp_path, fmt):
    """The block reader, and tarfile where a header needs it (long names, pax records)."""
    deep = "d" * 90  # directories past ustar's 100-character name field
    for split in ("train", "test"):
        for label, text in (("pos", "good film"), ("neg", "bad film")):
            folder = tmp_path / "aclImdb" / split / label
            folder.mkdir(parents=True)
            (folder / "3_8.txt").write_text(f"{text} {split} é")
    (tmp_path / "aclImdb" / "train" / "pos" / deep).mkdir()
    (tmp_path / "aclImdb" / "train" / "pos" / deep / "4_9.txt").write_text("not a review path")
    from_dir = read_aclimdb(tmp_path / "aclImdb")
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz", format=fmt) as tar:
        tar.add(tmp_path / "aclImdb", arcname="aclImdb")
    assert read_aclimdb(tmp_path / "a.tar.gz") == from_dir
