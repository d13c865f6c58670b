"""Word tokenizers, n-grams, vocabularies and the aclImdb reader, on hand-made data; then
task=text: CSV, TSV, JSON Lines and class folders of three topics, both models, labels
through predict, and each mistake in a file or a split as one line."""

from __future__ import annotations

import json
import re
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_cfg, model_cfg, save_run_config

from dlrun.cli import predict, stats
from dlrun.data import ngrams
from dlrun.data.text import (
    WordVocab,
    basic_english,
    read_aclimdb,
    read_labelled,
    whitespace,
    with_ngrams,
)
from dlrun.engine.run import run
from dlrun.errors import UserError
from dlrun.models import build_model
from dlrun.plan.config import ConfigError, validate
from dlrun.tasks.text import TextTask, nb_ratios
from dlrun.testing.fake import TOPICS, write_texts


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


# -- task=text ---------------------------------------------------------------------------

SHORT = ("trainer.max_epochs=4", "dataset.batch_size=16")


def prepared(tiny_cfg, cache: Path, *overrides: str) -> TextTask:
    task = TextTask(validate(tiny_cfg("task=text", *overrides)))
    task.prepare(cache)
    return task


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl", "folder"])
def test_every_input_form_learns_three_topics(kind, tmp_path, cache_dir):
    path = write_texts(tmp_path / "d", kind=kind)
    cfg = make_cfg(cache_dir, "task=text", f"dataset.path={path}", *SHORT)
    result = run(cfg, tmp_path / "run")
    assert result["test/accuracy"] >= 0.9  # chance is 1/3
    assert json.loads((tmp_path / "run" / "classes.json").read_text()) == sorted(TOPICS)


def test_the_cnn_learns_too_and_reads_word_order(tiny_cfg, tmp_path, cache_dir):
    path = write_texts(tmp_path / "d")
    cfg = make_cfg(
        cache_dir,
        "task=text",
        f"dataset.path={path}",
        "model=text_cnn",
        "model.filters=16",
        "model.embedding_size=16",
        "optimizer=adamw",
        "optimizer.lr=1e-2",
        *SHORT,
        "trainer.max_epochs=8",
    )
    result = run(cfg, tmp_path / "run")
    assert result["test/accuracy"] >= 0.8
    task = prepared(
        tiny_cfg, tmp_path / "c", f"dataset.path={path}", "model=text_cnn", "dataset.max_tokens=5"
    )
    d = task.splits["train"]
    assert int(d["length"].max()) == 5 and task.flat["train"].numel() == int(d["length"].sum())
    # In order, repeats kept: the first text's ids are its words, not a sorted set.
    words = task.encode(["b a b"])["ids"].tolist()
    assert words == [task.vocab.stoi.get(w, 0) for w in ["b", "a", "b"]]


def test_cnn_ignores_padding():
    torch.manual_seed(0)
    cfg = model_cfg("text_cnn", embedding_size=8, filters=4, widths=[2, 3], dropout=0.0)
    model = build_model(cfg, vocab_size=20, classes=3).eval()
    alone = model(torch.tensor([4, 5]), torch.tensor([0]))
    beside_a_longer_one = model(torch.tensor([4, 5, 1, 2, 3, 4, 5, 6]), torch.tensor([0, 2]))
    torch.testing.assert_close(beside_a_longer_one[:1], alone)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("text_run")
    path = write_texts(root / "d", kind="jsonl")
    cfg = make_cfg(cache_dir, "task=text", f"dataset.path={path}", *SHORT)
    result = run(cfg, root / "run")
    save_run_config(cfg, root / "run")
    return root / "run", result


def test_outputs_name_the_users_labels(trained, tmp_path, capsys):
    run_dir, result = trained
    per_class = json.loads((run_dir / "per_class.json").read_text())["test"]
    assert list(per_class["per_class_accuracy"]) == sorted(TOPICS)
    assert (run_dir / "confusion_test.png").read_bytes()[:4] == b"\x89PNG"
    samples = (run_dir / "samples.txt").read_text()
    assert "tech news" in samples and re.search(r"(goal|oven|chip)", samples)
    stats.main(["task=text", f"dataset.path={run_dir.parent / 'd' / 'texts.jsonl'}"])
    table = capsys.readouterr().out
    assert "| split | examples | cooking | sports | tech news | mean_words" in table


def test_predict_answers_with_the_users_labels(trained, capsys):
    run_dir, _ = trained
    capsys.readouterr()
    texts = ["the new laptop chip update", "a recipe: simmer the dough", "the team score a goal"]
    predict.main([str(run_dir), *texts])
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [r[-2] for r in rows] == ["tech news", "cooking", "sports"]
    assert all(1 / 3 < float(r[-1]) <= 1 for r in rows)


def test_separate_test_file_and_unknown_test_label(tiny_cfg, tmp_path):
    train = write_texts(tmp_path / "a", n=90)
    test = write_texts(tmp_path / "b", n=30, kind="tsv", seed=1)
    task = prepared(tiny_cfg, tmp_path / "c", f"dataset.path={train}", f"dataset.test_path={test}")
    assert task.size("test") == 30 and task.size("train") + task.size("val") == 90
    test.write_text(test.read_text() + "cooking\tpasta\nsailing\tboats\n")
    with pytest.raises(UserError, match=r"b/texts.tsv: label 'sailing' is not among the training"):
        prepared(tiny_cfg, tmp_path / "c", f"dataset.path={train}", f"dataset.test_path={test}")


def test_validation_is_a_stratified_fraction(tiny_cfg, tmp_path):
    path = write_texts(tmp_path / "d", n=300)
    task = prepared(tiny_cfg, tmp_path / "c", f"dataset.path={path}", "dataset.val_fraction=0.2")
    assert task.size("val") == 60 and task.size("test") == 30 and task.size("train") == 210
    assert torch.bincount(task.splits["val"]["label"]).tolist() == [20, 20, 20]


def test_nb_weights_of_several_classes_are_the_largest_one_against_the_rest():
    # Texts (distinct ids): {1} class 0, {1, 2} class 1, {3} class 2.
    ids, label, length = (
        torch.tensor([1, 1, 2, 3]),
        torch.tensor([0, 1, 2]),
        torch.tensor([1, 2, 1]),
    )
    r = nb_ratios(ids, label, length, vocab_size=4, alpha=1.0, classes=3)
    one_vs_rest = torch.stack(
        [nb_ratios(ids, (label == c).long(), length, 4, 1.0).double().abs() for c in range(3)]
    )
    torch.testing.assert_close(r, one_vs_rest.amax(0).float())
    assert (r >= 0).all() and r[3] > r[0]  # id 3 marks a class; id 0 (no text has it) less so


@pytest.mark.parametrize(
    "overrides",
    [("dataset.ngrams=3", "dataset.vocab_size=50"), ("model=text_cnn", "dataset.max_tokens=6")],
)
def test_a_build_in_chunks_writes_the_bytes_of_a_whole_build(
    tiny_cfg, tmp_path, monkeypatch, overrides
):
    """Chunks of 7 texts and of 1, n-grams counted in many files: the same ids,
    vocabulary and statistics as one chunk and one file, byte for byte."""
    path = write_texts(tmp_path / "d", n=60)
    cfg = validate(tiny_cfg("task=text", f"dataset.path={path}", *overrides))
    folders = {}
    for chunk, per_bucket in ((10**6, 10**9), (7, 50), (1, 7)):
        monkeypatch.setattr(ngrams, "KEYS_PER_BUCKET", per_bucket)
        folders[chunk] = tmp_path / str(chunk)
        folders[chunk].mkdir()
        TextTask(cfg)._build(folders[chunk], path, chunk=chunk)
    whole = {f.name: f.read_bytes() for f in folders[10**6].iterdir()}
    assert sorted(whole) == sorted(
        ["data.pt", "ids_train.bin", "ids_val.bin", "ids_test.bin", "vocab.json"]
        + ["classes.json", "shown.json", "stats.json"]
    )
    assert len(json.loads(whole["vocab.json"])) > 10
    for chunk in (7, 1):
        assert {f.name: f.read_bytes() for f in folders[chunk].iterdir()} == whole, chunk


@pytest.mark.parametrize("per_bucket", [10**9, 100, 1])
def test_key_counts_in_chunks_and_files_rank_as_counter_most_common(tmp_path, per_bucket):
    rng = np.random.default_rng(0)
    keys = rng.zipf(1.5, 2000).astype(np.int64) % 300 * 10**12  # large keys too
    expected = Counter(keys.tolist()).most_common()
    for sizes in ([2000], [1, 0, 5, 994, 1000], [3] * 666 + [2]):
        counts, at = ngrams.KeyCounts(tmp_path, keys.size, per_bucket), 0
        for size in sizes:
            counts.add(keys[at : at + size])
            at += size
        assert at == keys.size and len(counts.files) == min(-(-2000 // per_bucket), 512)
        top, n = counts.ranked()
        assert list(zip(top.tolist(), n.tolist())) == expected
        top, n = counts.ranked(limit=7)
        assert list(zip(top.tolist(), n.tolist())) == expected[:7]
        counts.close()
    assert not list(tmp_path.iterdir())  # the files were never named


def _write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


MISTAKES = [
    (
        "t.csv",
        "text,stars\nhello,1\nbye,2\n",
        [],
        r"t.csv: no column 'label' \(its columns: "
        r"text, stars\); set dataset.label_column=NAME",
    ),
    ("t.csv", "body,label\nhello,a\n", [], r"no column 'text' .*dataset.text_column=NAME"),
    (  # a header of hundreds of columns (found by the readers' fuzz test) stays one short line
        "t.csv",
        "text," + ",".join(f"c{i}" for i in range(500)) + "\nhello" + ",1" * 500 + "\n",
        [],
        r"its columns: text, c0, c1, .*, c10, \.\.\. \(501 in all\)\); set dataset.label_column",
    ),
    (
        "t.csv",
        "text,label\nhello,a\nbye,b,extra\n",
        [],
        r"t.csv: line 3: 3 fields where the "
        r"header has 2; quote a text that holds a comma",
    ),
    ("t.csv", "text,label\nhello,a\n  ,b\n", [], r"t.csv: line 3, column 'text': empty text"),
    ("t.tsv", "text\tlabel\nhello\ta\nbye\t\n", [], r"t.tsv: line 3, column 'label': empty label"),
    (
        "t.csv",
        "text,label\nhello,a\nbye,a\n",
        [],
        r"t.csv: every text has the label 'a' "
        r"\(column 'label'\); a classifier needs at least two classes",
    ),
    (
        "t.jsonl",
        '{"text": "hi", "label": "a"}\n{"text": "yo", "label": \n',
        [],
        r"t.jsonl: line 2: not JSON \(Expecting value at column 25\)",
    ),
    (
        "t.jsonl",
        '{"text": "hi", "label": "a"}\n["yo", "b"]\n',
        [],
        r"t.jsonl: line 2: expected "
        r"a JSON object",
    ),
    (
        "t.jsonl",
        '{"text": "hi", "label": "a"}\n\n{"label": "b"}\n',
        [],
        r"t.jsonl: line 3: no "
        r"column 'text' \(its columns: label\); set dataset.text_column=NAME",
    ),
    (
        "t.jsonl",
        '{"text": "hi", "label": "a"}\n{"text": null, "label": "b"}\n',
        [],
        r"t.jsonl: line 2, column 'text': expected a text, got None",
    ),
    ("t.csv", "text,label\n", [], r"t.csv: no rows of text and label in it"),
    ("t.txt", "hello", [], r"t.txt: not a file dlrun reads texts from; give a .csv, .tsv"),
    (
        "t.csv",
        b"text,label\nna\xefve,a\n",
        [],
        r"t.csv: line 2: not utf-8 text \(byte 13 is 0xef\); "
        r"set dataset.encoding=NAME",
    ),
    (  # after a byte-order mark: the byte and line counted in the file
        "t.csv",
        b"\xef\xbb\xbftext,label\nna\xefve,a\n",
        [],
        r"t.csv: line 2: not utf-8 text \(byte 16 is 0xef\)",
    ),
    (
        "t.csv",
        "text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(6)),
        ["dataset.val_fraction=0.05"],
        r"6 texts split by dataset.val_fraction=0.05 and "
        r"dataset.test_fraction=0.1 leave nothing left to validate or test on",
    ),
    (
        "t.csv",
        "text,label\n" + "".join(f"t{i},{'a' if i > 2 else 'b'}\n" for i in range(30)),
        ["dataset.val_fraction=0.5", "dataset.test_fraction=0.35"],
        r"leave no 'b' text left to train on",
    ),
]


@pytest.mark.parametrize(("name", "content", "overrides", "message"), MISTAKES)
def test_file_mistakes_are_one_line(tmp_path, capsys, name, content, overrides, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SystemExit) as info:
        stats.main(["task=text", f"dataset.path={path}", f"paths.cache_dir={tmp_path}", *overrides])
    err = capsys.readouterr().err
    assert info.value.code == 2 and re.search(message, err), err
    assert err.count("\n") == 1 and err.startswith("dlrun-stats: error: ")


def test_a_utf8_byte_order_mark_is_not_part_of_the_data(tmp_path):
    """Excel's "CSV UTF-8" and Notepad start a file with a byte-order mark: it is neither
    part of the first column's name nor of the first word."""
    from dlrun.data.text import read_labelled

    bom = "\ufeff"
    (tmp_path / "t.csv").write_text(bom + "text,label\ngreat film,pos\nawful,neg\n")
    (tmp_path / "t.jsonl").write_text(bom + '{"text": "great film", "label": "pos"}\n')
    for name in ("pos", "neg"):
        (tmp_path / "folder" / name).mkdir(parents=True)
        (tmp_path / "folder" / name / "1.txt").write_text(bom + "great film")
    assert read_labelled(tmp_path / "t.csv", "text", "label")[0] == ("great film", "pos")
    assert read_labelled(tmp_path / "t.jsonl", "text", "label") == [("great film", "pos")]
    assert {t for t, _ in read_labelled(tmp_path / "folder", "text", "label")} == {"great film"}


def test_every_class_is_counted_whatever_its_name(tmp_path, capsys):
    """Classes named like a split's figures ("tokens", "examples") or holding a '|' keep
    their own column in stats.json and in dlrun-stats' table."""
    names = ["tokens", "examples", "a|b"]
    rows = "".join(f"word{i % 7} other{i},{names[i % 3]}\n" for i in range(90))
    path = tmp_path / "t.csv"
    path.write_text("text,label\n" + rows)
    stats.main(["task=text", f"dataset.path={path}", f"paths.cache_dir={tmp_path}"])
    header = capsys.readouterr().out.splitlines()[0]
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", header)[1:-1]]
    assert cells[:5] == ["split", "examples", "a\\|b", "class examples", "class tokens"]
    assert {"mean_words", "tokens", "oov_tokens"} <= set(cells)


def test_folder_mistakes_are_one_line(tmp_path):
    root = tmp_path / "texts"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    with pytest.raises(UserError, match=r"texts: no .txt files in subfolders"):
        read_labelled(root, "text", "label")
    (root / "a" / "1.txt").write_text("hello")
    (root / "b" / "2.txt").write_text("  \n")
    with pytest.raises(UserError, match=r"b/2.txt: empty text; fill it or remove the file"):
        read_labelled(root, "text", "label")


def test_config_mistakes_are_listed_before_reading(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError) as info:
        validate(
            tiny_cfg(
                "task=text",
                "dataset.val_fraction=0.5",
                "dataset.test_fraction=0.45",
                "dataset.encoding=klingon",
            )
        )
    message = str(info.value)
    assert "dataset.val_fraction + dataset.test_fraction = 0.95: leaves too little" in message
    assert "dataset.encoding=klingon: unknown encoding" in message
    with pytest.raises(ConfigError, match="dataset.test_fraction=0 with no dataset.test_path"):
        validate(tiny_cfg("task=text", "dataset.test_fraction=0"))
    with pytest.raises(ConfigError, match="label_column are both 'label': the model would read"):
        validate(tiny_cfg("task=text", "dataset.text_column=label"))
