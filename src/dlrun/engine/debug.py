"""debug=fast|overfit|profile|anomaly: the checks a run can make of itself (conf/debug/)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from dlrun.engine.evaluate import TaskLike

log = logging.getLogger("dlrun")


def limit_splits(task: TaskLike, cfg) -> None:
    """Keep the first ``debug.train_batches`` training batches and the first
    ``debug.eval_batches`` evaluation batches of every other split."""
    debug = cfg.debug
    if debug.train_batches:
        task.keep_first("train", debug.train_batches * task.batch_size)
    if debug.eval_batches:
        n = debug.eval_batches * cfg.trainer.eval_batch_size
        for split in task.splits:
            if split != "train":
                task.keep_first(split, n)


@contextlib.contextmanager
def profiled(steps: int, run_dir: Path, device: torch.device):
    """A torch.profiler over training steps (``Trainer.on_step`` advances it): one step
    skipped, one of warm-up, then ``steps`` traced into ``run_dir/profile``, which
    TensorBoard's profiler plugin and https://ui.perfetto.dev open. Logs the top operators."""
    if not steps:
        yield None
        return
    from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    out = run_dir / "profile"
    prof = profile(
        activities=activities,
        schedule=schedule(wait=1, warmup=1, active=steps, repeat=1),
        on_trace_ready=tensorboard_trace_handler(str(out)),
        record_shapes=True,
    )
    with prof:
        yield prof
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    try:
        table = prof.key_averages().table(sort_by=sort, row_limit=15)
    except (AssertionError, RuntimeError):  # fewer steps ran than the schedule traces
        log.warning("profile: the run ended before %d steps were traced", steps)
        return
    (out / "top_operators.txt").write_text(table + "\n")
    log.info("profile: trace in %s; top operators:\n%s", out, table)


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
