"""The one training loop every task shares, its evaluations and its final test.

The loop knows the task only through ``batch``, ``loss`` and what evaluation
needs (``dlrun.engine.evaluate``); it never branches on a task's name and
never imports one. What else a run does while it trains (profiling, anomaly
detection, a search's pruning, checks after training) comes in as ``Callback``
objects at construction; ``fit`` returns a ``FitResult``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from dlrun.engine import checkpoint
from dlrun.engine.device import DeviceInfo, for_training, peak_memory_mb, synchronize
from dlrun.engine.distributed import SINGLE, Dist
from dlrun.engine.ema import EMA
from dlrun.engine.evaluate import TaskLike, evaluate, periodic_splits
from dlrun.engine.optim import build_optimizer, build_scheduler
from dlrun.engine.progress import (
    DataOrder,
    ProgressLines,
    StopSignals,
    TrainState,
    check_finite,
)
from dlrun.engine.writers import Writers
from dlrun.errors import Interrupted
from dlrun.plan.config import to_dict
from dlrun.plan.resume import resume_command
from dlrun.rundir.layout import RunDir

log = logging.getLogger("dlrun")


class Callback:
    """Something a run does beside training, called by the ``Trainer`` at fixed points.

    Every hook does nothing unless a subclass says otherwise.
    """

    def during_fit(self, trainer: Trainer) -> contextlib.AbstractContextManager:
        """A context around the whole of ``fit`` (a profiler, anomaly detection)."""
        return contextlib.nullcontext()

    def on_step_end(self, trainer: Trainer) -> None:
        """After each optimizer step."""

    def on_eval_end(self, trainer: Trainer, value: float) -> str | None:
        """After each evaluation, with the monitored ``value``: a reason to stop, or None."""
        return None

    def on_fit_end(self, trainer: Trainer, result: FitResult) -> None:
        """After a ``fit`` that ended normally (not by a signal or an error)."""


@dataclass
class FitResult:
    """What ``fit`` leaves: the training state and the figures a summary reports."""

    state: TrainState
    best: dict[str, float]  # the monitored split's metrics at the best checkpoint ("val/...")
    epochs: float  # epochs trained, fractional
    first_step_at: float | None  # time.time() when the first step of this process began
    first_step_s: float | None  # its length, compilation included when device.compile
    ready_memory_mb: float | None  # peak memory when it began: data read, model made
    train_losses: list[float] = field(default_factory=list)  # each logging window's mean


class Trainer:
    def __init__(
        self,
        task: TaskLike,
        model: torch.nn.Module,
        cfg,
        dev: DeviceInfo,
        run: RunDir | Path,
        dist: Dist = SINGLE,
        callbacks: Sequence[Callback] = (),
    ):
        self.task, self.model, self.cfg, self.dev, self.dist = task, model, cfg, dev, dist
        self.t = cfg.trainer
        self.run = run if isinstance(run, RunDir) else RunDir(run)
        self.callbacks = list(callbacks)
        self.config = to_dict(cfg)  # as every checkpoint records it
        # The task's batch size: the global batch under torchrun.
        pin = dev.device.type == "cuda"
        self.order = DataOrder(
            task.size("train"),
            task.batch_size,
            dist.world,
            self.t,
            pin,
            task.row_lengths("train") if self.t.group_by_length else None,
        )
        self.batches_per_epoch = self.order.batches
        self.total_steps = self._total_steps()
        self.opt = build_optimizer(model.parameters(), cfg.optimizer, dev.device)
        self.sched = build_scheduler(self.opt, cfg.scheduler, self.total_steps)
        self.scaler = torch.amp.GradScaler(dev.device.type, enabled=dev.use_scaler)
        self.state = TrainState()
        self.monitor_split, _, self.monitor_key = cfg.task.monitor.partition("/")
        self.maximize = cfg.task.mode == "max"
        self.keep = task.keep if self.t.keep == "auto" else self.t.keep  # best or last
        self.signals = StopSignals()
        every = self.t.checkpoint_every or (10.0 if "SLURM_JOB_ID" in os.environ else None)
        self.save_every_s = every * 60 if every else None  # besides evaluations and SIGUSR1
        self._saved_at = time.monotonic()
        self._started: float | None = None
        self.first_step_s: float | None = None  # compilation included when device.compile
        self.first_step_at: float | None = None  # time.time() when the first step began
        self.ready_memory_mb: float | None = None  # peak memory then (``peak_memory_mb``)
        self.train_losses: list[float] = []  # each logging window's mean training loss
        self.interactive = sys.stderr.isatty()  # a progress bar; else log lines (ProgressLines)
        self.lines = None if self.interactive or not dist.main else ProgressLines(self.total_steps)
        self._since_eval: tuple[int, float] = (0, 0.0)  # samples and time at the last evaluation
        self.reset_window()
        # The first step whose loss was not finite (-1: none), checked at logging cadence.
        self._first_bad = torch.full((), -1, device=dev.device, dtype=torch.long)
        self.periodic_splits = periodic_splits(task, self.monitor_split, self.t.also_eval)
        self.forward_model = for_training(model, dev, dist)
        # trainer.ema: the average of the weights is what evaluations, best.pt and the test use.
        self.ema = EMA(model, self.t.ema) if self.t.ema else None
        self.eval_model = self.ema.module if self.ema else model

    def _total_steps(self) -> int | None:
        per_epoch = math.ceil(self.batches_per_epoch / self.t.accumulate)
        options = [self.t.max_steps]
        if self.t.max_epochs:
            options.append(self.t.max_epochs * per_epoch)
        options = [o for o in options if o]
        return min(options) if options else None

    # -- checkpoints -----------------------------------------------------------
    def save(self, which: str) -> None:
        """``checkpoints/last.pt`` or ``best.pt`` (``which``: "last" or "best")."""
        if not self.dist.main:  # ranks hold the same weights; one writes them
            return
        state = asdict(self.state)
        if self._started is not None:  # mid-fit: count the time of this process too
            state["train_time"] += time.monotonic() - self._started
        ckpt = checkpoint.of(self._parts(), state, self.config)
        checkpoint.save_atomic(ckpt, self.run.checkpoint(which))
        if which == "last":
            self._saved_at = time.monotonic()

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint already read (``checkpoints/last.pt`` of a resume)."""
        self.state = TrainState(**checkpoint.restore(ckpt, self._parts()))
        if self.state.halt == "pruned":  # a search's pruned trial continues as a plain run
            self.state.halt = None

    def _parts(self) -> dict[str, Any]:
        """What a checkpoint holds, by name. ``model`` is always the weights evaluated and
        kept, the ones every loader reads (predict, load_run, export): with ``trainer.ema``
        the average, and the trained weights, which a resume alone needs, are
        ``train_model``."""
        return {
            "model": self.eval_model,
            "train_model": self.model if self.ema else None,
            "ema": self.ema,
            "optimizer": self.opt,
            "scaler": self.scaler,
            "scheduler": self.sched,
        }

    # -- stopping --------------------------------------------------------------
    REASONS = (None, "max_time", "signal")  # those one rank alone may see, by priority

    def _should_stop(self, started: float) -> str | None:
        s, t = self.state, self.t
        local = None
        if self.signals.received is not None:
            local = "signal"
        elif t.max_time and s.train_time + time.monotonic() - started >= t.max_time:
            local = "max_time"
        if self.dist.enabled:
            # Ranks agree on a clock or signal stop, at logging cadence to spare collectives.
            local = (
                None
                if s.step % t.log_every
                else self.REASONS[self.dist.max(self.REASONS.index(local))]
            )
        if local == "signal":
            return local
        if t.max_steps and s.step >= t.max_steps:
            return "max_steps"
        if t.max_epochs and s.epoch >= t.max_epochs:
            return "max_epochs"
        return local or s.halt

    # -- evaluation ----------------------------------------------------------------
    def evaluate(self, split: str, dist: Dist | None = None) -> dict[str, float]:
        """Metrics of ``split``, each rank evaluating its part (``dist``: the trainer's);
        ``SINGLE`` evaluates all of it in this process."""
        model, training = self.eval_model, self.eval_model.training
        model.eval()
        with torch.inference_mode(), self._autocast():
            metrics = evaluate(self.task, model, split, self.t.eval_batch_size, dist or self.dist)
        model.train(training)
        return metrics

    def test(self, writer: Writers) -> dict[str, dict[str, float]]:
        """Every held-out split, evaluated once with the kept checkpoint (``best.pt``: the best
        evaluation's weights, or the last evaluation's with ``trainer.keep=last``; their
        average with ``trainer.ema``), left in ``eval_model``; rank 0 alone."""
        best = self.run.best
        if best.exists():
            self.eval_model.load_state_dict(checkpoint.load(best, self.dev.device)["model"])
        tests = {split: self.evaluate(split, SINGLE) for split in self.task.test_splits}
        for split, metrics in tests.items():
            record = {"epoch": self.state.epoch, "split": split, "checkpoint": "best", **metrics}
            writer.log(record, self.state.step)
        return tests

    def _autocast(self):
        return torch.autocast(
            self.dev.device.type, dtype=self.dev.amp_dtype, enabled=self.dev.amp_dtype is not None
        )

    # -- the loop ----------------------------------------------------------------------
    def reset_window(self) -> None:
        """Start a new logging window: the summed training loss, steps and samples seen."""
        self._loss_sum = torch.zeros((), device=self.dev.device)
        self._window_samples, self._window_steps = 0, 0
        self._window_start = time.monotonic()

    def window_loss(self) -> float:
        """The logging window's mean training loss, over every rank (a host sync)."""
        return float(self.dist.mean(self._loss_sum)) / (self._window_steps * self.t.accumulate)

    def train_step(self) -> None:
        """One optimizer step over ``trainer.accumulate`` micro-batches, with no host sync.

        ``fit`` calls it in its loop; the benchmark harness times it alone.
        """
        s, t = self.state, self.t
        for _ in range(t.accumulate):
            idx = self.order.next(s)
            mine = self.dist.shard(idx)
            batch = self.task.batch("train", mine)
            # Streamed data: the next batch is gathered on the host while this one trains.
            self.task.prefetch("train", self.dist.shard(self.order.peek(s)))
            with self._autocast():
                loss = self.task.loss(self.forward_model, batch)
            # Ranks' gradients are averaged: weigh each shard by its size so the
            # step equals one on the whole global batch.
            loss = loss * (mine.numel() * self.dist.world / idx.numel())
            # Average over micro-batches so accumulation does not scale the step.
            self.scaler.scale(loss / t.accumulate).backward()
            detached = loss.detach().float()
            self._loss_sum += detached
            # Remember the first non-finite step without a host sync per step.
            bad = ~torch.isfinite(detached) & (self._first_bad < 0)
            self._first_bad = torch.where(bad, s.step + 1, self._first_bad)
            self._window_samples += idx.numel()
            s.samples += idx.numel()
        if t.grad_clip:
            # Unscale first so the clipping threshold is in real gradient units.
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        if self.sched:
            self.sched.step()
        if self.ema:
            self.ema.update(self.model)
        s.step += 1
        self._window_steps += 1

    def fit(self, writer: Writers) -> FitResult:
        """Train until a limit, a stopping rule, a callback or a signal says stop."""
        with contextlib.ExitStack() as stack:
            for callback in self.callbacks:
                stack.enter_context(callback.during_fit(self))
            state = self._fit(writer)
        result = FitResult(
            state=state,
            best={f"{self.monitor_split}/{k}": v for k, v in (state.best_metrics or {}).items()},
            epochs=state.step * self.t.accumulate / self.batches_per_epoch,
            first_step_at=self.first_step_at,
            first_step_s=self.first_step_s,
            ready_memory_mb=self.ready_memory_mb,
            train_losses=list(self.train_losses),
        )
        for callback in self.callbacks:
            callback.on_fit_end(self, result)
        return result

    def _fit(self, writer: Writers) -> TrainState:
        s, t = self.state, self.t
        self.model.train()
        started = self._started = time.monotonic()
        self._since_eval = (s.samples, started)
        hidden = not (self.interactive and self.dist.main)
        bar = tqdm(
            total=self.total_steps, initial=s.step, unit="step", dynamic_ncols=True, disable=hidden
        )
        if self.lines:
            self.lines.started(s.step)
        self.reset_window()
        postfix: dict = {}
        if t.eval_at_start and s.last_eval_step < 0:
            postfix = self._eval_and_checkpoint(writer, started)
        with self.signals.installed():
            while (reason := self._should_stop(started)) is None:
                self._timed_step()
                bar.update()
                if self.lines:
                    self.lines.step(s, self.train_losses[-1] if self.train_losses else None)
                epoch_end = s.batch_in_epoch < t.accumulate and t.eval_every is None
                eval_now = (t.eval_every and s.step % t.eval_every == 0) or epoch_end
                if s.step % t.log_every == 0 or eval_now:
                    loss = self._log_train(writer, started)
                    bar.set_postfix({"loss": f"{loss:.4f}", **postfix})
                if eval_now:
                    postfix = self._eval_and_checkpoint(writer, started)
                    bar.set_postfix({"loss": f"{loss:.4f}", **postfix})
                elif self.signals.take_save() or (
                    self.save_every_s and time.monotonic() - self._saved_at >= self.save_every_s
                ):
                    self.save("last")  # a preemption or a crash loses at most the interval
            bar.close()
            check_finite(self._first_bad, self.run)
            if reason != "signal" and s.last_eval_step != s.step:
                # The last steps count too: evaluate them before picking the best.
                self._eval_and_checkpoint(writer, started)
            s.stop_reason = reason
            s.train_time += time.monotonic() - started
            self._started = None
            self.save("last")
        if reason == "signal":
            signum = self.signals.received or signal.SIGTERM  # torchrun: another rank's
            raise Interrupted(
                f"stopped by {signal.Signals(signum).name} at step {s.step}; checkpoint "
                f"written. Resume with: {resume_command(self.run.path)}",
                128 + signum,
            )
        return s

    def _timed_step(self) -> None:
        """``train_step``, the first one timed (compilation included) for start-up figures."""
        first = self.first_step_at is None
        if first:
            self.first_step_at, first_start = time.time(), time.monotonic()
            self.ready_memory_mb = peak_memory_mb(self.dev.device)
        self.train_step()
        for callback in self.callbacks:
            callback.on_step_end(self)
        if first:
            synchronize(self.dev.device)
            self.first_step_s = time.monotonic() - first_start
            if self.dev.compile:
                log.info("first step %.1fs (compilation included)", self.first_step_s)

    def _log_train(self, writer: Writers, started: float) -> float:
        """The logging window's mean training loss and throughput, written; a new window."""
        check_finite(self._first_bad, self.run)
        s, now = self.state, time.monotonic()
        loss = self.window_loss()
        record = {
            "epoch": s.epoch,
            "split": "train",
            "loss": loss,
            "lr": self.opt.param_groups[0]["lr"],
            "samples_per_sec": self._window_samples / max(now - self._window_start, 1e-9),
            "elapsed": s.train_time + now - started,
        }
        writer.log(record, s.step)
        self.train_losses.append(loss)
        self.reset_window()
        return loss

    def _eval_and_checkpoint(self, writer: Writers, started: float) -> dict[str, str]:
        s = self.state
        samples0, time0 = self._since_eval
        throughput = (s.samples - samples0) / max(time.monotonic() - time0, 1e-9)
        splits = [self.monitor_split, *self.periodic_splits]
        results = {split: self.evaluate(split) for split in splits}
        s.last_eval_step = s.step
        elapsed = s.train_time + time.monotonic() - started
        lr = self.opt.param_groups[0]["lr"]
        for split, metrics in results.items():
            # Training throughput since the previous evaluation.
            extra = {"lr": lr, "samples_per_sec": throughput, "elapsed": elapsed}
            writer.log({"epoch": s.epoch, "split": split, **metrics, **extra}, s.step)
        value = results[self.monitor_split][self.monitor_key]
        better = s.evaluated(value, self.maximize, self.t.patience, self.t.stop_at)
        if self.lines:  # the last evaluation always shows
            final = s.halt is not None or bool(self.total_steps and s.step >= self.total_steps)
            self.lines.evaluation(s, results, elapsed, final=final)
        if better or self.keep == "last":
            s.best_metrics, s.kept_step = dict(results[self.monitor_split]), s.step
            self.save("best")
        for callback in self.callbacks:
            s.halt = callback.on_eval_end(self, value) or s.halt
        self.save("last")
        self._since_eval = (s.samples, time.monotonic())  # throughput counts training only
        self._window_start = time.monotonic()  # and so does the logging window's
        # Named val_loss, not loss: the bar's postfix shows the training loss as loss.
        return {f"{self.monitor_split}_{self.monitor_key}": f"{value:.4f}"}
