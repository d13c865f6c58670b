"""dlrun: the training entrypoint. Validate, build, fit, test, summarize.

``main`` (the ``dlrun`` console script) checks the command line before Hydra
starts, so a mistake ends with one line and no output directory; the Hydra
task function then calls ``run(cfg, run_dir)``, which tests call directly.
"""

from __future__ import annotations

import contextlib
import gc
import json
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
from dlrun.config import validate
from dlrun.errors import Interrupted, Terminated, UserError
from dlrun.resume import resume_command

log = logging.getLogger("dlrun")


def find_conf_dir() -> Path:
    """conf/ ships inside the wheel as dlrun/conf; in a source checkout it is top-level."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise RuntimeError(f"dlrun's config tree is missing (looked in {here}/conf and ../../conf)")


CONF_DIR = find_conf_dir()
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


def _register_sweeper() -> None:
    """``hydra/sweeper=optuna``: Hydra finds plugins by listing the ``hydra_plugins``
    package, which an editable install (``pip install -e .``) hides from it."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.dlrun_optuna.optuna_sweeper import OptunaSweeper

    Plugins.instance().register(OptunaSweeper)


_register_sweeper()

# use_cache: Hydra copies resolver caches into each sweep job's config, so a job
# resolved in another process (a launcher plugin) gets the same directory.
OmegaConf.register_new_resolver("dlrun_unique", _unique_dir, replace=True, use_cache=True)


def run(cfg: DictConfig | dict, run_dir: Path) -> dict[str, float]:
    """Train and test one configuration; write everything into ``run_dir``.

    Returns the headline metrics, e.g. ``{"val/exact_match": ..., "test/exact_match": ...}``.
    """
    import torch

    from dlrun.engine import checkpoint, debug, distributed
    from dlrun.engine.device import amp_for_model, peak_memory_mb, resolve_device
    from dlrun.engine.plots import plot_curves
    from dlrun.engine.trainer import Trainer
    from dlrun.engine.writers import JsonlWriter, TensorBoardWriter, Writers, flat_hparams
    from dlrun.registry import task_entry

    wall_start = time.monotonic()
    data = validate(cfg)
    dist = distributed.from_env()
    dev = resolve_device(data["device"], dist.local_rank if dist.enabled else None)
    distributed.init(dist, dev.device)
    run_dir = Path(dist.broadcast(str(run_dir)))  # torchrun: every rank uses rank 0's
    if dist.main:  # the others write nothing there
        run_dir.mkdir(parents=True, exist_ok=True)
    seed = data["trainer"]["seed"]
    checkpoint.seed_everything(seed)
    resume = _resume_checkpoint(data["resume"])

    task = task_entry(data["task"]["name"]).obj(data)
    t0 = time.monotonic()
    with dist.main_first():  # rank 0 fills the data cache, the others read it
        task.prepare(Path(data["paths"]["cache_dir"]).expanduser())
    data_time = time.monotonic() - t0
    sizes = ", ".join(f"{name} {task.size(name)}" for name in task.splits)
    log.info("data: %s (%.1fs)", sizes, data_time)
    task.add_train_subset(data["trainer"]["train_eval_size"])
    if dist.main:
        (run_dir / "stats.json").write_text(json.dumps(task.stats(), indent=2) + "\n")
        task.save(run_dir)
    debug.limit_splits(task, data)
    task.to(dev.device)
    model = task.build_model().to(dev.device)
    dev = amp_for_model(dev, model, data["device"]["amp"])
    params = sum(p.numel() for p in model.parameters())
    log.info(
        "task %s, model %s (%s parameters) on %s%s",
        data["task"]["name"],
        data["model"]["name"],
        f"{params:,}",
        dev.describe(),
        f", {dist.world} processes (torchrun)" if dist.enabled else "",
    )

    trainer = Trainer(task, model, data, dev, run_dir, dist)
    from dlrun.tune import pruning_hook

    trainer.on_eval = pruning_hook(data)  # None unless this is a search's trial
    if resume:
        trainer.restore(resume)
        if trainer.state.halt == "pruned":  # a search's pruned trial continues as a plain run
            trainer.state.halt = None
        log.info("resumed from %s at step %d", resume, trainer.state.step)
    if dist.enabled:  # DDP made the weights equal; dropout and augmentation differ per rank
        torch.manual_seed(seed + 1_000_003 * dist.rank + trainer.state.step)
    writers = []
    if dist.main:
        keep = trainer.state.step if resume else None
        writers.append(JsonlWriter(run_dir / "metrics.jsonl", keep_until_step=keep))
        if data["logger"]["name"] == "tensorboard":
            writers.append(TensorBoardWriter(run_dir / "tensorboard"))
    writer = Writers(writers)
    dbg = data["debug"]
    try:
        try:
            with (
                torch.autograd.set_detect_anomaly(dbg["anomaly"]),
                debug.profiled(dbg["profile_steps"], run_dir, dev.device) as trainer.profiler,
            ):
                state = trainer.fit(writer)
        except UserError:
            if not resume and trainer.state.step == 0:  # nothing trained: nothing to keep
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            raise
        trainer.profiler = None
        if dbg["train_batches"] and dist.main:
            debug.overfit_verdict(trainer.train_losses, dbg["overfit_loss"])
        if not dist.main:  # rank 0 tests and writes the rest
            distributed.shutdown(dist)
            return {}
        # A search's trial that its pruner stopped is not tested.
        pruned = state.stop_reason == "pruned"
        tests = {}
        if not pruned:
            # Test the best checkpoint, not whatever the last step left.
            best = run_dir / "checkpoints" / "best.pt"
            if best.exists():
                model.load_state_dict(checkpoint.load(best, dev.device)["model"])
            tests = {s: trainer.evaluate(s, distributed.SINGLE) for s in task.test_splits}
        for split, metrics in tests.items():
            writer.log(
                {"epoch": state.epoch, "split": split, "checkpoint": "best", **metrics}, state.step
            )
        test = {f"{split}/{k}": v for split, m in tests.items() for k, v in m.items()}
        if not pruned:
            settings = {k: v for k, v in flat_hparams(data).items() if not k.startswith("paths.")}
            writer.hparams(settings, test)
    finally:
        writer.close()

    if not pruned:
        model.eval()
        amp = dict(dtype=dev.amp_dtype, enabled=dev.amp_dtype is not None)
        with torch.inference_mode(), torch.autocast(dev.device.type, **amp):  # as the test
            rows = task.samples(model, "test", data["trainer"]["num_samples"])
            task.report(model, run_dir)
        _write_samples(run_dir / "samples.txt", rows)
    plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")

    best = {f"{trainer.monitor_split}/{k}": v for k, v in (state.best_metrics or {}).items()}
    summary = {
        "status": "pruned" if pruned else "ok",
        "task": data["task"]["name"],
        "model": data["model"]["name"],
        "monitor": data["task"]["monitor"],
        "mode": data["task"]["mode"],
        "best": {"step": state.best_step, **best},
        "test": test,
        "steps": state.step,
        "epochs": state.step * data["trainer"]["accumulate"] / trainer.batches_per_epoch,
        "samples": state.samples,
        "stop_reason": state.stop_reason,
        "train_time_s": round(state.train_time, 2),
        "data_time_s": round(data_time, 2),
        "wall_time_s": round(time.monotonic() - wall_start, 2),
        # From the first training step's start (Unix time) and its length, compilation
        # included: the benchmark harness derives start-up time from them.
        "first_step_at": trainer.first_step_at,
        "first_step_s": _round(trainer.first_step_s, 4),
        "peak_memory_mb": round(peak_memory_mb(dev.device), 1),
        "world_size": dist.world,
        "parameters": params,
        "device": dev.describe(),
        "torch": torch.__version__,
        "dlrun": __version__,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    shown = "  ".join(f"{k}={v:.4f}" for k, v in test.items())
    print(f"run dir: {run_dir}\n{shown or f'pruned at step {state.step}'}", flush=True)
    distributed.shutdown(dist)
    return {**best, **test}


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _resume_checkpoint(resume: str | None) -> Path | None:
    if not resume:
        return None
    path = Path(resume).expanduser() / "checkpoints" / "last.pt"
    if not path.is_file():
        raise UserError(
            f"resume={resume}: no checkpoints/last.pt there; pass a dlrun run "
            "directory (outputs/DATE/TIME) that has trained at least once"
        )
    return path


def _write_samples(path: Path, rows: list[dict]) -> None:
    wrong = sum(not r["correct"] for r in rows)
    lines = [
        f"# {len(rows)} test examples, {wrong} wrong, wrong ones first",
        "ok\tsource\ttarget\tprediction",
    ]
    lines += [
        f"{'✓' if r['correct'] else '✗'}\t{r['source']}\t{r['target']}\t{r['prediction']}"
        for r in rows
    ]
    path.write_text("\n".join(lines) + "\n")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_entry(cfg: DictConfig) -> dict[str, float] | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from dlrun.engine.distributed import from_env

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    resumed = bool(cfg.get("resume"))
    try:
        return run(_job_config(cfg, hc.overrides.task) if resumed else cfg, run_dir)
    except UserError as exc:
        _write_failure(run_dir, "failed", str(exc))
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
        _write_failure(run_dir, "interrupted", message)
        if from_env().main:
            log.warning("dlrun: %s", message)
        sys.exit(code)
    except Exception as exc:  # a bug: recorded for the sweep's table, then raised
        _write_failure(run_dir, "failed", f"{type(exc).__name__}: {exc}")
        raise


def _job_config(cfg: DictConfig, overrides: list[str]) -> dict:
    """A resumed run's config: its own saved one, with this command's continuation keys."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from dlrun.config import to_dict
    from dlrun.resume import resumed_config, saved_checkpoint

    run_dir = Path(str(cfg.resume)).expanduser()
    keys = [o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))]
    return resumed_config(saved_checkpoint(run_dir)["config"], run_dir, to_dict(cfg), keys)


def _write_failure(run_dir: Path, status: str, error: str) -> None:
    """summary.json of a run that did not finish, with the first line of the reason.

    A finished run's summary is never replaced: a failed or interrupted resume
    of it is recorded in the log only.
    """
    from dlrun.engine.writers import write_text_atomic

    summary_file = run_dir / "summary.json"
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if json.loads(summary_file.read_text()).get("status") == "ok":
            return
    if not run_dir.is_dir():
        return
    first = next((line for line in error.splitlines() if line.strip()), error)
    summary = {"status": status, "error": first.strip()}
    write_text_atomic(summary_file, json.dumps(summary, indent=2) + "\n")


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
    from dlrun.preflight import preflight

    # SIGTERM ends a run like Ctrl-C does: one line, its exit status, no traceback
    # (the training loop turns both into a checkpoint and a clean stop).
    signal.signal(signal.SIGTERM, _terminate)
    try:
        try:
            sys.argv[1:] = preflight(sys.argv[1:], CONF_DIR)
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                with _torchrun_rank() as overrides:
                    sys.argv[1:] += overrides
                    hydra_entry()
                return
        except UserError as exc:
            if from_env().main:  # under torchrun, one rank says it
                print(f"dlrun: error: {exc}", file=sys.stderr)
            sys.exit(2)
        hydra_entry()
    except KeyboardInterrupt as exc:  # before or after a run: nothing to save
        code = getattr(exc, "exit_code", 130)
        print(f"dlrun: stopped by {signal.Signals(code - 128).name}", file=sys.stderr)
        sys.exit(code)
    from dlrun.report import last_sweep

    if last_sweep and last_sweep[0].failed:
        report = last_sweep[0]
        print(
            f"dlrun: {report.failed} of {report.total} jobs did not finish; see "
            f"{report.out / 'summary.md'}",
            file=sys.stderr,
        )
        sys.exit(1)


def _terminate(signum, frame) -> None:
    raise Terminated()


if __name__ == "__main__":
    main()
