"""What a person reads: figures (equal loss windows, a colour per split, sizes), samples.txt,
predict lines, help and progress."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY, run_cli, tiny_data
from PIL import Image

from dlrun.engine.palette import SPLITS, log_scale, split_colour
from dlrun.engine.plots import plot_confusion, plot_curves, train_loss_windows


def records(steps_losses, split="train"):
    return [{"step": s, "split": split, "loss": v} for s, v in steps_losses]


def test_loss_windows_merge_the_short_ones_at_epoch_ends():
    # log_every=5 with an evaluation at step 12 (an epoch end): windows (10, 12] and
    # (12, 15] are one window of five steps, weighted by the steps each covers.
    got = train_loss_windows(records([(5, 1.0), (10, 0.8), (12, 0.1), (15, 0.6), (20, 0.5)]))
    assert [s for s, _ in got] == [5, 10, 15, 20]
    assert abs(got[2][1] - (0.1 * 2 + 0.6 * 3) / 5) < 1e-12
    # a last window shorter than the others is left out
    assert [s for s, _ in train_loss_windows(records([(5, 1), (10, 1), (15, 1), (17, 9)]))] == [
        5,
        10,
        15,
    ]


def test_log_axis_only_for_positive_values_spanning_decades():
    assert log_scale([2.0, 0.01])
    assert not log_scale([2.0, 0.5])
    assert not log_scale([2.0, 0.0, 1e-9])
    assert not log_scale([])


def test_a_split_keeps_its_colour():
    assert split_colour("train") != split_colour("val") != split_colour("test")
    assert split_colour("test_b") == SPLITS["test"]
    assert split_colour("other") == split_colour("other") not in SPLITS.values()


def test_small_figures_are_still_readable(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    lines = [{"step": 5, "split": "train", "loss": 1.0}, {"step": 5, "split": "val", "loss": 1}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in lines))
    plot_curves(metrics, tmp_path / "curves.png")
    plot_confusion(torch.tensor([[5, 1], [2, 7]]), ("no", "yes"), tmp_path / "c.png", "test")
    for name in ("curves.png", "c.png"):
        with Image.open(tmp_path / name) as image:
            assert max(image.size) >= 800, (name, image.size)


@pytest.mark.slow  # 5-16 s: the default suite stays under 10 minutes
def test_a_tabular_run_draws_every_figure_without_a_warning(tmp_path, cache_dir):
    args = ["dlrun", "task=tabular", *tiny_data("tabular"), *TINY]
    args += ["dataset.features=[feature1,feature2]", f"hydra.run.dir={tmp_path / 'run'}"]
    done = run_cli(args, tmp_path, cache_dir)
    assert done.returncode == 0, done.stderr
    assert "arning" not in done.stderr, done.stderr
    pictures = sorted((tmp_path / "run").glob("*.png"))
    assert {p.name for p in pictures} == {
        "confusion_test.png",
        "curves.png",
        "data.png",
        "decision_boundary.png",
    }
    for path in pictures:
        with Image.open(path) as image:
            assert max(image.size) >= 800, (path.name, image.size)


def test_samples_say_what_they_show():
    from dlrun.rundir.write import samples_text

    rows = [
        {"correct": c, "source": "s", "target": "t", "prediction": p}
        for c, p in ((False, "u"), (True, "t"), (True, "t"))
    ]
    head = samples_text(rows, 1000, {"test/accuracy": 0.906, "test/loss": 0.3}).splitlines()[0]
    assert head == (
        "# 3 of 1000 test examples, the wrong ones first: 1 of these 3; "
        "the whole test split: accuracy 0.906, loss 0.3"
    )


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_lines_without_a_terminal(caplog):
    import logging

    from dlrun.engine.progress import ProgressLines, TrainState

    clock, state = Clock(), TrainState()
    lines = ProgressLines(total=1000, every=10.0, clock=clock, log=logging.getLogger("t"))
    lines.started(0)
    with caplog.at_level(logging.INFO, logger="t"):
        for step in range(1, 1001):  # 20 steps a second: 50 s of training
            clock.now, state.step = step / 20, step
            lines.step(state, 0.5)
            if step % 10 == 0:  # an evaluation every half second, as tabular's epochs
                lines.evaluation(state, {"val": {"loss": 0.25}}, clock.now, final=step == 1000)
    text = [r.getMessage() for r in caplog.records]
    assert "step 210/1000  epoch 0  20 steps/s  loss 0.5000  40s left" in text
    steps = [line for line in text if "steps/s" in line]
    evals = [line for line in text if "val loss=0.2500" in line]
    assert 3 <= len(steps) <= 5 and 5 <= len(evals) <= 7  # about one line per 10 s of each
    assert evals[-1] == (
        "step 1000 epoch 0  val loss=0.2500  (50s) (18 more evaluations in metrics.jsonl)"
    )


def test_help_is_dlruns_own(tmp_path, cache_dir):
    done = run_cli(["dlrun", "--help"], tmp_path, cache_dir)
    assert done.returncode == 0 and not done.stderr, done.stderr
    text = done.stdout
    for needed in ("dlrun-predict", "dlrun-report", "dlrun-stats", "--cfg job", "--hydra-help"):
        assert needed in text
    tabular = text[text.index("  tabular ") :].splitlines()
    assert tabular[0].split() == ["tabular", "models:", "mlp"]
    assert "dataset.target (required)" in tabular[1]
    assert "logger:" in text and "mlflow" in text and "optimizer:" in text
    assert max(map(len, text.splitlines())) <= 100


def test_numbers_in_names_and_tables_are_rounded():
    from dlrun.report.runs import short_numbers

    text = "model.dropout=0.34430192534364906,optimizer.lr=0.00015206407446736916,wd=1e-05"
    assert short_numbers(text) == "model.dropout=0.3443,optimizer.lr=0.0001521,wd=1e-05"
    assert short_numbers("v1.2345678 3.14 42") == "v1.2345678 3.14 42"  # names stay


def test_a_report_over_mixed_runs_groups_them_by_task(tmp_path):
    from pathlib import Path

    from dlrun.report.runs import Run, build_table

    def run(name, task, overrides, metrics):
        summary = {"status": "ok", "task": task, "monitor": f"val/{next(iter(metrics))}"}
        summary["best"] = {f"val/{k}": v for k, v in metrics.items()}
        return Run(Path(tmp_path / name), summary, {"task": task, **overrides})

    runs = [
        run("a", "imdb", {"trainer.log_every": "10", "optimizer.lr": "0.1"}, {"accuracy": 0.8}),
        run("b", "dates", {"trainer.log_every": "50"}, {"exact_match": 0.5}),
        run("c", "imdb", {"trainer.log_every": "10", "optimizer.lr": "0.01"}, {"accuracy": 0.9}),
    ]
    table = build_table(runs)
    assert table.keys == ["task", "optimizer.lr"]  # log_every differs only across tasks
    assert [r["run"] for r in table.rows] == ["c", "a", "b"]  # by task, best first
    text = table.markdown()
    assert text.startswith("task=imdb\n\n| run | optimizer.lr | status | val/accuracy |")
    assert "task=dates\n\n| run | status | val/exact_match |" in text


def test_grouped_bars_show_each_value_even_zero(tmp_path, monkeypatch):
    from dlrun.engine import plots

    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, out: drawn.append(fig))
    values = {("0.003", "0.5"): 0.0, ("0.003", "1.0"): 0.0, ("0.01", "0.5"): 0.25}
    plots.plot_grouped_bars(values, "optimizer.lr", "trainer.grad_clip", "exact", tmp_path / "b")
    labels = sorted(t.get_text() for t in drawn[0].axes[0].texts)
    assert labels == ["0", "0", "0.25"]
