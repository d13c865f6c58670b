"""debug=lr_find: the learning-rate range test, its figure and its suggested optimizer.lr."""

from __future__ import annotations

import json
import math
import re
import warnings
from types import SimpleNamespace

import pytest

from dlrun.engine.debug import lr_find_command, lr_range_test
from dlrun.engine.plots import plot_lr_find
from dlrun.engine.run import run
from dlrun.errors import ConfigError, UserError
from dlrun.plan.config import validate
from dlrun.report.runs import write_report
from dlrun.rundir.layout import RunDir


class FakeTrainer:
    """What the range test drives: an optimizer's groups and a step whose loss is
    ``curve(lr)`` (a bowl in log(lr): falls, bottoms out near 1e-2, then blows up)."""

    def __init__(self, curve):
        self.curve = curve
        self.opt = SimpleNamespace(param_groups=[{"lr": 0.0}, {"lr": 0.0}])
        self.model = SimpleNamespace(train=lambda: None)

    def reset_window(self):
        pass

    def train_step(self):
        self.loss = self.curve(self.opt.param_groups[0]["lr"])

    def window_loss(self):
        return self.loss


def bowl(lr: float) -> float:
    x = math.log10(lr)
    return 1.0 if x < -5 else 1.0 - 0.9 * min(1.0, (x + 5) / 3) + max(0.0, x + 1) ** 3


def test_the_rate_grows_exponentially_and_the_test_stops_when_the_loss_diverges():
    test = lr_range_test(FakeTrainer(bowl), 100, 1e-7, 10.0)
    ratios = [b / a for a, b in zip(test.rates, test.rates[1:])]
    assert test.rates[0] == 1e-7
    assert ratios == pytest.approx([10 ** (8 / 99)] * len(ratios))
    assert len(test.rates) < 100 and "diverged" in test.stopped  # before 10
    assert 1e-3 < test.minimum < 1.0
    assert test.suggested == pytest.approx(test.minimum / 10)
    assert 1e-5 <= test.steepest <= test.minimum  # where the bowl's side falls
    summary = test.summary()
    assert summary["suggested_lr"] == test.suggested and summary["rule"] == "minimum / 10"


def test_a_loss_not_finite_at_the_first_rate_is_one_line():
    with pytest.raises(UserError, match="lower debug.lr_find_min"):
        lr_range_test(FakeTrainer(lambda lr: math.nan), 20, 1e-7, 10.0)
    flat = lr_range_test(FakeTrainer(lambda lr: 1.0 if lr < 1e-3 else math.inf), 50, 1e-7, 10.0)
    assert "not finite" in flat.stopped and flat.suggested >= 1e-7  # never below the range


def test_the_figure_is_wide_enough_and_warns_of_nothing(tmp_path):
    import matplotlib.image

    out = tmp_path / "lr_find.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # A flat loss (no y range) and a last loss that is not finite: no warnings either.
        plot_lr_find([1e-7, 1e-6, 1e-5], [1.0, 1.0, math.inf], [1.0, 1.0], {"x": 1e-6}, out)
        assert matplotlib.image.imread(out).shape[1] >= 800


def test_a_tiny_task_gets_a_finite_suggestion_a_figure_and_no_trained_run(
    tiny_cfg, tmp_path, capsys
):
    cfg = tiny_cfg("task=tabular", "debug=lr_find", "debug.lr_find_steps=40")
    metrics = run(cfg, tmp_path / "run")
    summary = json.loads(RunDir(tmp_path / "run").summary.read_text())
    found = summary["lr_find"]
    assert summary["status"] == "lr_find"
    assert math.isfinite(found["suggested_lr"]) and 1e-7 <= found["suggested_lr"] <= 10
    assert metrics == {"lr_find/suggested_lr": found["suggested_lr"]}
    ratios = [b / a for a, b in zip(found["rates"], found["rates"][1:])]
    assert ratios == pytest.approx([10 ** (8 / 39)] * len(ratios))
    assert RunDir(tmp_path / "run").lr_find.is_file()
    assert not RunDir(tmp_path / "run").has_checkpoint()  # nothing to resume or predict with
    out = capsys.readouterr().out
    assert f"optimizer.lr={found['suggested_lr']:.3g}" in out and "dlrun task=tabular" in out
    # A report lists it by its status, as a probe, not as a failed run.
    report = write_report([tmp_path], tmp_path / "report", plots=False)
    assert report.failed == 0 and "lr_find" in report.table.markdown()


def test_the_suggested_command_is_this_one_without_the_probe(tmp_path):
    run_dir = RunDir(tmp_path)
    run_dir.hydra_overrides.parent.mkdir()
    given = ["task=kmnist", "debug=lr_find", "debug.lr_find_steps=50", "optimizer.lr=0.5"]
    run_dir.hydra_overrides.write_text(json.dumps([*given, "hydra.run.dir=x", "model.width=8"]))
    assert lr_find_command(run_dir, "kmnist", 0.00123) == (
        "dlrun task=kmnist model.width=8 optimizer.lr=0.00123"
    )
    assert lr_find_command(RunDir(tmp_path / "elsewhere"), "dates", 0.1) == (
        "dlrun task=dates optimizer.lr=0.1"
    )


@pytest.mark.parametrize(
    "change, problem",
    [
        ("debug.lr_find_steps=3", "must be 0 (none) or >= 10"),
        ("debug.lr_find_min=20", "must be below debug.lr_find_max"),
        ("trainer.folds=3", "leave out trainer.folds"),
    ],
)
def test_impossible_settings_are_refused(tiny_cfg, change, problem):
    with pytest.raises(ConfigError, match=re.escape(problem)):
        validate(tiny_cfg("task=tabular", "debug=lr_find", change))
