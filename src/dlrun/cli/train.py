"""dlrun: the training entrypoint. Validate, build, fit, test, summarize.

``main`` (the ``dlrun`` console script) checks the command line before Hydra
starts, so a mistake ends with one line and no output directory; the Hydra
task function then calls ``run(cfg, run_dir)``, which tests call directly.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from dlrun import __version__
from dlrun.errors import Interrupted, Terminated, UserError
from dlrun.plan.compose import register_plugins
from dlrun.plan.config import conf_dir, to_dict, validate
from dlrun.plan.resume import resume_command
from dlrun.rundir.write import write_failure, write_samples, write_summary

log = logging.getLogger("dlrun")
_claimed: dict[str, str] = {}


def _unique_dir(base: str) -> str:
    """``base``, or ``base-1``, ``base-2``...: the first that this process creates itself.

    mkdir is atomic, so two runs started in the same second never share a
    directory. Memoized: Hydra resolves the run dir more than once.
    """
    if base not in _claimed:
        path, n = base, 0
        while True:
            try:
                os.makedirs(path)
                break
            except FileExistsError:
                n += 1
                path = f"{base}-{n}"
        _claimed[base] = path
    return _claimed[base]


def _register() -> None:
    """Registration, the one thing importing this module does: dlrun's Hydra plugins
    (``@hydra.main`` below may start without composing through ``preflight``, e.g.
    ``--info``) and the run-dir resolver. ``use_cache``: Hydra copies resolver
    caches into each sweep job's config, so a job resolved in another process (a
    launcher plugin) gets the same directory.
    """
    register_plugins()
    OmegaConf.register_new_resolver("dlrun_unique", _unique_dir, replace=True, use_cache=True)


_register()


def run(cfg: DictConfig | dict, run_dir: Path) -> dict[str, float]:
    """Train and test one configuration; write everything into ``run_dir``.

    Returns the headline metrics, e.g. ``{"val/exact_match": ..., "test/exact_match": ...}``.
    """
    from dlrun.engine import distributed
    from dlrun.engine.device import resolve_device
    from dlrun.engine.trackers import open_trackers

    wall_start = time.monotonic()
    cfg = validate(cfg)
    dist = distributed.from_env()
    dev = resolve_device(cfg.device, dist.local_rank if dist.enabled else None)
    distributed.init(dist, dev.device)
    run_dir = Path(dist.broadcast(str(run_dir)))  # torchrun: every rank uses rank 0's
    if dist.main:  # the others write nothing there
        run_dir.mkdir(parents=True, exist_ok=True)
    task, data_time = _prepare(cfg, dev, dist, run_dir)
    trainer = _trainer(cfg, task, dev, dist, run_dir)
    if not dist.main:  # rank 0 tests and writes the rest
        _train_and_test(cfg, trainer, run_dir, None)
        distributed.shutdown(dist)
        return {}
    # logger=mlflow/wandb, opened before a resume trims metrics.jsonl (a tracker that
    # cannot start leaves the run's files as they were); a run that raises ends them.
    with open_trackers(cfg, run_dir) or contextlib.nullcontext() as trackers:
        state, test = _train_and_test(cfg, trainer, run_dir, trackers)
        pruned = state.stop_reason == "pruned"  # a search's trial its pruner stopped
        _write_outputs(cfg, task, trainer, run_dir, tested=not pruned)
        best = {f"{trainer.monitor_split}/{k}": v for k, v in (state.best_metrics or {}).items()}
        times = {"data_time_s": data_time, "wall_time_s": time.monotonic() - wall_start}
        summary = _summary(cfg, trainer, best, test, times)
        write_summary(run_dir, summary)
        if trackers:  # after the files they send: summary, curves, samples
            trackers.finish(run_dir, summary["status"])
    shown = "  ".join(f"{k}={v:.4f}" for k, v in test.items())
    print(f"run dir: {run_dir}\n{shown or f'pruned at step {state.step}'}", flush=True)
    distributed.shutdown(dist)
    return {**best, **test}


def _prepare(cfg, dev, dist, run_dir: Path):
    """The task with its data on the device; the seconds its data took."""
    from dlrun.engine import checkpoint, debug
    from dlrun.registry import task_entry

    checkpoint.seed_everything(cfg.trainer.seed)
    task = task_entry(cfg.task.name).obj(cfg)
    t0 = time.monotonic()
    with dist.main_first():  # rank 0 fills the data cache, the others read it
        task.prepare(Path(cfg.paths.cache_dir).expanduser())
    data_time = time.monotonic() - t0
    sizes = ", ".join(f"{name} {task.size(name)}" for name in task.splits)
    log.info("data: %s (%.1fs)", sizes, data_time)
    task.add_train_subset(cfg.trainer.train_eval_size)
    if dist.main:
        import json

        (run_dir / "stats.json").write_text(json.dumps(task.stats(), indent=2) + "\n")
        task.save(run_dir)
    debug.limit_splits(task, cfg)
    task.to(dev.device)
    return task, data_time


def _trainer(cfg, task, dev, dist, run_dir: Path):
    """The trainer of a new model, or of the run ``cfg.resume`` continues."""
    import torch

    from dlrun.engine.device import amp_for_model
    from dlrun.engine.trainer import Trainer
    from dlrun.search.study import pruning_hook

    model = task.build_model().to(dev.device)
    dev = amp_for_model(dev, model, cfg.device.amp)  # bf16 for a Transformer on an AMX CPU
    params = sum(p.numel() for p in model.parameters())
    world = f", {dist.world} processes (torchrun)" if dist.enabled else ""
    log.info(
        "task %s, model %s (%s parameters) on %s%s",
        *(cfg.task.name, cfg.model.name, f"{params:,}", dev.describe(), world),
    )
    trainer = Trainer(task, model, cfg, dev, run_dir, dist)
    trainer.on_eval = pruning_hook(cfg.tune)  # None unless this is a search's trial
    if cfg.resume:
        path = _resume_checkpoint(cfg.resume)
        trainer.restore(path)
        if trainer.state.halt == "pruned":  # a search's pruned trial continues as a plain run
            trainer.state.halt = None
        log.info("resumed from %s at step %d", path, trainer.state.step)
    if dist.enabled:  # DDP made the weights equal; dropout and augmentation differ per rank
        torch.manual_seed(cfg.trainer.seed + 1_000_003 * dist.rank + trainer.state.step)
    return trainer


def _train_and_test(cfg, trainer, run_dir: Path, trackers):
    """Fit (with the debug modes' tools), then test the best checkpoint on rank 0: the
    state and the test metrics as ``{"test/accuracy": ...}``."""
    import torch

    from dlrun.engine import debug
    from dlrun.engine.writers import flat_hparams, open_writers

    dbg, dist = cfg.debug, trainer.dist
    keep = trainer.state.step if cfg.resume else None  # a resume drops later records
    with open_writers(cfg, run_dir, dist.main, keep, trackers) as writer:
        try:
            with (
                torch.autograd.set_detect_anomaly(dbg.anomaly),
                debug.profiled(dbg.profile_steps, run_dir, trainer.dev.device) as trainer.profiler,
            ):
                state = trainer.fit(writer)
        except UserError:
            if not cfg.resume and trainer.state.step == 0:  # nothing trained: nothing to keep
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            raise
        trainer.profiler = None
        if dbg.train_batches and dist.main:
            debug.overfit_verdict(trainer.train_losses, dbg.overfit_loss)
        if not dist.main or state.stop_reason == "pruned":
            return state, {}
        tests = trainer.test(writer)
        test = {f"{split}/{k}": v for split, m in tests.items() for k, v in m.items()}
        flat = flat_hparams(to_dict(cfg))
        writer.hparams({k: v for k, v in flat.items() if not k.startswith("paths.")}, test)
    return state, test


def _write_outputs(cfg, task, trainer, run_dir: Path, tested: bool) -> None:
    """samples.txt and the task's report (a tested run), and the curves."""
    import torch

    from dlrun.engine.plots import plot_curves

    if tested:
        model, dev = trainer.model, trainer.dev
        model.eval()
        amp = dict(dtype=dev.amp_dtype, enabled=dev.amp_dtype is not None)
        with torch.inference_mode(), torch.autocast(dev.device.type, **amp):  # as the test
            rows = task.samples(model, "test", cfg.trainer.num_samples)
            task.report(model, run_dir)
        write_samples(run_dir / "samples.txt", rows)
    plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")


def _summary(cfg, trainer, best: dict, test: dict, times: dict) -> dict:
    import torch

    from dlrun.engine.device import peak_memory_mb

    state, dev, dist = trainer.state, trainer.dev, trainer.dist
    return {
        "status": "pruned" if state.stop_reason == "pruned" else "ok",
        "task": cfg.task.name,
        "model": cfg.model.name,
        "monitor": cfg.task.monitor,
        "mode": cfg.task.mode,
        "best": {"step": state.best_step, **best},
        "test": test,
        "steps": state.step,
        "epochs": state.step * cfg.trainer.accumulate / trainer.batches_per_epoch,
        "samples": state.samples,
        "stop_reason": state.stop_reason,
        "train_time_s": round(state.train_time, 2),
        **{k: round(v, 2) for k, v in times.items()},
        # From the first training step's start (Unix time) and its length, compilation
        # included: the benchmark harness derives start-up time from them.
        "first_step_at": trainer.first_step_at,
        "first_step_s": None if trainer.first_step_s is None else round(trainer.first_step_s, 4),
        "peak_memory_mb": round(peak_memory_mb(dev.device), 1),
        "world_size": dist.world,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "device": dev.describe(),
        "torch": torch.__version__,
        "dlrun": __version__,
    }


def _resume_checkpoint(resume: str) -> Path:
    path = Path(resume).expanduser() / "checkpoints" / "last.pt"
    if not path.is_file():
        raise UserError(
            f"resume={resume}: no checkpoints/last.pt there; pass a dlrun run "
            "directory (outputs/DATE/TIME) that has trained at least once"
        )
    return path


def _job(cfg: DictConfig) -> dict[str, float] | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dlrun.engine.distributed import from_env

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    resumed = bool(cfg.get("resume"))
    try:
        return run(_job_config(cfg, hc.overrides.task) if resumed else cfg, run_dir)
    except UserError as exc:
        write_failure(run_dir, "failed", str(exc))
        if from_env().main:  # under torchrun, one rank says it
            log.error("dlrun: error: %s (run directory: %s)", exc, run_dir)
        if hc.mode == RunMode.MULTIRUN:
            return None  # one failed job does not stop the sweep
        sys.exit(2)
    except (Interrupted, KeyboardInterrupt) as exc:
        # Ctrl-C or SIGTERM: in training the loop checkpointed (Interrupted);
        # anywhere else (data, evaluation, the test, plots) the run just stops here.
        code = getattr(exc, "exit_code", 130)
        message = str(exc) or f"stopped by {signal.Signals(code - 128).name}"
        if not isinstance(exc, Interrupted) and (run_dir / "checkpoints" / "last.pt").is_file():
            message += f"; resume with: {resume_command(run_dir)}"
        write_failure(run_dir, "interrupted", message)
        if from_env().main:
            log.warning("dlrun: %s", message)
        sys.exit(code)
    except Exception as exc:  # a bug: recorded for the sweep's table, then raised
        write_failure(run_dir, "failed", f"{type(exc).__name__}: {exc}")
        raise


def _job_config(cfg: DictConfig, overrides: list[str]) -> dict:
    """A resumed run's config: its own saved one, with this command's continuation keys."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from dlrun.plan.config import to_dict
    from dlrun.plan.resume import resumed_config, saved_checkpoint

    run_dir = Path(str(cfg.resume)).expanduser()
    keys = [o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))]
    return resumed_config(saved_checkpoint(run_dir)["config"], run_dir, to_dict(cfg), keys)


@contextlib.contextmanager
def _torchrun_rank():
    """Under torchrun: the overrides that keep ranks other than 0 out of outputs/."""
    from dlrun.engine.distributed import from_env, hydra_overrides

    if any(arg in ("-m", "--multirun") for arg in sys.argv[1:]):
        raise UserError(
            "sweeps (-m) do not run under torchrun; start one torchrun per configuration"
        )
    dist = from_env()
    if dist.main:
        yield []
        return
    scratch = tempfile.mkdtemp(prefix=f"dlrun-rank{dist.rank}-")
    try:
        yield hydra_overrides(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    """The ``dlrun`` console script."""
    try:
        _main()
    finally:
        # Nothing needs collecting now: freezing every live object spares interpreter
        # shutdown its full collection over torch's and Hydra's modules (0.5 s a command).
        gc.freeze()


def _main() -> None:
    if sys.argv[1:] == ["--version"]:  # Hydra's own flag would print Hydra's version
        print(f"dlrun {__version__} (Hydra {hydra.__version__})")
        return
    from dlrun.engine.distributed import from_env
    from dlrun.plan.command import preflight

    # SIGTERM ends a run like Ctrl-C does: one line, its exit status, no traceback
    # (the training loop turns both into a checkpoint and a clean stop).
    signal.signal(signal.SIGTERM, _terminate)
    try:
        try:
            sys.argv[1:] = preflight(sys.argv[1:], conf_dir())
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                with _torchrun_rank() as overrides:
                    sys.argv[1:] += overrides
                    _hydra_main()
                return
        except UserError as exc:
            if from_env().main:  # under torchrun, one rank says it
                print(f"dlrun: error: {exc}", file=sys.stderr)
            sys.exit(2)
        _hydra_main()
    except KeyboardInterrupt as exc:  # before or after a run: nothing to save
        code = getattr(exc, "exit_code", 130)
        print(f"dlrun: stopped by {signal.Signals(code - 128).name}", file=sys.stderr)
        sys.exit(code)


def _hydra_main() -> None:
    """Hydra's main on dlrun's config tree; a sweep with failed jobs exits 1 (its summary
    callback, dlrun.report.runs.SweepSummary, says so)."""
    hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(_job)()


def _terminate(signum, frame) -> None:
    raise Terminated()


if __name__ == "__main__":
    main()
