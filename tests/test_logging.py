"""logger=tensorboard: scalars per split and the hyperparameters with the final metrics."""

from __future__ import annotations

import importlib.util

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dlrun.engine.run import run
from dlrun.errors import ConfigError
from dlrun.plan.config import validate
from dlrun.rundir.read import read_jsonl


def test_tensorboard_has_every_split_and_the_hparams(tiny_cfg, tmp_path):
    metrics = run(tiny_cfg("logger=tensorboard"), tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/exact_match", "val/loss", "test/exact_match"} <= tags
    assert "val/lr" not in tags  # training quantities only under train/
    # The same numbers as metrics.jsonl.
    jsonl = read_jsonl(tmp_path / "metrics.jsonl")
    val = [(r["step"], r["loss"]) for r in jsonl if r["split"] == "val"]
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("val/loss")] == val
    (final,) = events.Scalars("hparam/test/exact_match")
    assert final.value == pytest.approx(metrics["test/exact_match"])
    # The hyperparameters themselves are in the HPARAMS plugin's data.
    plugin = events.PluginTagToContent("hparams")
    blob = b"".join(plugin.values())
    assert b"optimizer.lr" in blob and b"model.hidden_size" in blob


def test_tensorboard_missing_is_one_clear_problem(tiny_cfg, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real(name, *a),
    )
    with pytest.raises(ConfigError, match=r"pip install 'dlrun\[tensorboard\]'"):
        validate(tiny_cfg("logger=tensorboard"))
    validate(tiny_cfg("logger=none"))  # the default needs nothing
