"""The one training loop every task shares.

The loop knows the task only through ``Task.batch``, ``Task.loss`` and
``Task.evaluate``; it never branches on a task's name.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from dlrun.engine import checkpoint
from dlrun.engine.device import DeviceInfo, synchronize
from dlrun.engine.distributed import SINGLE, Dist
from dlrun.engine.writers import Writers
from dlrun.errors import Interrupted, UserError
from dlrun.resume import resume_command
from dlrun.tasks.base import Task

log = logging.getLogger("dlrun")


@dataclass
class TrainState:
    """Everything about progress that a resumed run needs besides weights and RNGs."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # micro-batches consumed in the current epoch
    samples: int = 0
    train_time: float = 0.0  # seconds spent in fit() across resumes
    best_value: float | None = None
    best_step: int | None = None
    best_metrics: dict | None = None  # every metric of the best evaluation
    bad_evals: int = 0  # evaluations since the monitored metric last improved
    last_eval_step: int = -1
    halt: str | None = None  # early_stopping or stop_at: survives a resume
    stop_reason: str | None = None  # why the last fit() ended


def build_optimizer(params, cfg: dict, device: torch.device) -> torch.optim.Optimizer:
    name, lr, wd = cfg["name"], cfg["lr"], cfg["weight_decay"]
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=cfg["momentum"], nesterov=cfg["nesterov"], weight_decay=wd
        )
    fused = cfg["fused"] if cfg["fused"] is not None else device.type == "cuda"
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, betas=tuple(cfg["betas"]), weight_decay=wd, fused=fused or None)


def build_scheduler(opt, cfg: dict, total_steps: int | None):
    """Cosine decay with linear warmup, as a multiplier of the base learning rate."""
    if cfg["name"] == "none":
        return None
    warmup, floor = cfg["warmup_steps"], cfg["min_lr_ratio"]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _check_finite(first_bad: torch.Tensor) -> None:
    """Stop at a NaN/inf loss; the checkpoints on disk still hold the last good state."""
    step = int(first_bad)  # the one host sync, at logging cadence
    if step >= 0:
        raise UserError(
            f"the training loss became NaN or infinite at step {step}; lower optimizer.lr, "
            "set trainer.grad_clip, or use device.amp=none (run directory keeps the last good "
            "checkpoints)"
        )


class Trainer:
    def __init__(
        self,
        task: Task,
        model: torch.nn.Module,
        cfg: dict,
        dev: DeviceInfo,
        run_dir: Path,
        dist: Dist = SINGLE,
    ):
        self.task, self.model, self.cfg, self.dev, self.dist = task, model, cfg, dev, dist
        self.t = cfg["trainer"]
        self.run_dir = run_dir
        self.ckpt_dir = run_dir / "checkpoints"
        self.batch_size = cfg["dataset"]["batch_size"]  # the global batch under torchrun
        self.n_train = task.size("train")
        self.batches_per_epoch = math.ceil(self.n_train / self.batch_size)
        if 0 < self.n_train % self.batch_size < dist.world:
            # A last batch smaller than the number of ranks would leave one without data.
            self.batches_per_epoch -= 1
        self.total_steps = self._total_steps()
        self.opt = build_optimizer(model.parameters(), cfg["optimizer"], dev.device)
        self.sched = build_scheduler(self.opt, cfg["scheduler"], self.total_steps)
        self.scaler = torch.amp.GradScaler(dev.device.type, enabled=dev.use_scaler)
        self.state = TrainState()
        split, _, self.monitor_key = cfg["task"]["monitor"].partition("/")
        self.monitor_split = split
        self.maximize = cfg["task"]["mode"] == "max"
        self._perm: torch.Tensor | None = None
        self._signal: int | None = None
        self._started: float | None = None
        self.first_step_s: float | None = None  # compilation included when device.compile
        self.first_step_at: float | None = None  # time.time() when the first step began
        self.profiler = None  # debug=profile: a torch.profiler advanced after each step
        self.train_losses: list[float] = []  # each logging window's mean training loss
        # on_eval(step, monitored value) -> True stops training as "pruned" (a search's trial).
        self.on_eval = None
        self.reset_window()
        # The first step whose loss was not finite (-1: none), checked at logging cadence.
        self._first_bad = torch.full((), -1, device=dev.device, dtype=torch.long)
        extra = (["train_subset"] if "train_subset" in task.splits else []) + self.t["also_eval"]
        unknown = [n for n in extra if n not in task.splits]
        if unknown:
            raise UserError(
                f"trainer.also_eval: no split {unknown[0]!r}; this task has "
                f"{', '.join(task.splits)}"
            )
        self.periodic_splits = [n for n in dict.fromkeys(extra) if n != self.monitor_split]
        self.forward_model = model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [dev.device.index] if dev.device.type == "cuda" else None
            self.forward_model = DistributedDataParallel(model, device_ids=ids)
        if dev.compile:
            if getattr(model, "compilable", True):
                self.forward_model = torch.compile(self.forward_model)
            else:
                log.warning(
                    "device.compile: %s is built on RNNs, which torch.compile does not "
                    "trace; running it eagerly",
                    type(model).__name__,
                )

    def _total_steps(self) -> int | None:
        per_epoch = math.ceil(self.batches_per_epoch / self.t["accumulate"])
        options = [self.t["max_steps"]]
        if self.t["max_epochs"]:
            options.append(self.t["max_epochs"] * per_epoch)
        options = [o for o in options if o]
        return min(options) if options else None

    # -- checkpoints -----------------------------------------------------------
    def _checkpoint(self) -> dict:
        state = asdict(self.state)
        if self._started is not None:  # mid-fit: count the time of this process too
            state["train_time"] += time.monotonic() - self._started
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched else None,
            "state": state,
            "rng": checkpoint.rng_states(),
            "config": self.cfg,
        }

    def save(self, name: str) -> None:
        if self.dist.main:  # ranks hold the same weights; one writes them
            checkpoint.save_atomic(self._checkpoint(), self.ckpt_dir / name)

    def restore(self, path: Path) -> None:
        ckpt = checkpoint.load(path, self.dev.device)
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.sched and ckpt["scheduler"]:
            self.sched.load_state_dict(ckpt["scheduler"])
        self.state = TrainState(**ckpt["state"])
        checkpoint.set_rng_states(ckpt["rng"])

    # -- data order ----------------------------------------------------------------
    def _next_indices(self) -> torch.Tensor:
        """The next micro-batch of training indices, on the host.

        Each epoch's order comes from a generator seeded by (seed, epoch), so a
        resumed run rebuilds the same order from the saved position alone. The
        order stays on the host (pinned next to a GPU, so the task's copy of a
        batch's indices is asynchronous): tasks read host-side facts about a
        batch, such as its longest row, without a device sync.
        """
        if self._perm is None:
            if self.t["shuffle"]:
                g = torch.Generator().manual_seed(self.t["seed"] * 1_000_003 + self.state.epoch)
                self._perm = torch.randperm(self.n_train, generator=g)
            else:
                self._perm = torch.arange(self.n_train)
            if self.dev.device.type == "cuda":
                self._perm = self._perm.pin_memory()
        b = self.state.batch_in_epoch
        idx = self._perm[b * self.batch_size : (b + 1) * self.batch_size]
        self.state.batch_in_epoch += 1
        if self.state.batch_in_epoch == self.batches_per_epoch:
            self.state.epoch += 1
            self.state.batch_in_epoch = 0
            self._perm = None
        return idx

    # -- stopping --------------------------------------------------------------
    REASONS = (None, "max_time", "signal")  # those one rank alone may see, by priority

    def _should_stop(self, started: float) -> str | None:
        s, t = self.state, self.t
        local = None
        if self._signal is not None:
            local = "signal"
        elif t["max_time"] and s.train_time + time.monotonic() - started >= t["max_time"]:
            local = "max_time"
        if self.dist.enabled:
            # Ranks agree on a clock or signal stop, at logging cadence to spare collectives.
            if s.step % t["log_every"]:
                local = None
            else:
                local = self.REASONS[self.dist.max(self.REASONS.index(local))]
        if local == "signal":
            return local
        if t["max_steps"] and s.step >= t["max_steps"]:
            return "max_steps"
        if t["max_epochs"] and s.epoch >= t["max_epochs"]:
            return "max_epochs"
        return local or s.halt

    def _on_signal(self, signum, frame) -> None:
        if self._signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self._signal = signum

    @contextlib.contextmanager
    def _signals(self):
        """Ctrl-C and SIGTERM finish the current step, write last.pt and stop."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    # -- evaluation ----------------------------------------------------------------
    def evaluate(self, split: str, dist: Dist | None = None) -> dict[str, float]:
        """Metrics of ``split``, each rank evaluating its part (``dist``: the trainer's);
        ``SINGLE`` evaluates all of it in this process."""
        self.model.eval()
        with torch.inference_mode(), self._autocast():
            metrics = self.task.evaluate(
                self.model, split, self.t["eval_batch_size"], dist or self.dist
            )
        self.model.train()
        return metrics

    def _autocast(self):
        return torch.autocast(
            self.dev.device.type, dtype=self.dev.amp_dtype, enabled=self.dev.amp_dtype is not None
        )

    def _after_eval(self, value: float) -> bool:
        """Update best/early-stopping state; True if this is a new best."""
        s = self.state
        better = s.best_value is None or (
            value > s.best_value if self.maximize else value < s.best_value
        )
        if better:
            s.best_value, s.best_step, s.bad_evals = value, s.step, 0
        else:
            s.bad_evals += 1
        if self.t["patience"] and s.bad_evals >= self.t["patience"]:
            s.halt = "early_stopping"
        target = self.t["stop_at"]
        if target is not None and (value >= target if self.maximize else value <= target):
            s.halt = "stop_at"
        return better

    # -- the loop ----------------------------------------------------------------------
    def reset_window(self) -> None:
        """Start a new logging window: the summed training loss and the samples seen."""
        self._loss_sum = torch.zeros((), device=self.dev.device)
        self._window_samples = 0

    def train_step(self) -> None:
        """One optimizer step over ``trainer.accumulate`` micro-batches, with no host sync.

        ``fit`` calls it in its loop; the benchmark harness times it alone.
        """
        s, t = self.state, self.t
        for _ in range(t["accumulate"]):
            idx = self._next_indices()
            mine = self.dist.shard(idx)
            batch = self.task.batch("train", mine)
            with self._autocast():
                loss = self.task.loss(self.forward_model, batch)
            # Ranks' gradients are averaged: weigh each shard by its size so the
            # step equals one on the whole global batch.
            loss = loss * (mine.numel() * self.dist.world / idx.numel())
            # Average over micro-batches so accumulation does not scale the step.
            self.scaler.scale(loss / t["accumulate"]).backward()
            detached = loss.detach().float()
            self._loss_sum += detached
            # Remember the first non-finite step without a host sync per step.
            bad = ~torch.isfinite(detached) & (self._first_bad < 0)
            self._first_bad = torch.where(bad, s.step + 1, self._first_bad)
            self._window_samples += idx.numel()
            s.samples += idx.numel()
        if t["grad_clip"]:
            # Unscale first so the clipping threshold is in real gradient units.
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t["grad_clip"])
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        if self.sched:
            self.sched.step()
        s.step += 1

    def fit(self, writer: Writers) -> TrainState:
        s, t = self.state, self.t
        model = self.model
        model.train()
        started = self._started = time.monotonic()
        self._since_eval = (s.samples, started)
        interactive = sys.stderr.isatty()
        bar = tqdm(
            total=self.total_steps,
            initial=s.step,
            unit="step",
            dynamic_ncols=True,
            disable=not (interactive and self.dist.main),
        )
        self.reset_window()
        window_steps, window_start = 0, time.monotonic()
        last_metric = None
        if t["eval_at_start"] and s.last_eval_step < 0:
            last_metric = self._eval_and_checkpoint(writer, started, interactive)
        with self._signals():
            while (reason := self._should_stop(started)) is None:
                first = self.first_step_at is None
                if first:
                    self.first_step_at, first_start = time.time(), time.monotonic()
                self.train_step()
                if self.profiler is not None:
                    self.profiler.step()
                window_steps += 1
                bar.update()
                if first:
                    synchronize(self.dev.device)
                    self.first_step_s = time.monotonic() - first_start
                    if self.dev.compile:
                        log.info("first step %.1fs (compilation included)", self.first_step_s)

                epoch_end = s.batch_in_epoch < t["accumulate"] and t["eval_every"] is None
                eval_now = (t["eval_every"] and s.step % t["eval_every"] == 0) or epoch_end
                if s.step % t["log_every"] == 0 or eval_now:
                    _check_finite(self._first_bad)
                    now = time.monotonic()
                    loss_sum = float(self.dist.mean(self._loss_sum))
                    record = {
                        "epoch": s.epoch,
                        "split": "train",
                        "loss": loss_sum / (window_steps * t["accumulate"]),
                        "lr": self.opt.param_groups[0]["lr"],
                        "samples_per_sec": self._window_samples / max(now - window_start, 1e-9),
                        "elapsed": s.train_time + now - started,
                    }
                    writer.log(record, s.step)
                    self.train_losses.append(record["loss"])
                    bar.set_postfix(loss=f"{record['loss']:.4f}", **(last_metric or {}))
                    self.reset_window()
                    window_steps, window_start = 0, now
                if eval_now:
                    last_metric = self._eval_and_checkpoint(writer, started, interactive)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", **last_metric)
                    window_start = time.monotonic()  # throughput counts training only
            bar.close()
            _check_finite(self._first_bad)
            if reason != "signal" and s.last_eval_step != s.step:
                # The last steps count too: evaluate them before picking the best.
                self._eval_and_checkpoint(writer, started, interactive)
            s.stop_reason = reason
            s.train_time += time.monotonic() - started
            self._started = None
            self.save("last.pt")
        if reason == "signal":
            signum = self._signal or signal.SIGTERM  # under torchrun: another rank's signal
            raise Interrupted(
                f"stopped by {signal.Signals(signum).name} at step {s.step}; checkpoint "
                f"written. Resume with: {resume_command(self.run_dir)}",
                128 + signum,
            )
        return s

    def _eval_and_checkpoint(self, writer: Writers, started: float, interactive: bool):
        s = self.state
        samples0, time0 = self._since_eval
        throughput = (s.samples - samples0) / max(time.monotonic() - time0, 1e-9)
        splits = [self.monitor_split, *self.periodic_splits]
        results = {split: self.evaluate(split) for split in splits}
        s.last_eval_step = s.step
        elapsed = s.train_time + time.monotonic() - started
        for split, metrics in results.items():
            record = {
                "epoch": s.epoch,
                "split": split,
                **metrics,
                "lr": self.opt.param_groups[0]["lr"],
                # Training throughput since the previous evaluation.
                "samples_per_sec": throughput,
                "elapsed": elapsed,
            }
            writer.log(record, s.step)
            if not interactive:
                shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
                log.info("step %d epoch %d %s %s (%.1fs)", s.step, s.epoch, split, shown, elapsed)
        metrics = results[self.monitor_split]
        if self._after_eval(metrics[self.monitor_key]):
            s.best_metrics = dict(metrics)
            self.save("best.pt")
        if self.on_eval is not None and self.on_eval(s.step, metrics[self.monitor_key]):
            s.halt = "pruned"
        self.save("last.pt")
        self._since_eval = (s.samples, time.monotonic())  # throughput counts training only
        # Named val_loss, not loss: the bar's postfix shows the training loss as loss.
        return {f"{self.monitor_split}_{self.monitor_key}": f"{metrics[self.monitor_key]:.4f}"}
