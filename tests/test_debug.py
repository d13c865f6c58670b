"""debug=fast|overfit|profile|anomaly: whole-pipeline checks of any task in seconds."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import tiny_data
from hydra import compose, initialize_config_dir

from dlrun.engine.run import run
from dlrun.plan.config import conf_dir
from dlrun.registry import list_tasks
from dlrun.rundir.read import read_jsonl

# Small models, so that a step costs little; the debug preset sets the trainer.
SMALL = {
    "dates": ["model.hidden_size=32", "model.embedding_size=16"],
    "algebra": ["model.hidden_size=32", "model.embedding_size=16"],
    "text_pairs": ["model.hidden_size=32", "model.embedding_size=16"],
    "imdb": ["model.hidden_size=16"],
    "kmnist": [],
}


def debug_cfg(cache_dir, task: str, *overrides: str):
    """A config with the task's tiny data and the debug preset's own trainer settings."""
    data = tiny_data(task)
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"task={task}",
                "device=cpu",
                f"paths.cache_dir={cache_dir}",
                *data,
                *SMALL.get(task, []),
                *overrides,
            ],
        )


@pytest.mark.parametrize("task", list_tasks())
def test_fast_runs_the_whole_pipeline_of_every_task(cache_dir, tmp_path, task):
    cfg = debug_cfg(cache_dir, task, "debug=fast", "trainer.eval_batch_size=4")
    metrics = run(cfg, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 1
    assert summary["stop_reason"] == "max_steps"
    for name in ("metrics.jsonl", "samples.txt", "curves.png", "stats.json"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "checkpoints" / "best.pt").is_file()
    assert any(k.startswith("test/") for k in metrics)
    # One evaluation batch of 4 per split: samples come from the 4 test examples kept.
    rows = (tmp_path / "samples.txt").read_text().splitlines()[2:]
    assert 1 <= len(rows) <= 4
    splits = {r["split"] for r in read_jsonl(tmp_path / "metrics.jsonl")}
    assert {"train", "val", "test"} <= splits


@pytest.mark.slow  # the longest of its kind; CI runs slow tests when time allows
def test_overfit_says_whether_the_loss_fell_near_zero(cache_dir, tmp_path, caplog):
    # The preset as it is, with the default model's sizes: 300 steps.
    sizes = ["model.hidden_size=256", "model.embedding_size=64"]
    cfg = debug_cfg(cache_dir, "dates", "debug=overfit", *sizes)
    with caplog.at_level(logging.INFO, logger="dlrun"):
        run(cfg, tmp_path / "ok")
    verdict = [r.getMessage() for r in caplog.records if r.getMessage().startswith("overfit")]
    assert len(verdict) == 1 and verdict[0].startswith("overfit: ok"), verdict
    # Four batches of 64 repeated: 75 epochs in 300 steps.
    summary = json.loads((tmp_path / "ok" / "summary.json").read_text())
    assert summary["samples"] == 300 * 64 and summary["epochs"] == pytest.approx(75)
    caplog.clear()
    cfg = debug_cfg(
        cache_dir, "dates", "debug=overfit", "trainer.max_steps=10", "trainer.log_every=5"
    )
    with caplog.at_level(logging.INFO, logger="dlrun"):
        run(cfg, tmp_path / "short")
    verdict = [r.getMessage() for r in caplog.records if r.getMessage().startswith("overfit")]
    assert len(verdict) == 1 and verdict[0].startswith("overfit: FAILED"), verdict


def test_profile_writes_a_trace_and_the_top_operators(cache_dir, tmp_path):
    run(debug_cfg(cache_dir, "imdb", "debug=profile"), tmp_path)
    traces = list((tmp_path / "profile").glob("*.pt.trace.json"))
    assert len(traces) == 1
    events = json.loads(traces[0].read_text())["traceEvents"]
    assert sum(e.get("name", "").startswith("ProfilerStep#") for e in events) == 3
    table = (tmp_path / "profile" / "top_operators.txt").read_text()
    assert "aten::" in table and "Self CPU" in table


def test_anomaly_detection_is_on_while_training(cache_dir, tmp_path, monkeypatch):
    from dlrun.tasks.seq2seq import Seq2SeqTask

    seen = []
    loss = Seq2SeqTask.loss

    def spy(self, model, batch):
        seen.append(torch.is_anomaly_enabled())
        return loss(self, model, batch)

    monkeypatch.setattr(Seq2SeqTask, "loss", spy)
    run(debug_cfg(cache_dir, "dates", "debug=anomaly", "trainer.max_steps=2"), tmp_path)
    assert seen == [True, True]
    assert not torch.is_anomaly_enabled()  # only for the run
