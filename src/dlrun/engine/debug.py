"""debug=fast|overfit|profile|anomaly|lr_find: the checks a run can make of itself (conf/debug/)."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from dlrun.engine.evaluate import TaskLike
from dlrun.engine.trainer import Callback
from dlrun.errors import UserError
from dlrun.rundir.layout import RunDir
from dlrun.rundir.write import write_text_atomic

log = logging.getLogger("dlrun")


def limit_splits(task: TaskLike, debug, eval_batch_size: int) -> None:
    """Keep the first ``debug.train_batches`` training batches and the first
    ``debug.eval_batches`` evaluation batches of every other split."""
    for split in task.splits:
        if split == "train":
            batches, size = debug.train_batches, task.batch_size
        else:
            batches, size = debug.eval_batches, eval_batch_size
        if batches:
            task.splits[split] = {k: v[: batches * size] for k, v in task.splits[split].items()}


class Profile(Callback):
    """debug=profile: a torch.profiler over training steps: one step skipped, one of
    warm-up, then ``steps`` traced into the run's ``profile/``, which TensorBoard's
    profiler plugin and https://ui.perfetto.dev open. Logs the top operators."""

    def __init__(self, steps: int, run: RunDir, device: torch.device):
        self.steps, self.run, self.device = steps, run, device
        self.out = run.profile
        self.prof: Any = None

    @contextlib.contextmanager
    def during_fit(self, trainer) -> Iterator[None]:
        from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

        activities = [ProfilerActivity.CPU]
        if self.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self.prof = profile(
            activities=activities,
            schedule=schedule(wait=1, warmup=1, active=self.steps, repeat=1),
            on_trace_ready=tensorboard_trace_handler(str(self.out)),
            record_shapes=True,
        )
        with self.prof:
            yield
        self._top_operators()
        self.prof = None

    def on_step_end(self, trainer) -> None:
        self.prof.step()

    def _top_operators(self) -> None:
        sort = "self_cuda_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        try:
            table = self.prof.key_averages().table(sort_by=sort, row_limit=15)
        except (AssertionError, RuntimeError):  # fewer steps ran than the schedule traces
            log.warning("profile: the run ended before %d steps were traced", self.steps)
            return
        write_text_atomic(self.run.profile_table, table + "\n")
        log.info("profile: trace in %s; top operators:\n%s", self.out, table)


class Anomaly(Callback):
    """debug=anomaly: torch.autograd's anomaly detection while training."""

    def during_fit(self, trainer) -> contextlib.AbstractContextManager:
        return torch.autograd.set_detect_anomaly(True)


class Overfit(Callback):
    """debug=overfit: after training on a few repeated batches, one line: did the
    training loss fall near zero?"""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def on_fit_end(self, trainer, result) -> None:
        if trainer.dist.main:
            overfit_verdict(result.train_losses, self.threshold)


def callbacks(debug, run: RunDir, device: torch.device) -> list[Callback]:
    """The debug section's collaborators of the Trainer."""
    chosen: list[Callback] = []
    if debug.profile_steps:
        chosen.append(Profile(debug.profile_steps, run, device))
    if debug.anomaly:
        chosen.append(Anomaly())
    if debug.train_batches:
        chosen.append(Overfit(debug.overfit_loss))
    return chosen


def overfit_verdict(losses: list[float], threshold: float) -> None:
    """One line: did the training loss on the few repeated batches fall near zero?"""
    if not losses:
        return
    first, last = losses[0], losses[-1]
    if last < threshold:
        log.info(
            "overfit: ok, the training loss fell from %.4f to %.4f (< %g): model, loss and "
            "optimizer can learn these batches",
            first,
            last,
            threshold,
        )
    else:
        log.warning(
            "overfit: FAILED, the training loss went from %.4f to %.4f, not below %g: raise "
            "optimizer.lr or trainer.max_steps, or look for a bug in the model or loss",
            first,
            last,
            threshold,
        )


# -- debug=lr_find: the learning-rate range test (Smith 2017; fastai's and Lightning's lr_find)

# The loss's exponential moving average, bias-corrected: about 10 steps, a few tenths of a
# decade of rates in a 200-step test (fastai's 0.98 lags by two decades here).
SMOOTHING = 0.9
DIVERGED = 4.0  # the test stops once the smoothed loss passes this many times its best


@dataclass
class RangeTest:
    """What a learning-rate range test saw: each step's rate and training loss."""

    rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    stopped: str = "the last rate was reached"

    @property
    def minimum(self) -> float:
        """The rate at the smoothed loss's lowest point."""
        return self.rates[min(range(len(self.smoothed)), key=self.smoothed.__getitem__)]

    @property
    def suggested(self) -> float:
        """The rate to train with: the minimum's, divided by 10 (there the loss still
        falls fast and is far from diverging), never below the test's first rate."""
        return max(self.minimum / 10, self.rates[0])

    @property
    def steepest(self) -> float:
        """The rate where the smoothed loss fell fastest against log(rate), up to its minimum."""
        end = self.rates.index(self.minimum) + 1
        if end < 3:
            return self.rates[0]
        logs = [math.log(r) for r in self.rates[:end]]
        ys = self.smoothed[:end]
        slopes = [(ys[i + 1] - ys[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in range(1, end - 1)]
        return self.rates[1 + min(range(len(slopes)), key=slopes.__getitem__)]

    def summary(self) -> dict[str, Any]:
        return {
            "suggested_lr": self.suggested,
            "rule": "minimum / 10",
            "minimum_lr": self.minimum,
            "steepest_lr": self.steepest,
            "steps": len(self.rates),
            "stopped": self.stopped,
            "rates": self.rates,
            "losses": self.losses,
            "smoothed": self.smoothed,
        }


def lr_range_test(trainer, steps: int, lowest: float, highest: float) -> RangeTest:
    """Train ``steps`` steps with the rate growing exponentially from ``lowest`` to
    ``highest``, one rate per step, stopping early when the smoothed loss diverges (or
    is not finite). The trainer's optimizer, precision, clipping and accumulation are
    the run's; its schedule is overridden step by step."""
    test = RangeTest()
    growth = (highest / lowest) ** (1 / (steps - 1))
    average, best = 0.0, math.inf
    trainer.model.train()
    for i in range(steps):
        rate = lowest * growth**i
        for group in trainer.opt.param_groups:
            group["lr"] = rate
        trainer.reset_window()
        trainer.train_step()
        loss = trainer.window_loss()  # one host sync a step: the test is short
        test.rates.append(rate)
        test.losses.append(loss)
        if not math.isfinite(loss):
            test.stopped = f"the loss was not finite at lr={rate:.3g}"
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        test.smoothed.append(average / (1 - SMOOTHING ** (i + 1)))
        best = min(best, test.smoothed[-1])
        if test.smoothed[-1] > DIVERGED * best:
            test.stopped = f"the loss diverged at lr={rate:.3g} (over {DIVERGED:g}x its best)"
            break
    if not test.smoothed:
        raise UserError(
            f"debug=lr_find: the training loss was not finite at the first rate, "
            f"{lowest:g}; lower debug.lr_find_min, or look for a bug in the data or model"
        )
    return test


def lr_find_command(run: RunDir, task: str, lr: float) -> str:
    """The command that trains with ``lr``: this one's overrides (``.hydra/overrides.yaml``)
    without debug=lr_find, Hydra's own keys and any optimizer.lr; ``dlrun task=...`` for a
    run started without Hydra."""
    import shlex

    from dlrun.rundir.read import read_yaml

    given = [f"task={task}"]
    if run.hydra_overrides.is_file():
        try:
            given = [str(o) for o in read_yaml(run.hydra_overrides, list)]
        except UserError:
            pass
    dropped = ("debug=", "debug.", "optimizer.lr=", "hydra.", "hydra/")
    kept = [o for o in given if not o.lstrip("+~").startswith(dropped)]
    return shlex.join(["dlrun", *kept, f"optimizer.lr={lr:.3g}"])
