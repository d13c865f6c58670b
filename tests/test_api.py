"""The Python API: ``dlrun.load_run(path)`` -> config, summary, metrics, predict (issue 27,
item 6)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from conftest import make_cfg, save_run_config

import dlrun
from dlrun.cli.predict import main as predict_main
from dlrun.engine.run import run
from dlrun.errors import UserError

POINTS = ["-1,-1,round", "1,-1,square", "0,1,flat"]


@pytest.fixture(scope="module")
def tabular_run(tmp_path_factory, cache_dir, corpora) -> Path:
    folder = tmp_path_factory.mktemp("api_run")
    cfg = make_cfg(cache_dir, "task=tabular", "trainer.max_steps=60", "optimizer.lr=0.01")
    run(cfg, folder)
    save_run_config(cfg, folder)
    return folder


def test_load_run_reads_config_summary_and_metrics(tabular_run):
    loaded = dlrun.load_run(tabular_run)
    assert loaded.path == tabular_run and loaded.checkpoint.name == "best.pt"
    assert loaded.config["task"]["name"] == "tabular"
    assert loaded.config["optimizer"]["lr"] == 0.01
    assert loaded.summary["status"] == "ok"
    assert {"test/loss", "test/accuracy"} <= set(loaded.summary["test"])
    splits = {r["split"] for r in loaded.metrics}
    assert {"train", "val"} <= splits
    assert max(r["step"] for r in loaded.metrics) == 60
    assert not loaded.model.training


def test_predict_answers_as_dlrun_predict_does(tabular_run, capsys):
    loaded = dlrun.load_run(tabular_run, device="auto")
    answers = loaded.predict(POINTS)
    assert [a.prediction for a in answers] == ["0", "1", "2"]
    assert all(0.0 < a.probability <= 1.0 for a in answers)
    capsys.readouterr()
    predict_main([str(tabular_run), "--", *POINTS])
    printed = [line.split("\t")[1:] for line in capsys.readouterr().out.splitlines()]
    assert printed == [[a.prediction, f"{a.probability:.4f}"] for a in answers]
    assert loaded.predict([]) == []
    assert loaded.predict(POINTS[:1], batch_size=1) == answers[:1]


def test_users_mistakes_are_one_line(tabular_run, tmp_path):
    loaded = dlrun.load_run(tabular_run)
    with pytest.raises(UserError, match="a list of inputs"):
        loaded.predict("1,1,round")
    with pytest.raises(UserError, match="input 1: 2 values, expected 3"):
        loaded.predict(["1,1"])
    with pytest.raises(UserError, match="no such run directory"):
        dlrun.load_run(tmp_path / "nothing")
    with pytest.raises(UserError, match="not a complete dlrun run directory"):
        dlrun.load_run(tmp_path)


def test_a_run_directory_is_data(tabular_run, tmp_path):
    """A checkpoint that would run code on load and a damaged summary are refused."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tabular_run, copy)
    (copy / "summary.json").write_text('{"status": "ok", "test": [1]}')
    with pytest.raises(UserError, match="summary.json: 'test' should be a JSON object"):
        dlrun.load_run(copy)
    marker = tmp_path / "ran"
    bomb = type("Bomb", (), {"__reduce__": lambda self: (marker.write_text, ("ran",))})
    with open(copy / "checkpoints" / "best.pt", "wb") as f:
        pickle.dump({"config": {}, "model": bomb()}, f)
    with pytest.raises(UserError, match="best.pt: not readable"):
        dlrun.load_run(copy)
    assert not marker.exists()


def test_a_sequence_model_answers_text(cache_dir, tmp_path):
    cfg = make_cfg(cache_dir, "task=dates", "trainer.max_steps=10")
    run(cfg, tmp_path)
    answers = dlrun.load_run(tmp_path).predict(["3 May 1999", "1/2/2003"])
    assert len(answers) == 2
    assert all(isinstance(a.prediction, str) and a.probability is None for a in answers)
