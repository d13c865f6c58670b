"""Short training runs: learning happens, outputs are complete, resume is exact, NaN stops."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from dlrun.engine.checkpoint import load
from dlrun.engine.run import run
from dlrun.errors import Interrupted, UserError
from dlrun.rundir.read import read_jsonl
from dlrun.tasks.seq2seq import Seq2SeqTask


def test_loss_falls_and_accuracy_rises(tiny_cfg, tmp_path):
    cfg = tiny_cfg(
        "trainer.max_steps=60",
        "trainer.eval_every=20",
        "optimizer.lr=1e-2",
        "task.monitor=val/char_accuracy",
    )
    metrics = run(cfg, tmp_path)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    train = [r["loss"] for r in records if r["split"] == "train"]
    val = [r["char_accuracy"] for r in records if r["split"] == "val"]
    assert train[-1] < 0.7 * train[0]
    assert val[-1] > val[0] + 0.1
    assert metrics["test/char_accuracy"] > val[0] + 0.1  # the best checkpoint was tested


def test_run_directory_is_complete(tiny_cfg, tmp_path):
    run(tiny_cfg(), tmp_path)
    for name in (
        "metrics.jsonl",
        "summary.json",
        "samples.txt",
        "curves.png",
        "vocab_src.json",
        "vocab_tgt.json",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
    ):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 20
    assert set(summary["test"]) == {
        "test/loss",
        "test/char_accuracy",
        "test/exact_match",
        "test/cer",
    }
    assert summary["best"]["step"] in (10, 20)
    assert summary["parameters"] > 0 and summary["torch"] == torch.__version__
    record = next(r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["split"] == "val")
    assert {
        "step",
        "epoch",
        "loss",
        "char_accuracy",
        "exact_match",
        "lr",
        "samples_per_sec",
        "elapsed",
    } <= set(record)
    lines = (tmp_path / "samples.txt").read_text().splitlines()
    assert lines[1] == "ok\tsource\ttarget\tprediction" and len(lines) == 2 + 5
    marks = [line.split("\t")[0] for line in lines[2:]]
    assert marks == sorted(marks, key=lambda m: m == "✓")  # wrong ones first
    ckpt = load(tmp_path / "checkpoints" / "last.pt")  # weights_only=True
    assert ckpt["state"]["step"] == 20 and ckpt["config"]["task"]["name"] == "dates"


def interrupt_at_call(monkeypatch, n: int) -> None:
    """Send SIGTERM to ourselves during the n-th training loss computation."""
    calls = {"n": 0}
    original = Seq2SeqTask.loss

    def loss(self, model, batch):
        calls["n"] += 1
        if calls["n"] == n:
            signal.raise_signal(signal.SIGTERM)
        return original(self, model, batch)

    monkeypatch.setattr(Seq2SeqTask, "loss", loss)


def test_resume_ends_like_an_uninterrupted_run(tiny_cfg, tmp_path, monkeypatch):
    # Dropout, teacher forcing < 1 and a schedule exercise every saved RNG and state.
    ov = (
        "trainer.max_steps=30",
        "trainer.eval_every=10",
        "model.teacher_forcing=0.5",
        "model.dropout=0.2",
        "scheduler=cosine",
        "scheduler.warmup_steps=5",
        "trainer.accumulate=2",
    )
    full = run(tiny_cfg(*ov), tmp_path / "full")

    interrupt_at_call(monkeypatch, 2 * 17)
    with pytest.raises(Interrupted, match="stopped by SIGTERM at step 17.*resume="):
        run(tiny_cfg(*ov), tmp_path / "part")
    monkeypatch.undo()
    assert load(tmp_path / "part" / "checkpoints" / "last.pt")["state"]["step"] == 17

    resumed = run(tiny_cfg(*ov, f"resume={tmp_path / 'part'}"), tmp_path / "part")
    assert resumed == full
    a = load(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    b = load(tmp_path / "part" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [
        r["step"] for r in read_jsonl(tmp_path / "part" / "metrics.jsonl") if r["split"] == "val"
    ]
    assert steps == [10, 20, 30]


def test_nan_loss_names_the_step_and_keeps_good_checkpoints(tiny_cfg, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = Seq2SeqTask.loss

    def loss(self, model, batch):
        calls["n"] += 1
        value = original(self, model, batch)
        return value * float("nan") if calls["n"] == 13 else value

    monkeypatch.setattr(Seq2SeqTask, "loss", loss)
    with pytest.raises(UserError, match="NaN or infinite at step 13.* keeps the last good"):
        run(tiny_cfg(), tmp_path)
    last = load(tmp_path / "checkpoints" / "last.pt")
    assert last["state"]["step"] == 10  # the evaluation before the NaN
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    # Before the first checkpoint there is none to speak of.
    calls["n"] = 10
    with pytest.raises(UserError) as info:
        run(tiny_cfg(), tmp_path / "early")
    assert str(info.value).endswith(
        "at step 3; lower optimizer.lr, set trainer.grad_clip, or use device.amp=none"
    )


def test_stop_at_patience_and_max_time_end_training(tiny_cfg, tmp_path):
    run(tiny_cfg("trainer.stop_at=0.0", "trainer.max_steps=100"), tmp_path / "a")
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["stop_reason"] == "stop_at" and summary["steps"] == 10
    run(tiny_cfg("trainer.max_time=0.001", "trainer.max_steps=100"), tmp_path / "b")
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["stop_reason"] == "max_time" and summary["steps"] < 100
    # exact_match stays 0 in a tiny run: the second evaluation is not better.
    run(tiny_cfg("trainer.patience=1", "trainer.max_steps=100"), tmp_path / "c")
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["stop_reason"] == "early_stopping" and summary["steps"] == 20
