"""Cross-validation (``trainer.folds=K``): K folds of training + validation, each fold's
results and every metric's mean and standard deviation; resume; refusals in one line."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import pytest
import torch
from conftest import TINY, merged, read_csv, run_cli, sweep_dir, tiny_data

from dlrun.engine.run import run
from dlrun.errors import ConfigError, UserError
from dlrun.plan.config import validate
from dlrun.registry import task_entry
from dlrun.report.runs import write_report
from dlrun.tasks.base import Task

TABULAR = ("task=tabular", *tiny_data("tabular"), "trainer.max_steps=10", "trainer.eval_every=5")


def prepared(tiny_cfg, *overrides: str) -> Task:
    cfg = validate(tiny_cfg(*merged(*overrides)))
    task = task_entry(cfg.task.name).obj(cfg)
    task.prepare(Path(cfg.paths.cache_dir))
    return task


def rows(split: dict[str, torch.Tensor]) -> list[tuple]:
    """Each example of a split as one hashable row of all its tensors."""
    n = next(iter(split.values())).shape[0]
    return [tuple(tuple(v[i].flatten().tolist()) for v in split.values()) for i in range(n)]


def test_fold_splits_are_disjoint_and_cover_the_data(tiny_cfg):
    task = prepared(tiny_cfg, *TABULAR)
    pool = rows(task.splits["train"]) + rows(task.splits["val"])
    test = {k: v.clone() for k, v in task.splits["test"].items()}
    seen_val: list[tuple] = []
    for k in range(4):
        task.fold(k, 4, seed=0)
        train, val = rows(task.splits["train"]), rows(task.splits["val"])
        assert sorted(train + val) == sorted(pool)  # each fold: all of the data, once
        assert abs(len(val) - len(pool) / 4) < 1
        seen_val += val
        assert all(torch.equal(task.splits["test"][k], v) for k, v in test.items())
    assert sorted(seen_val) == sorted(pool)  # the validation parts cover the data, disjoint
    task.fold(1, 4, seed=0)
    again = rows(task.splits["val"])
    task.fold(1, 4, seed=1)
    assert rows(task.splits["val"]) != again  # trainer.seed draws the folds


def test_seq2seq_folds_keep_texts_with_their_tensors(tiny_cfg):
    task = prepared(tiny_cfg, "task=dates", *tiny_data("dates"))
    n = task.size("train") + task.size("val")
    task.fold(2, 3, seed=0)
    assert task.size("train") + task.size("val") == n
    for split in ("train", "val"):
        src, tgt = task.texts[split]
        assert len(src) == task.size(split)
        decoded = [task.tgt_vocab.decode(row.tolist()) for row in task.splits[split]["tgt"][:20]]
        assert decoded == tgt[:20]


def test_k_folds_give_k_results_and_their_mean_and_std(tiny_cfg, tmp_path):
    cfg = tiny_cfg(*merged(*TINY, *TABULAR, "trainer.folds=3"))
    metrics = run(cfg, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    folds = summary["fold_results"]
    assert summary["folds"] == 3 and [f["fold"] for f in folds] == [0, 1, 2]
    for name in ("val/loss", "val/accuracy", "test/accuracy"):
        section = "best" if name.startswith("val") else "test"
        values = [f[section][name] for f in folds]
        assert summary[section][name] == pytest.approx(statistics.fmean(values))
        assert summary["std"][name] == pytest.approx(statistics.stdev(values))
        assert metrics[name] == pytest.approx(statistics.fmean(values))
    assert len({f["best"]["val/loss"] for f in folds}) == 3  # three different models
    each = [json.loads((tmp_path / f"fold_{k}" / "summary.json").read_text()) for k in range(3)]
    assert summary["ready_memory_mb"] == max(f["ready_memory_mb"] for f in each) > 0
    for k in range(3):
        fold = tmp_path / f"fold_{k}"
        assert (fold / "checkpoints" / "best.pt").is_file() and (fold / "stats.json").is_file()
        stats = json.loads((fold / "stats.json").read_text())
        assert stats["val"]["examples"] in (90, 91) and stats["train"]["examples"] > 170

    # dlrun-report: the run's means with their std, and a row per fold under it.
    table = write_report([tmp_path], tmp_path / "report", plots=False).table
    assert "val/loss std" in table.columns and "test/accuracy std" in table.columns
    assert [r["run"] for r in table.rows] == [tmp_path.name] + [
        f"{tmp_path.name}/fold_{k}" for k in range(3)
    ]
    assert table.rows[0]["val/loss std"] == pytest.approx(summary["std"]["val/loss"])
    assert table.rows[2]["val/loss"] == pytest.approx(folds[1]["best"]["val/loss"])


@pytest.mark.parametrize(
    ("value", "message"),
    [("1", "trainer.folds=1: must be >= 2"), ("three", "trainer.folds='three': expected int")],
)
def test_a_bad_k_is_one_line(tmp_path, cache_dir, value, message):
    result = run_cli(["dlrun", *TINY, *TABULAR[:-2], f"trainer.folds={value}"], tmp_path, cache_dir)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert message in result.stderr and not (tmp_path / "outputs").exists()


def test_more_folds_than_examples_is_one_line(tiny_cfg):
    task = prepared(tiny_cfg, *TABULAR)
    n = task.size("train") + task.size("val")
    with pytest.raises(UserError, match=rf"^trainer.folds={n + 1}: needs 2 to {n} folds"):
        task.fold(0, n + 1, seed=0)


class Flat(Task):
    """A task that keeps its validation data beside its tensors (as IMDB keeps its ids)."""

    def prepare(self, cache_dir: Path) -> None:
        self.splits = {s: {"label": torch.zeros(4, dtype=torch.long)} for s in ("train", "val")}
        self.ids = {"train": torch.arange(9), "val": torch.arange(7)}


def test_a_task_the_default_cannot_re_split_refuses_in_one_line(tiny_cfg):
    task = Flat(validate(tiny_cfg(*merged(*TABULAR, "trainer.folds=2"))))
    task.prepare(Path("."))
    with pytest.raises(UserError, match=r"cannot re-split \(per-split ids\); leave trainer.folds"):
        task.fold(0, 2, seed=0)


def test_a_task_that_says_it_cannot_cross_validate_is_a_config_error(tiny_cfg, monkeypatch):
    tabular = task_entry("tabular").obj
    monkeypatch.setattr(tabular, "cross_validates", False)
    with pytest.raises(ConfigError, match=r"trainer.folds=2: task tabular cannot be cross-v"):
        validate(tiny_cfg(*merged(*TABULAR, "trainer.folds=2")))


@pytest.mark.slow  # CI runs the slow tests when its time allows
def test_an_interrupted_k_fold_run_resumes_where_it_stopped(tmp_path, cache_dir):
    args = [*merged(*TINY, *TABULAR, "trainer.folds=3", "hydra.run.dir=outputs/cv")]
    first = run_cli(["dlrun", *args], tmp_path, cache_dir)
    assert first.returncode == 0, first.stderr
    cv = tmp_path / "outputs" / "cv"
    done = (cv / "fold_0" / "summary.json").stat().st_mtime_ns
    # As a stop in fold 1 leaves it: fold 1 checkpointed, fold 2 not begun, the run unfinished.
    (cv / "fold_1" / "summary.json").unlink()
    for path in sorted((cv / "fold_2").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (cv / "fold_2").rmdir()
    (cv / "summary.json").write_text(json.dumps({"status": "interrupted", "error": "SIGINT"}))

    alone = run_cli(["dlrun", f"resume={cv / 'fold_1'}"], tmp_path, cache_dir)
    assert alone.returncode == 2 and alone.stderr.count("\n") == 1
    assert "one fold of a cross-validation run (trainer.folds=3); resume the run" in alone.stderr

    resumed = run_cli(["dlrun", f"resume={cv}"], tmp_path, cache_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert (cv / "fold_0" / "summary.json").stat().st_mtime_ns == done  # kept as it was
    assert "fold 0 of 3: finished before" in resumed.stderr
    assert "resumed from" in resumed.stderr and (cv / "fold_2" / "summary.json").is_file()
    summary = json.loads((cv / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["folds"] == 3

    again = run_cli(["dlrun", f"resume={cv}"], tmp_path, cache_dir)
    assert again.returncode == 2 and "the run has already finished" in again.stderr
    predict = run_cli(["dlrun-predict", str(cv), "0.1,0.2"], tmp_path, cache_dir)
    assert predict.returncode == 2 and f"pass one of them, e.g. {cv / 'fold_0'}" in predict.stderr


@pytest.mark.slow  # the default suite's time; CI runs it with the slow ones
def test_a_sweep_of_k_fold_runs_tabulates_every_fold(tmp_path, cache_dir):
    args = [*merged(*TINY, *TABULAR, "trainer.folds=2"), "optimizer.lr=0.01,0.003"]
    result = run_cli(["dlrun", "-m", *args], tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr
    table = read_csv(sweep_dir(result.stdout, tmp_path) / "summary.csv")
    names = [r["run"] for r in table]
    assert len(names) == 6 and sum(os.path.basename(n).startswith("fold_") for n in names) == 4
    assert all(r["val/loss std"] for r in table if "fold_" not in r["run"])


@pytest.mark.slow  # the default suite's time; CI runs it with the slow ones
def test_a_search_trial_reports_its_folds_mean(tmp_path, cache_dir):
    from dlrun.search import study as tune

    sweep = tmp_path / "S"
    args = [
        *merged(*TINY, *TABULAR, "trainer.folds=2"),
        "hydra/sweeper=optuna",
        "hydra.sweeper.seed=0",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={sweep}",
        "optimizer.lr=tag(log, interval(1e-3, 1e-1))",
    ]
    result = run_cli(["dlrun", "-m", *args], tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr
    trials = tune.find_study(sweep).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for trial in trials:
        (job,) = sweep.glob(f"{trial.number}_*")
        summary = json.loads((job / "summary.json").read_text())
        assert summary["folds"] == 2 and trial.value == pytest.approx(summary["best"]["val/loss"])


@pytest.mark.parametrize("name", ["algebra", "dates", "images", "kmnist", "tabular", "text_pairs"])
def test_every_task_that_splits_rows_re_splits_into_folds(tiny_cfg, name):
    task = prepared(tiny_cfg, f"task={name}", *tiny_data(name))
    n, test = task.size("train") + task.size("val"), task.size("test")
    for k in range(3):
        task.fold(k, 3, seed=0)
        assert task.size("train") + task.size("val") == n and task.size("test") == test
        assert abs(task.size("val") - n / 3) < 1
        assert task.stats()  # what a fold's stats.json holds, of its own splits
