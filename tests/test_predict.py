"""dlrun-predict from files: a table's columns by header name, text files, one line shape,
--out CSV (issue 24, item 3)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import make_cfg, save_run_config

from dlrun.cli.predict import main, read_input_table
from dlrun.engine.run import run
from dlrun.errors import UserError
from dlrun.tasks.base import TaskOutputs


@pytest.fixture(scope="module")
def tabular_run(tmp_path_factory, cache_dir, corpora) -> Path:
    """A trained task=tabular run on the tiny points (labels; feature1, feature2, shape)."""
    folder = tmp_path_factory.mktemp("tabular_run")
    cfg = make_cfg(cache_dir, "task=tabular", "trainer.max_steps=60")
    run(cfg, folder)
    save_run_config(cfg, folder)
    return folder


@pytest.fixture(scope="module")
def imdb_run(tmp_path_factory, cache_dir, corpora) -> Path:
    folder = tmp_path_factory.mktemp("imdb_run")
    cfg = make_cfg(cache_dir, "experiment=imdb_seed", "trainer.max_steps=40", "optimizer.lr=0.5")
    run(cfg, folder)
    save_run_config(cfg, folder)
    return folder


def predict(capsys, *argv: str) -> list[list[str]]:
    capsys.readouterr()
    main([str(a) for a in argv])
    return [line.split("\t") for line in capsys.readouterr().out.splitlines()]


def refused(capsys, *argv: str) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, err
    return err


POINTS = [("-1", "-1", "round"), ("1", "-1", "square"), ("0", "1", "flat")]  # classes 0, 1, 2


def test_table_file_by_header_name_in_any_order(tabular_run, tmp_path, capsys, monkeypatch):
    """Columns matched by name in any order; the target and other columns ignored."""
    by_args = predict(capsys, tabular_run, "--", *(",".join(p) for p in POINTS))
    assert [r[1] for r in by_args] == ["0", "1", "2"]
    shuffled = tmp_path / "new.csv"
    shuffled.write_text(
        "shape,id,feature2,labels,feature1\n"
        + "".join(f"{s},{i},{y},7,{x}\n" for i, (x, y, s) in enumerate(POINTS))
    )
    rows = predict(capsys, tabular_run, shuffled)
    # input (the features in the run's order), label, probability: as for typed rows
    assert rows == by_args
    assert [r[0] for r in rows] == [",".join(p) for p in POINTS]
    tsv = tmp_path / "new.tsv"
    tsv.write_text(
        "feature2\tshape\tfeature1\n" + "".join(f"{y}\t{s}\t{x}\n" for x, y, s in POINTS)
    )
    assert predict(capsys, tabular_run, tsv) == by_args
    jsonl = tmp_path / "new.jsonl"
    jsonl.write_text(
        "".join(
            json.dumps({"shape": s, "feature1": float(x), "feature2": int(y), "labels": None})
            + "\n"
            for x, y, s in POINTS
        )
    )
    assert [r[1:] for r in predict(capsys, tabular_run, jsonl)] == [r[1:] for r in by_args]
    # stdin with a header row is read the same way
    stdin = "feature2,shape,feature1\n" + "".join(f"{y},{s},{x}\n" for x, y, s in POINTS)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    assert predict(capsys, tabular_run) == by_args


def test_table_file_missing_column_is_named(tabular_run, tmp_path, capsys):
    path = tmp_path / "short.csv"
    path.write_text("feature1,labels\n0.5,1\n")
    err = refused(capsys, tabular_run, path)
    assert f"{path}: no column 'feature2', 'shape'; this run's model reads feature1, " in err
    assert "by header name, in any order; 'labels' and other columns are ignored" in err
    assert "no such file" in refused(capsys, tabular_run, tmp_path / "absent.csv")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"feature1": 1}\n[1, 2]\n')
    assert "broken.jsonl, line 2: expected a JSON object" in refused(capsys, tabular_run, broken)
    assert "name a .csv file" in refused(capsys, tabular_run, "1,2,flat", "--out", "x.txt")
    # A file or folder that is not one table is not a text to predict; nor is --out the input.
    notes = tmp_path / "notes.txt"
    notes.write_text("0.5,0.5,flat\n")
    assert f"{notes}: a file; give one .csv" in refused(capsys, tabular_run, notes)
    assert f"{tmp_path}: a folder" in refused(capsys, tabular_run, "1,2,flat", tmp_path)
    path.write_text("feature1,feature2,shape\n0.5,1,flat\n")
    assert "that is the input file" in refused(capsys, tabular_run, path, "--out", path)
    assert path.read_text() == "feature1,feature2,shape\n0.5,1,flat\n"


def test_out_csv_has_the_rows_and_the_prediction(tabular_run, tmp_path, capsys):
    path = tmp_path / "new.csv"
    path.write_text('note,feature1,feature2,shape\n"a, quoted",-1,-1,round\nplain,0,1,flat\n')
    out = tmp_path / "preds.csv"
    printed = predict(capsys, tabular_run, path, "--out", out)
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["note", "feature1", "feature2", "shape", "prediction", "probability"]
    assert [r["note"] for r in rows] == ["a, quoted", "plain"]
    assert [[r["prediction"], r["probability"]] for r in rows] == [p[1:] for p in printed]
    assert [r["prediction"] for r in rows] == ["0", "2"]
    # Predicting a predictions file again replaces its prediction columns.
    again = tmp_path / "again.csv"
    predict(capsys, tabular_run, out, "--out", again)
    assert again.read_text() == out.read_text()
    # Typed inputs: one column "input".
    typed = tmp_path / "typed.csv"
    (line,) = predict(capsys, tabular_run, "1,-1,square", "--out", typed)
    with typed.open() as f:
        assert list(csv.reader(f)) == [["input", "prediction", "probability"], line]
    assert line[:2] == ["1,-1,square", "1"]


def test_table_file_values_stay_as_written(tmp_path):
    """A file's values reach the task (and --out) as written, not as numbers read back."""
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1.50,007,x\n2, NA ,1e3\n")
    assert read_input_table(path) == (["a", "b", "c"], [["1.50", "007", "x"], ["2", "NA", "1e3"]])


def test_text_file_takes_its_only_column(imdb_run, tmp_path, capsys):
    """The default ``inputs_from_table`` with task=imdb: the file's one column."""
    reviews = ["Wonderful, superb!", "Awful. Dull."]
    by_args = predict(capsys, imdb_run, *reviews)
    assert [r[0] for r in by_args] == reviews and [r[1] for r in by_args] == [
        "positive",
        "negative",
    ]
    assert all(0.5 < float(r[2]) <= 1 for r in by_args)
    path = tmp_path / "reviews.csv"
    path.write_text('review\n"Wonderful, superb!"\nAwful. Dull.\n')
    out = tmp_path / "out.csv"
    assert predict(capsys, imdb_run, path, "--out", out) == by_args
    with out.open() as f:
        assert list(csv.reader(f)) == [["review", "prediction", "probability"], *by_args]
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text("".join(json.dumps({"text": r}) + "\n" for r in reviews))
    assert predict(capsys, imdb_run, jsonl) == by_args
    two = tmp_path / "two.csv"
    two.write_text("review,stars\nGood,5\n")
    err = refused(capsys, imdb_run, two)
    assert "2 columns (review, stars); this run reads one input per row" in err


def test_text_column_names_the_column():
    """A dataset with ``text_column`` (task=text): that column, or one line naming it."""
    task = SimpleNamespace(cfg=SimpleNamespace(dataset=SimpleNamespace(text_column="body")))
    header, rows = ["id", "body", "label"], [["1", "nice", "a"], ["2", "bad", "b"]]
    assert TaskOutputs.inputs_from_table(task, header, rows, "f.csv") == ["nice", "bad"]
    with pytest.raises(UserError, match=r"f.csv: no column 'body' \(this run's dataset.text_co"):
        TaskOutputs.inputs_from_table(task, ["id", "text"], [["1", "x"]], "f.csv")


def test_inputs_are_echoed_escaped_and_an_empty_one_is_refused(imdb_run, tmp_path, capsys):
    rows = predict(capsys, imdb_run, "two\tparts", "line\nbreak")
    assert [r[0] for r in rows] == ["two\\tparts", "line\\nbreak"] and len(rows[0]) == 3
    long = "A great film. Sharp/funny. " * 12  # too long a name for a file: still a text
    assert predict(capsys, imdb_run, long)[0][0] == long
    assert "input 2 of 2 is empty" in refused(capsys, imdb_run, "fine", " ")
    path = tmp_path / "reviews.jsonl"
    path.write_text('{"text": "fine"}\n{"text": ""}\n')
    assert "input 2 of 2 is empty (an empty cell of" in refused(capsys, imdb_run, path)
