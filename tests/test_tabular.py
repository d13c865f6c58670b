"""task=tabular: your own CSV/TSV table, classification and regression (seed 004)."""

from __future__ import annotations

import csv
import json
import random
import re
import warnings
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from conftest import save_run_config

from dlrun.cli.predict import load_run
from dlrun.cli.stats import format_stats
from dlrun.data.table import read_table, split_indices
from dlrun.engine.run import run
from dlrun.errors import UserError
from dlrun.plan.config import validate
from dlrun.rundir.layout import RunDir
from dlrun.tasks.tabular import TabularTask, held_out_fractions


def table(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "text", "delimiter"),
    [
        ("a.csv", "x,y,label\n1,2,a\n3,4,b\n", ","),
        ("a.txt", "x;y;label\n1;2;a\n3;4;b\n", ";"),
        ("a.tsv", "x\ty\tlabel\n1\t2\ta\n3\t4\tb\n", "\t"),
        ("a.dat", "x|y|label\n1|2|a\n\n3|4|b\n", "|"),
    ],
)
def test_delimiters_are_detected(tmp_path, name, text, delimiter):
    t = read_table(table(tmp_path, name, text))
    assert (t.delimiter, t.header, [t.row(i) for i in range(len(t))]) == (
        delimiter,
        ["x", "y", "label"],
        [
            ["1", "2", "a"],
            ["3", "4", "b"],
        ],
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"empty file"),
        ("x,y\n", r"no data rows"),
        ("x,x\n1,2\n", r"distinct, non-empty column names"),
        ("x,y,label\n1,2,a\n3,4\n", r"line 3: 2 values, the header has 3 columns"),
    ],
)
def test_malformed_tables_are_one_line(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        read_table(table(tmp_path, "t.csv", text))


def _task(tiny_cfg, path: Path, *overrides: str) -> TabularTask:
    data = validate(tiny_cfg("task=tabular", f"dataset.path={path}", *overrides))
    task = TabularTask(data)
    task.prepare(path.parent)
    return task


def _rows(n: int, missing_at: int | None = None) -> str:
    rng = random.Random(0)
    lines = ["size,colour,price"]
    for i in range(n):
        size, colour = rng.uniform(0, 10), rng.choice(["red", "blue"])
        price = 3 * size + (5 if colour == "red" else 0) + rng.gauss(0, 0.2)
        cell = "" if i == missing_at else f"{size:.3f}"
        lines.append(f"{cell},{colour},{price:.3f}")
    return "\n".join(lines) + "\n"


def test_missing_values_error_impute_or_drop(tiny_cfg, tmp_path):
    path = table(tmp_path, "m.csv", _rows(200, missing_at=7))
    args = ("dataset.target=price", "task.problem=regression")
    with pytest.raises(
        UserError, match=r"m.csv, line 9, column 'size': missing value; .*missing=mean"
    ):
        _task(tiny_cfg, path, *args)
    imputed = _task(tiny_cfg, path, *args, "dataset.missing=mean")
    dropped = _task(tiny_cfg, path, *args, "dataset.missing=drop")
    # A missing target cannot be imputed: only dropping its row is offered.
    lines = _rows(200).splitlines()
    lines[5] = lines[5].rsplit(",", 1)[0] + ","
    no_target = table(tmp_path, "t.csv", "\n".join(lines) + "\n")
    with pytest.raises(UserError) as info:
        _task(tiny_cfg, no_target, *args, "dataset.missing=mean")
    assert str(info.value).endswith(
        "column 'price': missing value; fill it in, or set dataset.missing=drop (leave the row out)"
    )
    total = lambda t: sum(t.size(s) for s in t.splits)  # noqa: E731
    assert (total(imputed), total(dropped)) == (200, 199)
    # size standardized, colour one-hot from the training split's categories
    assert imputed.encoder.width == 3 and imputed.encoder.categories == {"colour": ["blue", "red"]}
    x = imputed.splits["train"]["x"]
    assert abs(float(x[:, 0].mean())) < 0.05 and set(x[:, 1:].sum(1).tolist()) == {1.0}


def test_the_table_is_held_once_as_the_splits_tensors(tiny_cfg, tmp_path):
    text = _rows(200)
    path = table(tmp_path, "m.csv", text)
    task = _task(tiny_cfg, path, "dataset.target=price", "task.problem=regression")
    # The statistics are the whole table's; of the table itself only the test rows stay,
    # for samples to show them, each still named by its line in the file.
    assert task.stats()["columns"]["size"]["count"] == 200
    n = task.size("test")
    assert len(task.test_rows) == n and task.describe("val", 0) == "#0"
    assert task.test_rows.header == ["size", "colour"]  # the features: the target is not kept
    lines = text.splitlines()
    for i in range(n):
        size, colour = task.describe("test", i).split(",")
        line = int(task.test_rows.where(i).rsplit(" ", 1)[1])
        written = lines[line - 1].split(",")
        assert (float(size), colour) == (pytest.approx(float(written[0])), written[1])
    assert torch.equal(task.encoder.encode(task.test_rows, np.arange(n)), task.splits["test"]["x"])


def test_regression_learns_and_predicts(tiny_cfg, tmp_path):
    path = table(tmp_path, "r.csv", _rows(300))
    cfg = tiny_cfg(
        "task=tabular",
        f"dataset.path={path}",
        "dataset.target=price",
        "task.problem=regression",
        "trainer.max_steps=400",
        "trainer.eval_every=100",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's included: a run prints none
        result = run(cfg, tmp_path / "run")
    assert result["test/r2"] > 0.95 and result["test/rmse"] < 3
    # Errors, largest first, not a count of "wrong" numbers; predicted against true.
    lines = (tmp_path / "run" / "samples.txt").read_text().splitlines()
    assert re.match(r"# 5 of \d+ test examples, largest errors first", lines[0])
    assert "; the whole test split: loss " in lines[0] and " r2 " in lines[0]
    assert lines[1] == "error\tsource\ttarget\tprediction"
    errors = [float(line.split("\t")[0]) for line in lines[2:]]
    assert errors == sorted(errors, key=abs, reverse=True)
    for line in lines[2:]:
        error, _, target, prediction = line.split("\t")
        assert float(error) == pytest.approx(float(prediction) - float(target), abs=1e-3)
    assert matplotlib.image.imread(tmp_path / "run" / "predicted_vs_true_test.png").shape[0] > 100
    save_run_config(cfg, tmp_path / "run")
    task, model = load_run(tmp_path / "run")
    (red, blue) = [float(v) for v in task.predict(model, ["4,red", "4,blue"], 8)]
    assert red - blue == pytest.approx(5, abs=1.5) and blue == pytest.approx(12, abs=2)


def test_classification_run_pictures_and_predict(tiny_cfg, corpora, tmp_path):
    cfg = tiny_cfg("task=tabular", "dataset.features=[feature1,feature2]", "trainer.max_steps=60")
    result = run(cfg, tmp_path)
    assert result["test/accuracy"] >= 0.95
    for name in ("decision_boundary.png", "data.png", "confusion_test.png"):
        assert matplotlib.image.imread(tmp_path / name).shape[0] > 100
    state = json.loads((tmp_path / "tabular.json").read_text())
    assert state["classes"] == ["0", "1", "2"]
    assert set(state["encoder"]["numeric"]) == {"feature1", "feature2"}
    task, model = load_run(tmp_path)
    # A typed header names the columns: any order, extra columns ignored.
    inputs = task.inputs_from_lines(["labels,feature2,feature1", "", "9,-1,-1", "9,-1,1", "9,1,0"])
    assert inputs == ["-1,-1", "1,-1", "0,1"]
    rows = task.predict(model, inputs, 8)
    assert [r.split("\t")[0] for r in rows] == ["0", "1", "2"]
    assert all(0.5 < float(r.split("\t")[1]) <= 1 for r in rows)
    with pytest.raises(UserError, match=r"input 1: 1 values, expected 2 \(feature1, feature2\)"):
        task.predict(model, ["0.5"], 8)
    with pytest.raises(UserError, match=r"input 1, column 'feature2': 'abc' is not a number"):
        task.predict(model, ["0.5,abc"], 8)


def test_decision_regions_leave_out_points_with_a_missing_value(tiny_cfg, corpora, tmp_path):
    lines = corpora["tabular"].read_text().splitlines()
    at = lines[0].split(",").index("feature1")
    for i in range(1, len(lines), 4):  # every fourth row lacks feature1: some test rows too
        cells = lines[i].split(",")
        cells[at] = ""
        lines[i] = ",".join(cells)
    path = table(tmp_path, "gaps.csv", "\n".join(lines) + "\n")
    cfg = tiny_cfg(
        "task=tabular",
        f"dataset.path={path}",
        "dataset.features=[feature1,feature2]",
        "dataset.missing=mean",
        "trainer.max_steps=20",
    )
    run(cfg, tmp_path / "run")
    assert matplotlib.image.imread(tmp_path / "run" / "decision_boundary.png").shape[0] > 100


def test_rows_taken_from_a_table_keep_their_values_and_lines(tmp_path):
    rows = [f"w{i},{i if i % 3 else ''}" for i in range(1000)]  # 1,000 distinct words
    t = read_table(table(tmp_path, "w.csv", "word,n\n" + "\n".join(rows) + "\n"))
    taken = t.take(np.array([999, 3, 10]))
    assert [taken.row(i) for i in range(3)] == [["w999", ""], ["w3", ""], ["w10", "10"]]
    # Of the column's 1,000 distinct values, only those its rows use.
    assert taken.column("word").values == ["w3", "w10", "w999"]
    assert taken.column("n").missing.tolist() == [True, True, False]
    assert taken.where(0) == f"{t.path}, line 1001" and taken.take(np.array([2])).where(0) == (
        f"{t.path}, line 12"
    )
    assert taken.select(["n"]).row(2) == ["10"]


def test_statistics_like_describe(tiny_cfg, corpora):
    task = _task(tiny_cfg, corpora["tabular"], "dataset.target=labels")
    stats = task.stats()
    assert stats["classes"] == {"0": 100, "1": 100, "2": 100}
    f1 = stats["columns"]["feature1"]
    assert f1["count"] == 300 and f1["min"] <= f1["25%"] <= f1["50%"] <= f1["75%"] <= f1["max"]
    assert abs(stats["correlation"]["feature1"]["feature2"]) < 0.3
    assert stats["correlation"]["feature1"]["feature1"] == pytest.approx(1)
    text = format_stats(stats)
    assert "| feature1 | 300 |" in text and "correlation:" in text


def test_statistics_in_chunks_match_numpy(tmp_path, monkeypatch):
    """Means, standard deviations and correlations summed a few rows at a time (with and
    without missing values) are numpy's over the whole columns; the encoder's mean and
    std (population) too."""
    import numpy as np

    import dlrun.data.table as table_module

    monkeypatch.setattr(table_module, "STATS_CHUNK", 7)  # many chunks, one partial
    rng = np.random.default_rng(1)
    x = rng.normal(3, 2, 101)
    y = 0.5 * x + rng.normal(0, 1, 101)
    z = rng.uniform(-1, 1, 101)
    lines = [
        f"{a:.6f},{b:.6f},{'' if i % 10 == 3 else f'{c:.6f}'}"
        for i, (a, b, c) in enumerate(zip(x, y, z))
    ]
    path = table(tmp_path, "t.csv", "x,y,z\n" + "\n".join(lines) + "\n")
    t = read_table(path)
    stats = table_module.summary(t, "z", ["x", "y"], classes=False)
    columns = {n: c.numbers.astype(np.float64) for n, c in zip(t.header, t.columns)}
    assert stats["columns"]["x"]["std"] == pytest.approx(columns["x"].std(ddof=1), abs=1e-6)
    assert stats["columns"]["y"]["mean"] == pytest.approx(columns["y"].mean(), abs=1e-6)
    assert stats["correlation"]["x"]["y"] == pytest.approx(
        np.corrcoef(columns["x"], columns["y"])[0, 1], abs=1e-4
    )
    both = table_module.summary(t, "x", ["y", "z"], classes=False)["correlation"]["y"]["z"]
    present = ~np.isnan(columns["z"])  # the rows where neither is missing
    assert both == pytest.approx(
        np.corrcoef(columns["y"][present], columns["z"][present])[0, 1], abs=1e-4
    )
    enc = table_module.Encoder.fit(t, np.arange(101), ["x", "z"], impute=True)
    assert enc.numeric["x"] == pytest.approx((columns["x"].mean(), columns["x"].std()))
    zs = columns["z"][present]
    assert enc.numeric["z"] == pytest.approx((zs.mean(), zs.std()))


def test_split_order_is_a_seeded_shuffle_of_the_rows():
    """The rows' order is random.shuffle's for the seed, as it always was (a run resumed
    or predicted on by a later version keeps its splits)."""
    from types import SimpleNamespace

    from dlrun.data.table import split_indices

    d = SimpleNamespace(seed=5, test_path=None, test_fraction=0.2, val_fraction=0.1)
    order = list(range(50))
    random.Random(5).shuffle(order)
    splits = split_indices(50, d)
    assert splits["test"].tolist() == order[:10] and splits["val"].tolist() == order[10:15]
    assert splits["train"].tolist() == order[15:]


def test_label_and_config_mistakes(tiny_cfg, tmp_path):
    single = table(tmp_path, "one.csv", "x,label\n" + "".join(f"{i},a\n" for i in range(30)))
    with pytest.raises(UserError, match=r"one class in training"):
        _task(tiny_cfg, single, "dataset.target=label")
    with pytest.raises(UserError, match=r"no column 'nope'; its columns are x, label"):
        _task(tiny_cfg, single, "dataset.target=nope")
    with pytest.raises(UserError, match=r"dataset.target: name the label column"):
        validate(tiny_cfg("task=tabular", f"dataset.path={single}", "dataset.target=null"))
    with pytest.raises(UserError, match=r"task.monitor=val/accuracy: not a regression metric"):
        validate(tiny_cfg("task=tabular", "task.problem=regression", "task.monitor=val/accuracy"))
    with pytest.raises(UserError, match=r"task.problem=regression: task dates has one kind"):
        validate(tiny_cfg("+task.problem=regression"))
    with pytest.raises(UserError, match=r"dataset.features: x listed twice; list each once"):
        validate(tiny_cfg("task=tabular", f"dataset.path={single}", "dataset.features=[x,x]"))


def test_separate_test_table(tiny_cfg, tmp_path, corpora):
    lines = corpora["tabular"].read_text().splitlines()
    train = table(tmp_path, "train.csv", "\n".join(lines[:251]) + "\n")
    test = table(tmp_path, "test.csv", "\n".join([lines[0], *lines[251:]]) + "\n")
    task = _task(tiny_cfg, train, f"dataset.test_path={test}")
    assert task.size("test") == 50 and task.size("train") + task.size("val") == 250
    # Its columns are found by name: in another order, with one more, the same test split.
    rows = [next(csv.reader([line])) for line in [lines[0], *lines[251:]]]
    shuffled = ["\t".join(["id", *reversed(r)]) for r in rows]
    other = table(tmp_path, "other.tsv", "\n".join(shuffled) + "\n")
    again = _task(tiny_cfg, train, f"dataset.test_path={other}")
    assert torch.equal(again.splits["test"]["x"], task.splits["test"]["x"])
    assert torch.equal(again.splits["test"]["label"], task.splits["test"]["label"])
    target = task.cfg.dataset.target
    at = rows[0].index(target)
    lacking = ["\t".join(r[:at] + r[at + 1 :]) for r in rows]
    lacking_path = table(tmp_path, "lacking.tsv", "\n".join(lacking) + "\n")
    with pytest.raises(UserError, match=f"lacking.tsv: no column '{target}'"):
        _task(tiny_cfg, train, f"dataset.test_path={lacking_path}")


@pytest.mark.parametrize(
    ("row", "target", "message"),
    [
        ("1e308,0.5,1", "y", "column 'a': values as large as 1e\\+308 overflow"),
        ("0.5,0.5,1e300", "y", "column 'y': values as large as 1e\\+300 overflow"),
        (None, "c", "column 'c' is 5 in every training row; regression needs"),
    ],
)
def test_targets_and_features_that_cannot_be_standardized(tiny_cfg, tmp_path, row, target, message):
    """A column too large for float64 statistics, or a constant regression target: one
    line before training (they used to train, then fail writing plots, or divide by 0)."""
    rng = random.Random(0)
    lines = [f"{rng.random()},{rng.random()},{rng.random() * 3},5" for _ in range(60)]
    if row is not None:  # in every fifth row, so that training has some
        for i in range(0, len(lines), 5):
            lines[i] = row + ",5"
    path = table(tmp_path, "t.csv", "a,b,y,c\n" + "\n".join(lines) + "\n")
    with pytest.raises(UserError, match=message):
        _task(tiny_cfg, path, f"dataset.target={target}", "task.problem=regression")


def test_a_few_non_numbers_in_a_number_column_are_named(tiny_cfg, tmp_path):
    """One "1,234" among numbers is a typo to fix (it used to make the column categories,
    silently); a numeric target without task.problem=regression is pointed to it."""
    rng = random.Random(0)
    lines = [f"{rng.randint(1, 5)},{rng.random()},{rng.choice('ab')}" for _ in range(60)]
    lines[0] = '"1,000",0.5,a'  # the first row: always in the file's first line
    path = table(tmp_path, "t.csv", "rooms,area,kind\n" + "\n".join(lines) + "\n")
    with pytest.raises(UserError) as info:
        _task(tiny_cfg, path, "dataset.target=kind")
    message = str(info.value)
    assert "line 2, column 'rooms': '1,000' is not a number, where" in message, message
    assert "dataset.categorical=[rooms]" in message
    assert _task(tiny_cfg, path, "dataset.target=kind", "dataset.categorical=[rooms]")
    values = table(tmp_path, "v.csv", "a,y\n" + "".join(f"{i},{i * 1.5}\n" for i in range(80)))
    with pytest.raises(UserError, match="distinct numbers: to predict a number, add task.problem"):
        _task(tiny_cfg, values, "dataset.target=y")


def test_large_but_representable_values_train(tiny_cfg, tmp_path):
    """Values far past float32's squares (1e20) and near float64's (1e200) standardize:
    only what float64 cannot hold is refused."""
    rng = random.Random(0)
    lines = [f"{rng.random() * 1e200},{rng.random()},{rng.random() * 1e20}" for _ in range(60)]
    path = table(tmp_path, "t.csv", "a,b,y\n" + "\n".join(lines) + "\n")
    task = _task(tiny_cfg, path, "dataset.target=y", "task.problem=regression")
    mean, std = task.encoder.numeric["a"]
    assert 1e198 < std < 1e200 and 1e18 < task.target_stats[1] < 1e20
    correlation = task.stats()["correlation"]["a"]  # the columns scaled first: no overflow
    assert correlation["a"] == 1.0 and -1 <= correlation["b"] <= 1
    assert torch.isfinite(task.splits["train"]["x"]).all()


def test_test_value_past_float32_names_its_line(tiny_cfg, tmp_path):
    """A held-out value that standardizes past float32's range (training's are small)."""
    rng = random.Random(0)
    lines = [f"{rng.random()},{rng.random()},{rng.random() * 3}" for _ in range(60)]
    path = table(tmp_path, "t.csv", "a,b,y\n" + "\n".join(lines) + "\n")
    test = table(tmp_path, "test.csv", "a,b,y\n0.5,0.5,1\n1e38,0.5,1\n")
    with pytest.raises(UserError, match="test.csv, line 3, column 'a': 1e\\+38 is too large"):
        _task(
            tiny_cfg,
            path,
            "dataset.target=y",
            "task.problem=regression",
            f"dataset.test_path={test}",
        )


def test_classification_report_covers_every_test_split(tiny_cfg, corpora, tmp_path):
    """A classification task with two test splits: per_class.json and a confusion figure each."""
    task = _task(tiny_cfg, corpora["tabular"], "dataset.target=labels")
    # The second test split lacks the first class: no accuracy for it there (null, not 0).
    others = task.splits["test"]["label"] != 0
    task.splits["test_again"] = {k: v[others] for k, v in task.splits["test"].items()}
    assert task.test_splits == ["test", "test_again"]
    model = task.build_model()
    task.report(model, RunDir(tmp_path))
    per_class = json.loads((tmp_path / "per_class.json").read_text())
    assert list(per_class) == ["test", "test_again"]
    assert list(per_class["test"]["per_class_accuracy"]) == list(task.classes)
    assert sum(map(sum, per_class["test"]["confusion"])) == task.size("test")
    first, *rest = task.classes
    again = per_class["test_again"]["per_class_accuracy"]
    assert again[first] is None and again[first] != per_class["test"]["per_class_accuracy"][first]
    assert all(again[c] == per_class["test"]["per_class_accuracy"][c] for c in rest)
    for split in per_class:
        assert matplotlib.image.imread(tmp_path / f"confusion_{split}.png").shape[0] > 100


def _texts(n: int, distinct: bool) -> str:
    rng = random.Random(0)
    words = ["good", "bad", "fine", "odd", "new", "old", "red", "big"]
    lines = ["size,note,label"]
    for i in range(n):
        note = " ".join(rng.choice(words) for _ in range(6)) if distinct else rng.choice(words)
        lines.append(f"{i % 7},{note},{'ab'[i % 2]}")
    return "\n".join(lines) + "\n"


def test_free_text_column_is_refused_unless_listed(tiny_cfg, tmp_path):
    """A column of mostly distinct texts is not one-hot encoded silently (issue 24)."""
    path = table(tmp_path, "notes.csv", _texts(200, distinct=True))
    with pytest.raises(UserError) as info:
        _task(tiny_cfg, path, "dataset.target=label")
    message = str(info.value)
    assert "\n" not in message and "column 'note'" in message and "look like free text" in message
    assert (
        "task=text dataset.text_column=note" in message and "dataset.categorical=[note]" in message
    )
    listed = _task(tiny_cfg, path, "dataset.target=label", "dataset.categorical=[note]")
    assert len(listed.encoder.categories["note"]) > 100 and "size" in listed.encoder.numeric
    # Few distinct words are categories; a numeric-looking column listed becomes one-hot.
    words = table(tmp_path, "words.csv", _texts(200, distinct=False))
    coded = _task(tiny_cfg, words, "dataset.target=label", "dataset.categorical=[size]")
    assert coded.encoder.categories == {
        "size": [str(i) for i in range(7)],
        "note": sorted(["good", "bad", "fine", "odd", "new", "old", "red", "big"]),
    }
    with pytest.raises(UserError, match=r"dataset.categorical: 'colour' is not a feature column"):
        _task(tiny_cfg, words, "dataset.target=label", "dataset.categorical=[colour]")


def test_early_stopping_is_on_by_default(tiny_cfg, corpora, tmp_path):
    """task=tabular's own epochs and patience: it stops once val/loss stops improving,
    long before its epoch limit, and tests the best checkpoint."""
    path = table(tmp_path, "r.csv", _rows(300))  # noisy: val/loss levels off
    cfg = tiny_cfg(
        "task=tabular",
        f"dataset.path={path}",
        "dataset.target=price",
        "task.problem=regression",
        "trainer.max_steps=null",
        "trainer.eval_every=null",
    )
    data = validate(cfg)
    assert data.trainer.patience and data.task.monitor == "val/loss"
    result = run(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop_reason"] == "early_stopping"
    assert summary["epochs"] < data.trainer.max_epochs
    assert summary["best"]["step"] < summary["steps"]
    assert result["test/r2"] > 0.95


def _noisy_labels(n: int) -> str:
    """Two features, the label their sign's with a fifth flipped: val/loss rises as the
    model learns the flips."""
    rng = random.Random(0)
    lines = ["x,y,label"]
    for _ in range(n):
        x, y = rng.uniform(-1, 1), rng.uniform(-1, 1)
        label = (x + y > 0) != (rng.random() < 0.2)
        lines.append(f"{x:.4f},{y:.4f},{'ab'[label]}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("keep", "kept"), [("auto", "last"), ("best", "best")])
def test_classifier_keeps_where_it_stopped(tiny_cfg, tmp_path, keep, kept):
    """trainer.keep=auto: a table's classifier tests and keeps (best.pt) the weights where
    early stopping ended it, not the earlier best val/loss; keep=best the best's."""
    path = table(tmp_path, "n.csv", _noisy_labels(200))
    cfg = tiny_cfg(
        "task=tabular",
        f"dataset.path={path}",
        "dataset.target=label",
        "trainer.max_steps=null",
        "trainer.eval_every=null",
        "trainer.patience=10",
        f"trainer.keep={keep}",
    )
    run(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stop_reason"] == "early_stopping"
    saved = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert saved["state"]["step"] == summary["best"]["step"]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    losses = [r["loss"] for r in records if r["split"] == "val" and "checkpoint" not in r]
    if kept == "last":
        assert summary["best"]["step"] == summary["steps"]
        assert summary["best"]["val/loss"] == losses[-1] > min(losses)
    else:
        assert summary["best"]["step"] < summary["steps"]
        assert summary["best"]["val/loss"] == min(losses)


@pytest.mark.parametrize(
    ("overrides", "fraction"),
    [
        ((), 0.05),  # a classifier keeps its last weights: validation only stops it
        (("task.problem=regression",), 0.1),  # validation MSE also picks the checkpoint
        (("trainer.keep=best",), 0.1),
        (("dataset.val_fraction=0.2",), 0.2),
    ],
)
def test_validation_fraction_follows_what_validation_decides(
    tiny_cfg, corpora, overrides, fraction
):
    cfg = validate(tiny_cfg("task=tabular", f"dataset.path={corpora['tabular']}", *overrides))
    assert held_out_fractions(cfg).val_fraction == fraction


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # a byte that is not utf-8, with the key that changes the encoding
        (b"x,label\n1,a\n\xff,b\n", r"t.csv: not utf-8 text \(byte 12 is 0xff\).*dataset.encoding"),
        # a ragged row after a blank one: the line as the file numbers it
        (b"x,y,label\n1,2,a\n\n3,4,b\n5,6\n", r"t.csv, line 5: 2 values, the header has 3"),
        (b"x,y\n\n\n", r"no data rows"),
    ],
)
def test_reader_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_bytes(text)
    with pytest.raises(UserError, match=message):
        read_table(path)


def test_columnar_reader_keeps_values_as_written(tmp_path):
    # pyarrow guesses a column's type from its first block: text further down, dates,
    # "true"/"false", "inf" and quoted newlines are read as written, numbers as numbers.
    rows = [f"{i},{i / 4},2020-01-0{i % 9 + 1},true,{i}" for i in range(200_000)]
    rows[-1] = '7,abc,"two\nlines",False,inf'
    path = table(tmp_path, "big.csv", "a,b,when,flag,big\n" + "\n".join(rows) + "\n")
    t = read_table(path, text=("a",))
    assert len(t) == 200_000 and t.column("a").values is not None  # asked for as text
    assert t.row(1) == ["1", "0.25", "2020-01-02", "true", "1"]
    assert t.row(len(t) - 1) == ["7", "abc", "two\nlines", "False", "inf"]
    assert t.column("big").values is not None and t.column("when").values is not None
    assert t.where(len(t) - 1) == f"{path}, line 200002"  # the record ends on the next line


def test_bad_number_names_its_line_wherever_it_falls(tiny_cfg, tmp_path):
    args = ("dataset.target=price", "task.problem=regression")
    lines = _rows(200).splitlines()
    task = _task(tiny_cfg, table(tmp_path, "clean.csv", "\n".join(lines) + "\n"), *args)
    rows = split_indices(200, held_out_fractions(task.cfg))  # as prepare splits the table

    def with_text_at(split: str) -> tuple[Path, int]:
        """The table with 'abc' in column size of a row of ``split``; its line."""
        row = int(rows[split][0])
        bad = [*lines]
        bad[row + 1] = "abc," + bad[row + 1].split(",", 1)[1]  # under the header
        return table(tmp_path, f"{split}.csv", "\n".join(bad) + "\n"), row + 2

    for split in ("val", "test"):  # held out: the numeric column refuses it, naming its line
        path, line = with_text_at(split)
        with pytest.raises(UserError) as info:
            _task(tiny_cfg, path, *args)
        assert str(info.value).startswith(f"{path}, line {line}, column 'size': 'abc' is not a")
    # In training too: one text among numbers is named with its line (not taken for text).
    path, line = with_text_at("train")
    with pytest.raises(UserError) as info:
        _task(tiny_cfg, path, *args)
    assert str(info.value).startswith(f"{path}, line {line}, column 'size': 'abc' is not a")
    task = _task(tiny_cfg, path, *args, "dataset.categorical=[size]")
    assert "abc" in task.encoder.categories["size"]  # listed: one-hot, as asked


def test_number_columns_are_float32_unless_that_blurs_them(tmp_path):
    import numpy as np

    from dlrun.data.table import Column, read_table

    path = tmp_path / "t.csv"
    rows = [f"{0.123456 * i:.6f},{1_700_000_000 + i},{' a' if i % 2 else 'b '}" for i in range(50)]
    path.write_text("x,stamp,c\n" + "\n".join(rows) + "\n")
    table = read_table(path, text=("c",))
    x, stamp, c = table.columns
    assert x.numbers.dtype == np.float32 and stamp.numbers.dtype == np.float64
    assert x.text(7) == "0.864192" and stamp.text(3) == "1700000003"
    assert not x.missing.any() and x.missing.strides == (0,)  # one shared False
    # text read by pyarrow (dictionary-encoded) and from a list: the same stripped values
    listed = Column.from_strings([r.split(",")[2] for r in rows])
    assert c.values == listed.values == ["b", "a"]
    assert (c.codes == listed.codes).all()


def test_columns_read_in_small_blocks_match_one_block(tmp_path, monkeypatch):
    # Blocks far smaller than the file, and room for fewer rows than it has: numbers that
    # start as ints take a later 2.5 as a number, float32 is kept only where it does not
    # blur, missing values stay where they are, and every value is as in one block.
    import numpy as np

    from dlrun.data import table as tables

    rows = [
        f"{i},{0.001 * i:.3f},{1_700_000_000 + i},{'' if i % 997 == 5 else i % 7},{'ab'[i % 2]}"
        for i in range(5000)
    ]
    rows[-1] = "2.5,1.0,1700000000,3,a"
    path = tmp_path / "t.csv"
    path.write_text("n,x,stamp,gaps,c\n" + "\n".join(rows) + "\n")
    whole = tables.read_table(path, text=("c",))
    monkeypatch.setattr(tables, "GUESS_BLOCK", 2048)
    monkeypatch.setattr(tables, "READ_BLOCK", 1024)
    monkeypatch.setattr(tables, "_rows", lambda *args: 10)
    small = tables.read_table(path, text=("c",))
    n, x, stamp, gaps, c = small.columns
    assert len(small) == 5000 and n.values is None and n.numbers[-1] == 2.5
    assert (n.numbers.dtype, x.numbers.dtype, stamp.numbers.dtype) == (
        np.float32,
        np.float32,
        np.float64,
    )
    assert stamp.numbers[4321] == 1_700_004_321 and x.text(4321) == "4.321"
    assert np.flatnonzero(gaps.missing).tolist() == [i for i in range(5000) if i % 997 == 5]
    for a, b in zip(whole.columns, small.columns, strict=True):
        assert a.numbers.dtype == b.numbers.dtype
        assert np.array_equal(a.numbers, b.numbers, equal_nan=True)
        assert np.array_equal(a.missing, b.missing) and a.values == b.values


def test_utf16_table_is_read_by_columns_past_the_guessing_block(tmp_path, monkeypatch):
    # The types are guessed from the first block, decoded before it is cut at a line end
    # (two bytes in UTF-16): the file is still read by pyarrow, as numbers.
    import numpy as np

    from dlrun.data import table as tables

    monkeypatch.setattr(tables, "GUESS_BLOCK", 1001)  # odd: a byte cut would split a character
    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i % 5}\n" for i in range(3000)), encoding="utf-16")
    t = tables.read_table(path, encoding="utf-16")
    a, b = t.columns
    assert a.values is None and b.values is None  # numbers, not the fallback's text
    assert a.numbers.dtype == np.float32 and a.numbers[2999] == 2999 and b.text(7) == "2"
