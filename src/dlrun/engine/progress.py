"""Where training stands: its saved state, the order it visits data in, stop signals,
and the progress lines a run prints when its output is not a terminal."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dlrun.errors import UserError


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
    best_metrics: dict | None = None  # every metric of the kept evaluation (best.pt's)
    kept_step: int | None = None  # best.pt's step: best_step, or the last with trainer.keep=last
    bad_evals: int = 0  # evaluations since the monitored metric last improved
    last_eval_step: int = -1
    halt: str | None = None  # early_stopping, stop_at or pruned: survives a resume
    stop_reason: str | None = None  # why the last fit() ended
    # The data's fingerprints when training began (provenance.data_fingerprints): a
    # resume refuses data that changed since (provenance.data_changes). None: older runs.
    data: dict | None = None

    def evaluated(
        self, value: float, maximize: bool, patience: int | None, stop_at: float | None
    ) -> bool:
        """Record an evaluation's monitored ``value``: best, early stopping, target.
        True if it is a new best."""
        better = self.best_value is None or (
            value > self.best_value if maximize else value < self.best_value
        )
        if better:
            self.best_value, self.best_step, self.bad_evals = value, self.step, 0
        else:
            self.bad_evals += 1
        if patience and self.bad_evals >= patience:
            self.halt = "early_stopping"
        if stop_at is not None and (value >= stop_at if maximize else value <= stop_at):
            self.halt = "stop_at"
        return better


class DataOrder:
    """The training indices of each micro-batch, on the host.

    Each epoch's order comes from a generator seeded by (seed, epoch), so a
    resumed run rebuilds the same order from the saved position alone. The
    order stays on the host (pinned next to a GPU, so the task's copy of a
    batch's indices is asynchronous): tasks read host-side facts about a
    batch, such as its longest row, without a device sync.
    """

    # Rows are grouped by length within pools of this many batches (as Hugging Face's
    # group_by_length does): batches of like length, still a different mix each epoch.
    POOL_BATCHES = 50

    def __init__(
        self,
        n: int,
        batch_size: int,
        world: int,
        trainer,
        pin: bool,
        lengths: torch.Tensor | None = None,
    ):
        self.n, self.batch_size, self.pin = n, batch_size, pin
        self.seed, self.shuffle = trainer.seed, trainer.shuffle
        # Each row's length (the task's ``row_lengths``) where batches are grouped by it.
        self.lengths = lengths if trainer.group_by_length and trainer.shuffle else None
        self.batches = math.ceil(n / batch_size)  # micro-batches in an epoch
        if 0 < n % batch_size < world:
            # A last batch smaller than the number of ranks would leave one without data.
            self.batches -= 1
        self._perm: torch.Tensor | None = None

    def next(self, s: TrainState) -> torch.Tensor:
        """The next micro-batch's indices; advances ``s`` (its epoch and position)."""
        b = s.batch_in_epoch
        idx = self._order(s)[b * self.batch_size : (b + 1) * self.batch_size]
        s.batch_in_epoch += 1
        if s.batch_in_epoch == self.batches:
            s.epoch += 1
            s.batch_in_epoch = 0
            self._perm = None
        return idx

    def peek(self, s: TrainState) -> torch.Tensor:
        """The indices ``next`` will return, without advancing (to prefetch them)."""
        b = s.batch_in_epoch
        return self._order(s)[b * self.batch_size : (b + 1) * self.batch_size]

    def _order(self, s: TrainState) -> torch.Tensor:
        """Epoch ``s.epoch``'s order of the examples, made once per epoch."""
        if self._perm is None:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + s.epoch)
                self._perm = torch.randperm(self.n, generator=g)
                if self.lengths is not None:
                    self._perm = self._grouped(self._perm, g)
            else:
                self._perm = torch.arange(self.n)
            if self.pin:
                self._perm = self._perm.pin_memory()
        return self._perm

    def _grouped(self, perm: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """``perm`` with rows of like length in the same batch: each pool of
        ``POOL_BATCHES`` batches sorted by length and cut into batches, the full batches
        then shuffled (the last, partial one stays last). A batch cut to its longest row
        then carries little padding: a Transformer's step on dates took a third less."""
        assert self.lengths is not None
        pool = self.batch_size * self.POOL_BATCHES
        parts = [p[torch.argsort(self.lengths[p], stable=True)] for p in perm.split(pool)]
        flat = torch.cat(parts)
        full = self.n // self.batch_size * self.batch_size
        batches = flat[:full].view(-1, self.batch_size)
        batches = batches[torch.randperm(batches.shape[0], generator=g)]
        return torch.cat([batches.flatten(), flat[full:]])


class ProgressLines:
    """Progress as log lines, for output that is not a terminal (a log file, CI, a SLURM
    job), where a bar would be one endless line.

    ``step`` prints a line when ``every`` seconds have passed since the last one (the
    step, the rate, the last logged training loss, the time left), so a log never goes
    quiet for long. ``evaluation`` prints an evaluation's metrics on one line, at most
    one such line per ``every`` seconds (short epochs evaluated each epoch would print
    hundreds of near-identical lines); the last evaluation is always printed.
    """

    def __init__(
        self,
        total: int | None,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger | None = None,
    ):
        self.total, self.every, self.clock = total, every, clock
        self.log = log or logging.getLogger("dlrun")
        self._start: tuple[int, float] | None = None  # (step, time) when fit() began
        self._last_line = self._last_eval = -math.inf
        self._skipped = 0  # evaluations not printed since the last printed one

    def started(self, step: int) -> None:
        now = self.clock()
        self._start, self._last_line = (step, now), now

    def _rate(self, step: int) -> float:
        step0, t0 = self._start or (0, self.clock())
        return (step - step0) / max(self.clock() - t0, 1e-9)

    def step(self, state: TrainState, loss: float | None) -> None:
        """After each optimizer step: a line if ``every`` seconds passed without one."""
        now = self.clock()
        if now - self._last_line < self.every:
            return
        rate = self._rate(state.step)
        parts = [f"step {state.step}" + (f"/{self.total}" if self.total else "")]
        parts.append(f"epoch {state.epoch}")
        parts.append(f"{rate:.3g} steps/s")
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if self.total and rate > 0:
            parts.append(f"{duration((self.total - state.step) / rate)} left")
        self.log.info("  ".join(parts))
        self._last_line = now

    def evaluation(
        self,
        state: TrainState,
        results: dict[str, dict[str, float]],
        elapsed: float,
        final: bool = False,
    ) -> None:
        """An evaluation's metrics of every split on one line (see the class)."""
        now = self.clock()
        if not final and now - self._last_eval < self.every:
            self._skipped += 1
            return
        shown = "  ".join(
            f"{split} " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            for split, metrics in results.items()
        )
        more = f" ({self._skipped} more evaluations in metrics.jsonl)" if self._skipped else ""
        self.log.info(
            "step %d epoch %d  %s  (%s)%s", state.step, state.epoch, shown, duration(elapsed), more
        )
        self._last_eval = self._last_line = now
        self._skipped = 0


def duration(seconds: float) -> str:
    """``seconds`` as 42s, 3m05s or 2h07m."""
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    seconds = int(round(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


# SLURM's warning before it ends a job (sbatch --signal=B:USR1@SECONDS): save, go on.
SAVE_SIGNALS = tuple(s for s in (getattr(signal, "SIGUSR1", None),) if s is not None)


class StopSignals:
    """Ctrl-C and SIGTERM ask training to stop after the current step (``received``);
    a second Ctrl-C stops at once. SIGUSR1 asks for a checkpoint (``take_save``)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.save_asked = False

    def _on_signal(self, signum, frame) -> None:
        if signum in SAVE_SIGNALS:
            self.save_asked = True
            return
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def take_save(self) -> bool:
        """Whether a checkpoint was asked for since the last call."""
        asked, self.save_asked = self.save_asked, False
        return asked

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        names = (signal.SIGINT, signal.SIGTERM, *SAVE_SIGNALS)
        old = {s: signal.signal(s, self._on_signal) for s in names}
        try:
            yield self
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)


def check_finite(first_bad: torch.Tensor, run) -> None:
    """Stop at a NaN/inf loss; the checkpoints on disk, if any, still hold the last good
    state of ``run`` (its RunDir)."""
    step = int(first_bad)  # the one host sync, at logging cadence
    if step >= 0:
        kept = " (the run directory keeps the last good checkpoints)"
        raise UserError(
            f"the training loss became NaN or infinite at step {step}; lower optimizer.lr, "
            "set trainer.grad_clip, or use device.amp=none" + (kept if run.has_checkpoint() else "")
        )
