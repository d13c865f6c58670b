"""One run, from a validated config to a finished run directory: build, fit, test, summarize.

``run(cfg, run_dir)`` is what the ``dlrun`` command's job calls and what tests call
directly. It validates a config it is handed as Hydra's (or plain data) and takes a
``RunConfig`` as it is: the command's plan validated it already.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from dlrun import __version__
from dlrun.engine.provenance import provenance
from dlrun.engine.trackers import open_trackers, tracker_process
from dlrun.engine.trainer import Callback, FitResult, Trainer
from dlrun.errors import UserError
from dlrun.plan import init_from
from dlrun.plan.config import RunConfig, to_dict, validate
from dlrun.plan.init_from import InitFrom
from dlrun.rundir.layout import RunDir
from dlrun.rundir.write import write_json

log = logging.getLogger("dlrun")


def run(
    cfg: RunConfig | DictConfig | dict,
    run_dir: Path,
    resume: dict | None = None,
    init: InitFrom | None = None,
) -> dict[str, float]:
    """Train and test one configuration; write everything into ``run_dir``.

    ``resume``: the checkpoint ``cfg.resume`` continues from, already read (the
    command's plan read it once); read here when a caller gives only ``cfg.resume``.
    ``init``: the weights ``cfg.init_from`` starts a new run from, read and checked
    likewise (a resumed run has its own weights: ``init_from`` is then not read).
    Returns the headline metrics, e.g. ``{"val/exact_match": ..., "test/exact_match": ...}``.
    """
    from dlrun.engine import distributed
    from dlrun.engine.device import resolve_device, set_threads

    wall_start = time.monotonic()
    cfg = cfg if isinstance(cfg, RunConfig) else validate(cfg)
    if cfg.resume and resume is None:
        resume = RunDir(Path(cfg.resume).expanduser()).resume_checkpoint()
    if cfg.resume and not cfg.trainer.folds:
        init = None  # the run continues from its own weights (a new fold starts from these)
    elif cfg.init_from and init is None:
        init = init_from.read(cfg.init_from)
        init_from.check(cfg, init)
    dist = distributed.from_env()
    dev = resolve_device(cfg.device, dist.local_rank if dist.enabled else None)
    set_threads(cfg.device.threads)
    distributed.init(dist, dev.device)
    rundir = RunDir(dist.broadcast(str(run_dir)))  # torchrun: every rank uses rank 0's
    if dist.main:  # the others write nothing there
        rundir.path.mkdir(parents=True, exist_ok=True)
    if cfg.trainer.folds and dist.enabled:
        raise UserError(
            f"trainer.folds={cfg.trainer.folds}: cross-validation runs in one process; "
            "start it without torchrun"
        )
    # logger=mlflow/wandb: their process starts now (after set_threads measured the
    # machine's load), so that their imports overlap the data and the model (rank 0 alone).
    with tracker_process(cfg, dist.main and not cfg.debug.lr_find_steps) as trackers:
        if cfg.trainer.folds:
            return _cross_validate(cfg, dev, dist, rundir, wall_start, init, trackers)
        task, data_time = _load(cfg, dist, init)
        _ready(cfg, task, dev, dist, rundir)
        started = (wall_start, data_time)
        if cfg.debug.lr_find_steps:
            return _find_lr(cfg, task, dev, dist, rundir, init, started)
        metrics, _ = _fit(cfg, task, dev, dist, rundir, resume or init, started, trackers)
    distributed.shutdown(dist)
    return metrics


def _fit(cfg: RunConfig, task, dev, dist, rundir: RunDir, start, started, host=None):
    """Train and test a model on the task's splits as they are; write ``rundir``'s files.

    ``start``: the checkpoint a resume continues (a dict), the weights ``init_from``
    starts from (an ``InitFrom``), or None. ``started``: when the run began and the
    seconds its data took. ``host``: the process of the trackers (``tracker_process``).
    Returns the headline metrics and the summary (rank 0; ``{}`` and None on the others).
    """
    wall_start, data_time = started
    trainer = _trainer(cfg, task, dev, dist, rundir, start)
    if not dist.main:  # rank 0 tests and writes the rest
        _train_and_test(cfg, trainer, None)
        return {}, None
    # logger=mlflow/wandb, opened before a resume trims metrics.jsonl (a tracker that
    # cannot start leaves the run's files as they were) and before the first step (its
    # error ends the run there); a run that raises ends them.
    with open_trackers(cfg, rundir.path, host) or contextlib.nullcontext() as trackers:
        result, test = _train_and_test(cfg, trainer, trackers)
        pruned = result.state.stop_reason == "pruned"  # a search's trial its pruner stopped
        _write_outputs(cfg, task, trainer, None if pruned else test)
        times = {"data_time_s": data_time, "wall_time_s": time.monotonic() - wall_start}
        summary = _summary(cfg, trainer, result, test, times, task.data_read)
        if isinstance(start, InitFrom) or cfg.init_from:  # a resume knows the path only
            where = start.record() if isinstance(start, InitFrom) else {"path": cfg.init_from}
            summary["init_from"] = where
        rundir.write_summary(summary)
        if trackers:  # after the files they send: summary, curves, samples
            trackers.finish(rundir, summary)
    shown = "  ".join(f"{k}={v:.4f}" for k, v in test.items())
    print(f"run dir: {rundir}\n{shown or f'pruned at step {result.state.step}'}", flush=True)
    return {**result.best, **test}, summary


def _find_lr(cfg: RunConfig, task, dev, dist, rundir: RunDir, init, started):
    """debug=lr_find: a learning-rate range test instead of training. It leaves the
    figure, a summary whose status is "lr_find" (not a trained run: no checkpoints,
    reports do not rank it) and the suggested optimizer.lr with the command to use it."""
    from dlrun.engine import debug, distributed
    from dlrun.engine.plots import plot_lr_find

    d = cfg.debug
    trainer = _trainer(cfg, task, dev, dist, rundir, init)
    test = debug.lr_range_test(trainer, d.lr_find_steps, d.lr_find_min, d.lr_find_max)
    distributed.shutdown(dist)
    if not dist.main:
        return {}
    marks = {
        "suggested (minimum / 10)": test.suggested,
        "minimum": test.minimum,
        "steepest descent": test.steepest,
    }
    plot_lr_find(test.rates, test.losses, test.smoothed, marks, rundir.lr_find)
    wall_start, data_time = started
    times = {"data_time_s": data_time, "wall_time_s": time.monotonic() - wall_start}
    summary = {
        "status": "lr_find",
        "task": cfg.task.name,
        "model": cfg.model.name,
        "lr_find": test.summary(),
        **{k: round(v, 2) for k, v in times.items()},
        "device": trainer.dev.describe(),
        "dlrun": __version__,
        "provenance": provenance(cfg, task.data_read),
    }
    if init is not None:
        summary["init_from"] = init.record()
    rundir.write_summary(summary)
    command = debug.lr_find_command(rundir, cfg.task.name, test.suggested)
    print(
        f"run dir: {rundir}\nlr_find: {len(test.rates)} steps, {test.stopped}; smoothed loss "
        f"lowest at lr={test.minimum:.3g}, falling fastest at lr={test.steepest:.3g} "
        f"(figure: {rundir.lr_find})\nsuggested optimizer.lr={test.suggested:.3g} (the "
        f"minimum's / 10); train with:\n  {command}",
        flush=True,
    )
    return {"lr_find/suggested_lr": test.suggested}


def _load(cfg: RunConfig, dist, init: InitFrom | None = None):
    """The task with its data prepared (on the host); the seconds its data took.
    ``init``: the run whose vocabularies the data must have (``init_from``)."""
    from dlrun.engine import checkpoint
    from dlrun.engine.device import give_back_freed_memory
    from dlrun.engine.provenance import data_fingerprints
    from dlrun.registry import task_entry

    checkpoint.seed_everything(cfg.trainer.seed)
    task = task_entry(cfg.task.name).obj(cfg)
    task.data_read = data_fingerprints(cfg.dataset)  # before reading: edits after are seen
    t0 = time.monotonic()
    with dist.main_first():  # rank 0 fills the data cache, the others read it
        task.prepare(Path(cfg.paths.cache_dir).expanduser())
    give_back_freed_memory()  # what reading and encoding freed: not part of the run's floor
    data_time = time.monotonic() - t0
    if init is not None:
        init_from.check_vocabularies(task, init)
    sizes = ", ".join(f"{name} {task.size(name)}" for name in task.splits)
    log.info("data: %s (%.1fs)", sizes, data_time)
    return task, data_time


def _ready(cfg: RunConfig, task, dev, dist, run: RunDir) -> None:
    """The task's splits made ready for training in ``run``: its training subset, stats
    and what prediction needs written, debug limits, the data on the device."""
    from dlrun.engine import debug
    from dlrun.engine.device import give_back_freed_memory, keep_freed_memory

    task.add_train_subset(cfg.trainer.train_eval_size)
    if dist.main:
        write_json(run.stats, task.stats())
        task.save(run)
        give_back_freed_memory()  # the statistics' work
    debug.limit_splits(task, cfg.debug, cfg.trainer.eval_batch_size)
    task.to(dev.device)
    # From here on steps make and free the same large tensors again and again: keep them
    # (after the data are read, whose one-off peaks would otherwise stay in the process).
    keep_freed_memory()


# -- cross-validation (trainer.folds) ------------------------------------------------------


def _cross_validate(
    cfg: RunConfig, dev, dist, rundir: RunDir, wall_start: float, init: InitFrom | None, host
):
    """``trainer.folds`` = K models, fold k in ``fold_<k>/`` validating on part k of the
    training and validation data (``Task.fold``); ``summary.json`` has every fold and
    each metric's mean and standard deviation. A resume continues the fold it stopped
    in and keeps the folds that finished."""
    from dlrun.engine import checkpoint
    from dlrun.errors import Interrupted
    from dlrun.plan.resume import resume_command

    k_folds = cfg.trainer.folds
    assert k_folds, "run() cross-validates only with trainer.folds set"
    task, data_time = _load(cfg, dist, init)
    summaries = []
    for k in range(k_folds):
        fold = rundir.fold(k)
        fold_cfg, fold_resume = _fold_start(cfg, fold)
        if fold_cfg is None:
            log.info("fold %d of %d: finished before, in %s", k, k_folds, fold)
            summaries.append(fold.read_summary())
            continue
        started = time.monotonic()
        task.fold(k, k_folds, cfg.trainer.seed)
        fold.path.mkdir(parents=True, exist_ok=True)
        _ready(fold_cfg, task, dev, dist, fold)
        sizes = task.size("train"), task.size("val")
        log.info("fold %d of %d: train %d, val %d", k, k_folds, *sizes)
        checkpoint.seed_everything(cfg.trainer.seed)  # each fold's model starts alike
        try:
            start = fold_resume or init  # each new fold starts from init_from's weights
            _, summary = _fit(fold_cfg, task, dev, dist, fold, start, (started, 0.0), host)
        except Interrupted as exc:  # resume the whole run, not the fold alone
            message = str(exc).replace(resume_command(fold.path), resume_command(rundir.path))
            raise Interrupted(f"fold {k} of {k_folds}: {message}", exc.exit_code) from None
        summaries.append(summary)
    times = {"data_time_s": data_time, "wall_time_s": time.monotonic() - wall_start}
    summary = cv_summary(cfg, summaries, times, task.data_read)
    rundir.write_summary(summary)
    means = {**summary["best"], **summary["test"]}
    shown = "  ".join(f"{k}={v:.4f}±{summary['std'][k]:.4f}" for k, v in means.items())
    print(f"run dir: {rundir} ({k_folds} folds)\n{shown}", flush=True)
    return means


def _fold_start(cfg: RunConfig, fold: RunDir) -> tuple[RunConfig | None, dict | None]:
    """How ``fold`` starts: its config and the checkpoint it continues (in a resumed run,
    a fold that trained before); no config for a fold that finished at its limits."""
    import dataclasses

    from dlrun.plan.resume import check_unfinished

    fresh = dataclasses.replace(cfg, resume=None, tune=None)  # a search's trial: no pruning
    if not cfg.resume or not fold.has_checkpoint():
        return fresh, None
    ckpt = fold.resume_checkpoint()
    try:
        check_unfinished(fold, ckpt.get("state"), cfg)
    except UserError:  # finished, and this command's limits add nothing
        return None, None
    return dataclasses.replace(fresh, resume=str(fold.path)), ckpt


def cv_summary(
    cfg: RunConfig, folds: list[dict], times: dict[str, float], data: dict
) -> dict[str, Any]:
    """A cross-validation run's ``summary.json``: each metric's mean over ``folds`` (the
    folds' summaries) in ``best`` and ``test``, as a run's are, its standard deviation
    (n - 1) in ``std``, and each fold's results in ``fold_results``; ``data``: the data's
    fingerprints (``Task.data_read``)."""
    import statistics

    import torch

    def spread(section: str) -> tuple[dict[str, float], dict[str, float]]:
        names = dict.fromkeys(k for f in folds for k in f.get(section, {}) if k != "step")
        values = {n: [f[section][n] for f in folds if n in f.get(section, {})] for n in names}
        mean = {n: statistics.fmean(v) for n, v in values.items()}
        std = {n: statistics.stdev(v) if len(v) > 1 else 0.0 for n, v in values.items()}
        return mean, std

    best, best_std = spread("best")
    test, test_std = spread("test")
    per_fold = ("best", "test", "steps", "epochs", "stop_reason", "train_time_s")
    return {
        "status": "ok",
        "task": cfg.task.name,
        "model": cfg.model.name,
        "monitor": cfg.task.monitor,
        "mode": cfg.task.mode,
        "folds": len(folds),
        "best": best,
        "test": test,
        "std": {**best_std, **test_std},
        "fold_results": [
            {"fold": k, **{key: f.get(key) for key in per_fold}} for k, f in enumerate(folds)
        ],
        "steps": sum(f.get("steps", 0) for f in folds),
        "epochs": statistics.fmean(f.get("epochs", 0.0) for f in folds),
        "train_time_s": round(sum(f.get("train_time_s", 0.0) for f in folds), 2),
        **{k: round(v, 2) for k, v in times.items()},
        "peak_memory_mb": max(f.get("peak_memory_mb", 0.0) for f in folds),
        "ready_memory_mb": max((f.get("ready_memory_mb") or 0.0) for f in folds) or None,
        "world_size": 1,
        "parameters": folds[0].get("parameters"),
        "device": folds[0].get("device"),
        "torch": torch.__version__,
        "dlrun": __version__,
        "provenance": provenance(cfg, data),
    }


def _trainer(cfg: RunConfig, task, dev, dist, run: RunDir, start) -> Trainer:
    """The trainer of a new model (``start``: None, or the ``InitFrom`` whose weights it
    starts from), or of the run ``cfg.resume`` continues (``start``: its checkpoint)."""
    import torch

    from dlrun.engine import debug
    from dlrun.engine.device import amp_for_model
    from dlrun.engine.distributed import launcher

    model = task.build_model().to(dev.device)
    if isinstance(start, InitFrom):  # before the trainer builds its optimizer and wrappers
        init_from.load_weights(model, start)
        log.info("initialized from %s (step %s)", start.checkpoint, start.step)
    resume = start if isinstance(start, dict) else None
    dev = amp_for_model(dev, model, cfg.device.amp)  # bf16 for a Transformer on an AMX CPU
    params = sum(p.numel() for p in model.parameters())
    world = f", {dist.world} processes ({launcher()})" if dist.enabled else ""
    log.info(
        "task %s, model %s (%s parameters) on %s%s",
        *(cfg.task.name, cfg.model.name, f"{params:,}", dev.describe(), world),
    )
    callbacks = debug.callbacks(cfg.debug, run, dev.device)
    if cfg.tune is not None:  # a search's trial: its study's pruner may stop it
        callbacks.append(Pruning(cfg.tune))
    trainer = Trainer(task, model, cfg, dev, run, dist, callbacks)
    if resume is None:
        trainer.state.data = task.data_read  # what a resume must find again
    else:
        trainer.restore(resume)
        where = RunDir(Path(str(cfg.resume)).expanduser()).last  # as the command named it
        log.info("resumed from %s at step %d", where, trainer.state.step)
    if dist.enabled:  # DDP made the weights equal; dropout and augmentation differ per rank
        torch.manual_seed(cfg.trainer.seed + 1_000_003 * dist.rank + trainer.state.step)
    return trainer


class Pruning(Callback):
    """A search's trial reports its monitored metric to the study at every evaluation
    and stops, as "pruned", when the study's pruner says so."""

    def __init__(self, tune: Any):
        from dlrun.search.study import pruning_hook

        report = pruning_hook(tune)
        assert report is not None, "a search's trial (tune set) has a study to report to"
        self.report = report

    def on_eval_end(self, trainer: Trainer, value: float) -> str | None:
        return "pruned" if self.report(trainer.state.step, value) else None


def _train_and_test(cfg: RunConfig, trainer: Trainer, trackers) -> tuple[FitResult, dict]:
    """Fit, then test the best checkpoint on rank 0: the fit's result and the test metrics
    as ``{"test/accuracy": ...}``."""
    from dlrun.engine.writers import flat_hparams, open_writers

    dist, run = trainer.dist, trainer.run
    keep = trainer.state.step if cfg.resume else None  # a resume drops later records
    with open_writers(cfg.logger, run, dist.main, keep, trackers) as writer:
        try:
            result = trainer.fit(writer)
        except UserError:
            if not cfg.resume and trainer.state.step == 0:  # nothing trained: nothing to keep
                run.remove_checkpoints()
            raise
        if not dist.main or result.state.stop_reason == "pruned":
            return result, {}
        tests = trainer.test(writer)
        test = {f"{split}/{k}": v for split, m in tests.items() for k, v in m.items()}
        flat = flat_hparams(to_dict(cfg))
        writer.hparams({k: v for k, v in flat.items() if not k.startswith("paths.")}, test)
    return result, test


def _write_outputs(cfg: RunConfig, task, trainer: Trainer, test: dict | None) -> None:
    """samples.txt and the task's report (a tested run: ``test`` holds its metrics), and
    the curves."""
    import torch

    from dlrun.engine.plots import plot_curves

    run = trainer.run
    if test is not None:
        model, dev = trainer.eval_model, trainer.dev  # the tested weights
        model.eval()
        amp = dev.amp_dtype
        with (
            torch.inference_mode(),
            torch.autocast(dev.device.type, dtype=amp, enabled=amp is not None),  # as the test
        ):
            rows = task.samples(model, "test", cfg.trainer.num_samples)
            task.report(model, run)
        shown = {k: v for k, v in test.items() if k.startswith("test/")}
        run.write_samples(rows, task.size("test") if "test" in task.splits else None, shown)
    plot_curves(run.metrics, run.curves)


def _summary(
    cfg: RunConfig, trainer: Trainer, result: FitResult, test: dict, times: dict, data: dict
):
    import torch

    from dlrun.engine.device import peak_memory_mb

    state, dev = result.state, trainer.dev
    return {
        "status": "pruned" if state.stop_reason == "pruned" else "ok",
        "task": cfg.task.name,
        "model": cfg.model.name,
        "monitor": cfg.task.monitor,
        "mode": cfg.task.mode,
        "best": {
            "step": state.best_step if state.kept_step is None else state.kept_step,
            **result.best,
        },
        "test": test,
        "steps": state.step,
        "epochs": result.epochs,
        "samples": state.samples,
        "stop_reason": state.stop_reason,
        "train_time_s": round(state.train_time, 2),
        **{k: round(v, 2) for k, v in times.items()},
        # From the first training step's start (Unix time) and its length, compilation
        # included: the benchmark harness derives start-up time from them.
        "first_step_at": result.first_step_at,
        "first_step_s": None if result.first_step_s is None else round(result.first_step_s, 4),
        "peak_memory_mb": round(peak_memory_mb(dev.device), 1),
        # The peak when the first step began: what reading the data and making the model took.
        "ready_memory_mb": None if (m := result.ready_memory_mb) is None else round(m, 1),
        "world_size": trainer.dist.world,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "device": dev.describe(),
        "torch": torch.__version__,
        "dlrun": __version__,
        "provenance": provenance(cfg, data),
    }
