"""debug=fast|overfit|profile|anomaly: the checks a run can make of itself (conf/debug/)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch

from dlrun.engine.evaluate import TaskLike
from dlrun.engine.trainer import Callback
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
