"""dlrun: the training entrypoint. Plan the command once, then let Hydra run its jobs.

``main`` (the ``dlrun`` console script) turns the command line into a ``Plan``
before Hydra starts, so a mistake ends with one line and no output directory;
Hydra's task function (``Job``) then calls ``dlrun.engine.run.run`` with the
plan's config, in the run directory Hydra made.
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
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dlrun import __version__
from dlrun.errors import Interrupted, Terminated, UserError, os_problem
from dlrun.plan.command import Plan, plan_command
from dlrun.plan.compose import register_plugins, run_hydra
from dlrun.plan.config import conf_dir
from dlrun.plan.resume import resume_command
from dlrun.rundir import lock
from dlrun.rundir.layout import RunDir, run_dirs_under
from dlrun.rundir.write import remove_abandoned

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
    (Hydra may start without composing through the plan, e.g. ``--info``) and the
    run-dir resolvers. ``use_cache``: Hydra copies resolver
    caches into each sweep job's config, so a job resolved in another process (a
    launcher plugin) gets the same directory.
    """
    from dlrun.report.runs import short_numbers

    register_plugins()
    OmegaConf.register_new_resolver("dlrun_unique", _unique_dir, replace=True, use_cache=True)
    # A sweep job's directory name: a search's 0.34430192534364906 as 0.3443.
    OmegaConf.register_new_resolver("dlrun_short", short_numbers, replace=True)


_register()


@dataclass(frozen=True)
class Job:
    """Hydra's task function: one job of the command's ``plan``, in the run directory
    Hydra made. A single run uses the plan's validated config (and resume checkpoint) as
    they are; a sweep's job validates the config Hydra's sweeper composed for it, once."""

    plan: Plan

    def __call__(self, cfg: DictConfig) -> dict[str, float] | None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from dlrun.engine.distributed import from_env
        from dlrun.engine.run import run

        hc = HydraConfig.get()
        rundir = RunDir(hc.runtime.output_dir)
        planned = self.plan.config if hc.mode == RunMode.RUN else None
        single = planned is not None
        config = planned if planned is not None else cfg
        resume = self.plan.resume.take() if self.plan.resume else None
        init = self.plan.init if single else None  # a sweep's jobs read theirs
        try:
            try:
                if from_env().main:  # one writer: refused if another process writes there
                    lock.hold(rundir.path, "run directory", "wait for it to end")
                    for tmp in remove_abandoned(rundir.path):
                        log.info("removed %s, left by a process killed while writing it", tmp)
                return run(config, rundir.path, resume, init)
            except OSError as exc:  # a full disk, a read-only folder...: the user's to fix
                problem = os_problem(exc)
                if problem is None:
                    raise
                raise UserError(problem) from None
        except UserError as exc:
            if single and self._discard(rundir):
                log.error("dlrun: error: %s", exc)
                sys.exit(2)
            rundir.write_failure("failed", str(exc))
            if from_env().main:  # under torchrun, one rank says it
                log.error("dlrun: error: %s (run directory: %s)", exc, rundir)
            else:
                _after_rank_0(exc)
            if hc.mode == RunMode.MULTIRUN:
                return None  # one failed job does not stop the sweep
            sys.exit(2)
        except (Interrupted, KeyboardInterrupt) as exc:
            # Ctrl-C or SIGTERM: in training the loop checkpointed (Interrupted);
            # anywhere else (data, evaluation, the test, plots) the run just stops here.
            code = getattr(exc, "exit_code", 130)
            message = str(exc) or f"stopped by {signal.Signals(code - 128).name}"
            if not isinstance(exc, Interrupted) and rundir.has_checkpoint():
                message += f"; resume with: {resume_command(rundir.path)}"
            rundir.write_failure("interrupted", message)
            if from_env().main:
                log.warning("dlrun: %s", message)
            sys.exit(code)
        except Exception as exc:  # a bug: recorded for the sweep's table, then raised
            rundir.write_failure("failed", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            lock.release(rundir.path)  # a sweep's jobs in this process: one at a time

    def _discard(self, run: RunDir) -> bool:
        """Remove ``run`` if this command made it and the run stopped before its first
        step (a mistake in the data, found while reading it): a user's typo leaves no
        run directory behind to show in reports as a failed run. Whether it did."""
        from dlrun.engine.distributed import from_env

        made_here = {Path(p).resolve() for p in _claimed.values()}  # dlrun_unique's folders
        made = self.plan.new_dir or run.path.resolve() in made_here
        if self.plan.resume or not made or not from_env().main:
            return False
        if run.metrics.exists() or run.has_checkpoint():
            return False
        lock.release(run.path)
        shutil.rmtree(run.path, ignore_errors=True)  # (its log file is open: Linux lets go)
        if run.path.resolve() in made_here:  # dlrun's own outputs/DATE/, if now empty
            with contextlib.suppress(OSError):
                run.path.parent.rmdir()
        return not run.path.exists()


class SweepLock(Callback):
    """Hydra callback: a sweep's folder has one writer. Its start locks the folder
    (before Hydra's sweeper writes ``multirun.yaml``); a second sweep or search into a
    folder that one is writing is refused in one line. A search continued later in the
    same folder (its study is there) is not refused: the lock ends with its writer, and
    its trials get new folders. A plain sweep into a folder that holds runs already is
    refused (Hydra would rewrite their ``.hydra/`` and the jobs their files). The holder
    removes what a sweep killed mid-write left (``rundir.write.remove_abandoned``)."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from dlrun.engine.distributed import from_env
        from dlrun.search.study import is_search

        if not from_env().main:
            return
        sweep = Path(str(config.hydra.sweep.dir))
        try:
            lock.hold(
                sweep,
                "sweep folder",
                "wait for that sweep to end, or choose another hydra.sweep.dir",
            )
            held = run_dirs_under(sweep) if sweep.is_dir() else set()
            if held and not is_search(config.hydra.sweeper):
                raise UserError(
                    f"hydra.sweep.dir={sweep} already holds a sweep's runs ({len(held)}), whose "
                    "files are never rewritten; choose another hydra.sweep.dir (its table: "
                    f"dlrun-report {sweep})"
                )
        except UserError as exc:  # a callback's exception would be Hydra's traceback
            print(f"dlrun: error: {exc}", file=sys.stderr)
            sys.exit(2)
        for tmp in remove_abandoned(sweep) if sweep.is_dir() else []:
            log.info("removed %s, left by a process killed while writing it", tmp)


@contextlib.contextmanager
def _torchrun_rank(argv: list[str]):
    """Under torchrun: the overrides that keep ranks other than 0 out of outputs/ (none
    for one process)."""
    from dlrun.engine.distributed import from_env, hydra_overrides

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield []
        return
    if any(arg in ("-m", "--multirun") for arg in argv):
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


def help_text() -> str:
    """``dlrun --help``: the commands, each task with the models that fit it and what it
    needs, the config groups, and where the full config and Hydra's own help are. Read
    from the registries and the YAML of dlrun and installed plugins, never written twice."""
    import textwrap

    import yaml

    from dlrun.registry import list_models, list_tasks, model_entry, plugin_conf_dirs, task_entry

    roots = [conf_dir(), *plugin_conf_dirs()]

    def options(group: str) -> list[str]:
        return sorted({p.stem for r in roots for p in (r / group).glob("*.yaml")})

    def yaml_of(group: str, name: str) -> tuple[str, dict]:
        for root in roots:
            path = root / group / f"{name}.yaml"
            if path.is_file():
                text = path.read_text(encoding="utf-8")
                return text, yaml.safe_load(text) or {}
        return "", {}

    kinds = {m: model_entry(m).kind for m in list_models()}
    rows = []
    for task in list_tasks():
        kind = task_entry(task).obj.model_kind
        text, _ = yaml_of("task", task)
        default = next(
            (line.split(":", 1)[1].strip() for line in text.splitlines() if "/model:" in line),
            None,
        )
        fits = [
            o for o in options("model") if kinds.get(yaml_of("model", o)[1].get("name", "")) == kind
        ]
        fits.sort(key=lambda o: o != default)
        needs = []
        dataset_text, dataset = yaml_of("dataset", task)
        for line in dataset_text.splitlines():
            key = line.partition(":")[0].strip()
            if "# required" in line:
                needs.append(f"dataset.{key} (required)")
            elif key == "path" and isinstance(dataset.get("path"), str):
                default_path = dataset["path"].replace("${paths.data_dir}", "data")
                needs.append(f"dataset.path (default {default_path})")
        rows.append((task, ", ".join(fits), "; ".join(needs) or "generated data"))
    width = max(len(t) for t, _, _ in rows) + 2
    lines = [
        f"dlrun {__version__}: train a model on a task; one run, or a sweep or search with -m.",
        "",
        "usage: dlrun [-m] [GROUP=OPTION | KEY=VALUE ...]",
        "  dlrun task=imdb dataset.path=~/aclImdb optimizer.lr=1e-3    one run",
        "  dlrun -m optimizer.lr=1e-3,3e-4 dataset.batch_size=32,128   a 2x2 sweep",
        "  dlrun -m hydra/sweeper=optuna 'optimizer.lr=tag(log, interval(1e-4, 1))'   a search",
        "  dlrun resume=RUN_DIR                                         continue a run",
        "",
        "tasks (task=NAME): the models that fit each (model=NAME; the default first), and",
        "the keys to give:",
    ]

    def wrapped(head: str, text: str, indent: int) -> list[str]:
        return textwrap.wrap(
            head + text, 96, subsequent_indent=" " * indent, break_on_hyphens=False
        )

    for task, models, data in rows:
        lines += wrapped(f"  {task:<{width}}models: ", models, width + 10)
        lines += wrapped(f"  {'':<{width}}data:   ", data, width + 10)
    lines += ["", "groups (GROUP=OPTION):"]
    for group in sorted(p.name for p in conf_dir().iterdir() if p.is_dir()):
        if group not in ("task", "dataset", "model", "hydra"):
            lines += wrapped(f"  {group + ':':<13}", ", ".join(options(group)), 15)
    lines += [
        "",
        "other commands:",
        "  dlrun-predict RUN_DIR [INPUT ... | FILE]   answer new inputs with a trained run",
        "  dlrun-report DIR ...                       tables and plots over runs, sweeps, searches",
        "  dlrun-stats task=NAME [KEY=VALUE ...]      a data set's statistics, before training",
        "",
        "more:",
        "  dlrun task=NAME --cfg job       the full config of a command (every key and value)",
        "  dlrun --hydra-help              Hydra's own help (its flags, --multirun, -cd...)",
        "  dlrun --version; README.md (every key explained) and docs/architecture.md",
    ]
    return "\n".join(lines) + "\n"


def _main() -> None:
    argv = sys.argv[1:]
    if argv == ["--version"]:  # Hydra's own flag would print Hydra's version
        print(f"dlrun {__version__} (Hydra {hydra.__version__})")
        return
    if argv in (["--help"], ["-h"]):  # dlrun's own; with overrides, Hydra's (the config)
        print(help_text(), end="")
        return
    # SIGTERM ends a run like Ctrl-C does: one line, its exit status, no traceback
    # (the training loop turns both into a checkpoint and a clean stop).
    signal.signal(signal.SIGTERM, _terminate)
    try:
        # Importing torch takes a second, and a Ctrl-C inside its C++ start-up was lost or
        # aborted the process: held until the import is done, it stops here cleanly.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            from dlrun.engine.distributed import adopt_slurm, from_env
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        adopt_slurm()  # srun -n N: every rank reads its rank as under torchrun
        try:
            plan = plan_command(argv, conf_dir())
            with _torchrun_rank(argv) as rank_overrides:
                # Hydra composes the config a second time: it alone makes the run
                # directory, its .hydra/ record and logging, and runs sweeps. Its
                # composition of a single run is not validated again (Job).
                run_hydra([*plan.argv, *rank_overrides], Job(plan))
        except UserError as exc:
            if from_env().main:  # under torchrun, one rank says it
                print(f"dlrun: error: {exc}", file=sys.stderr)
            else:
                _after_rank_0(exc)
            sys.exit(2)
    except KeyboardInterrupt as exc:  # before or after a run: nothing to save
        code = getattr(exc, "exit_code", 130)
        print(f"dlrun: stopped by {signal.Signals(code - 128).name}", file=sys.stderr)
        sys.exit(code)


def _terminate(signum, frame) -> None:
    raise Terminated()


def _after_rank_0(error: UserError) -> None:
    """Under torchrun, a rank other than 0 stopped by a user error, which rank 0 meets too
    and prints: had this rank exited first, torchrun would have stopped rank 0 (SIGTERM)
    before it printed. It waits for torchrun to stop it once rank 0 has exited, and then
    exits silently (code 2); one still running after 10 s met the error alone: it says it."""
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(2))
    time.sleep(10)
    print(f"dlrun: error (rank {os.environ.get('RANK', '?')}): {error}", file=sys.stderr)


if __name__ == "__main__":
    main()
