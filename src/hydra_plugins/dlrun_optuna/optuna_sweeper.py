"""``hydra/sweeper=optuna``: asks an Optuna study for trials and launches each as a dlrun job.

Search keys come from ``hydra.sweeper.params`` (a preset's) and the command
line's sweep overrides, in Hydra's syntax and parsed by Hydra's parser. The
study is stored in the sweep directory (``optuna.journal``) or in the database
``hydra.sweeper.storage`` names (PostgreSQL, SQLite), under
``hydra.sweeper.study_name``; each trial's job gets a ``tune`` section naming it
there, reports its monitored metric at every evaluation and stops when pruned.
The trial's outcome is read back from the job's ``summary.json``.

With a launcher that runs jobs in parallel, ``n_jobs`` trials run at all times:
each is launched on its own thread, and a new one starts as soon as one ends.
Each worker beats its running trials (``dlrun.search.study.HEARTBEAT_S``), and
any worker retries the trials of one that stopped beating, so several sweepers
(on one box, or on several sharing a database) can work on one study.
"""

# No "from __future__ import annotations": Hydra's plugin scan runs this module before it
# is in sys.modules, where a dataclass with string annotations cannot be processed.
import logging
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from dlrun.rundir.layout import RunDir, SweepDir
from dlrun.rundir.write import write_text_atomic

log = logging.getLogger("dlrun")


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.dlrun_optuna.optuna_sweeper.OptunaSweeper"
    sampler: str = "tpe"  # tpe, random, cmaes, grid
    seed: int | None = None
    n_trials: int = 20  # trials the study should have finished, counted across restarts
    n_jobs: int = 1  # trials running at once (in parallel with a parallel launcher)
    storage: str | None = None  # a database URL (postgresql://…); null: the sweep dir's journal
    study_name: str = "dlrun"  # the study in that storage; several sweepers may share it
    pruner: str = "median"  # median, hyperband, none
    n_startup_trials: int = 5  # median: trials that run to the end before any is pruned
    n_warmup_steps: int = 0  # steps a trial runs before it can be pruned (hyperband: its minimum)
    params: dict[str, str] = field(default_factory=dict)  # key: sweep text, as on the command line


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="dlrun"
)


class _ReadableLaunch(logging.Filter):
    """A launcher's line of a trial's overrides without the ``+tune.*`` keys that only tie
    the job to its study, and with its numbers rounded (the job gets them in full)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "+tune." in text:
            from dlrun.report.runs import short_numbers

            kept = " ".join(w for w in text.split(" ") if not w.startswith("+tune."))
            record.msg, record.args = short_numbers(kept), ()
        return True


LAUNCHER_LOGGERS = (
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
)


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: str,
        seed: int | None,
        n_trials: int,
        n_jobs: int,
        pruner: str,
        n_startup_trials: int,
        n_warmup_steps: int,
        params: DictConfig | dict | None,
        storage: str | None = None,
        study_name: str = "dlrun",
    ) -> None:
        self.sampler_name, self.seed = sampler, seed
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.storage_url, self.study_name = storage, study_name
        self.pruner_name = pruner
        self.pruner_options = {
            "n_startup_trials": n_startup_trials,
            "n_warmup_steps": n_warmup_steps,
        }
        self.params = _plain(params) or {}
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        for name in LAUNCHER_LOGGERS:
            launcher_log = logging.getLogger(name)
            if not any(isinstance(f, _ReadableLaunch) for f in launcher_log.filters):
                launcher_log.addFilter(_ReadableLaunch())
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from dlrun.errors import UserError

        try:
            return self._sweep(arguments)
        except UserError as exc:  # a mistake in the search: one line, before any trial
            print(f"dlrun: error: {exc}", file=sys.stderr)
            sys.exit(2)

    def _sweep(self, arguments: list[str]) -> Any:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from dlrun.search import study as tune

        tune.require_optuna()
        assert self.config is not None and self.hydra_context is not None, "setup() comes first"
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        preset = [f"{k}={v}" for k, v in self.params.items()]
        fixed, space = tune.split_overrides(parser.parse_overrides([*preset, *arguments]))
        tune.check_settings(space, self.config.hydra.sweeper)
        n_trials = self.n_trials
        if self.sampler_name == "grid":
            n_trials = min(n_trials, tune.grid_size(space))
        monitor = OmegaConf.select(self.config, "task.monitor")
        study, location = self._open_study(space, fixed, monitor)
        distributions = {k: p.distribution() for k, p in space.items()}
        if self.sampler_name == "grid":
            tune.enqueue_grid(study, space, self.seed)
        tune_overrides = [
            tune.override_text("+tune.storage", str(location)),
            tune.override_text("+tune.study", self.study_name),
            f"+tune.pruner={self.pruner_name}",
            f"+tune.pruner_options={_dict_text(self.pruner_options)}",
        ]

        from dlrun.report.runs import short_numbers

        def overrides(trial) -> list[str]:
            params = [tune.override_text(k, trial.params[k]) for k in space]
            job = [*fixed, *params, *tune_overrides, f"+tune.trial={trial.number}"]
            self.validate_batch_is_legal([job])
            shown = short_numbers(" ".join(params))  # the job gets the full values
            log.info("trial %d of %d: %s", trial.number + 1, n_trials, shown)
            return job

        returns = self._run_trials(study, distributions, overrides, n_trials, monitor)
        if self.storage_url:  # a journal's results are written by the sweep's summary
            from dlrun.search.results import study_outputs

            study_outputs(study, SweepDir(self.config.hydra.sweep.dir).path, plots=True)
        return returns

    def _run_trials(self, study, distributions, overrides, n_trials: int, monitor) -> list:
        """Keep up to ``n_jobs`` trials running until the study has ``n_trials`` finished
        ones (counted over every worker); retry the trials of workers that died."""
        from optuna.trial import TrialState

        from dlrun.search import study as tune

        assert self.launcher is not None, "setup() comes first"
        # Hydra's basic launcher runs a job in this process, one at a time, and must run it
        # on the main thread (the job's Ctrl-C and SIGTERM handlers live there): inline.
        parallel = self.n_jobs if type(self.launcher).__name__ != "BasicLauncher" else 1
        pool = ThreadPoolExecutor(parallel) if parallel > 1 else None
        running: dict[Future, Any] = {}
        beating = _Heartbeat(running)
        returns = []
        try:
            while True:
                self._requeue(study, tune.stale_trials(study, time.time()), TrialState)
                done = _finished(study, TrialState)
                while len(running) < parallel and done + len(running) < n_trials:
                    trial = study.ask(distributions)
                    trial.set_user_attr("heartbeat", time.time())
                    # Job numbers are trial numbers: directories stay unique across
                    # restarts and workers.
                    job = [overrides(trial)]
                    if pool is None:
                        future: Future = Future()
                        running[future] = trial
                        future.set_result(self.launcher.launch(job, trial.number))
                    else:
                        running[pool.submit(self.launcher.launch, job, trial.number)] = trial
                if not running:
                    break
                for future in wait(list(running), return_when=FIRST_COMPLETED)[0]:
                    trial = running.pop(future)
                    result = future.result()[0]
                    self._tell(study, trial, result, monitor, TrialState)
                    returns.append([result])
        except BaseException:  # Ctrl-C, a launcher's error: this worker's trials run again
            self._requeue(study, list(running.values()), TrialState)
            raise
        finally:
            beating.stop()
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        return returns

    def _open_study(self, space: dict, fixed: list[str], monitor: str | None):
        """The search's study (created, or continued; others may be working on it): in the
        database ``hydra.sweeper.storage`` names, else in the sweep directory's journal."""
        from dlrun.search import study as tune

        optuna = tune.require_optuna()
        assert self.config is not None
        mode = OmegaConf.select(self.config, "task.mode") or "max"
        sweep = SweepDir(self.config.hydra.sweep.dir)
        sweep.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(sweep.multirun_yaml, OmegaConf.to_yaml(self.config))
        location = self.storage_url or sweep.journal.resolve()
        study = optuna.create_study(
            study_name=self.study_name,
            storage=tune.storage(location),
            sampler=tune.make_sampler(self.sampler_name, self.seed, space),
            pruner=tune.make_pruner(self.pruner_name, self.pruner_options),
            direction="maximize" if mode == "max" else "minimize",
            load_if_exists=True,
        )
        study.set_user_attr("monitor", monitor)
        study.set_user_attr("fixed", fixed)
        return study, location

    @staticmethod
    def _requeue(study, trials, TrialState) -> None:
        """Trials whose worker stopped (interrupted, or dead: no heartbeat): failed, marked
        interrupted (not counted as finished), and their parameters queued again."""
        for t in trials:
            study.set_user_attr(f"interrupted_{t.number}", True)
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            study.enqueue_trial(t.params, skip_if_exists=False)
            log.info("trial %d was interrupted; its parameters run again", t.number)

    @staticmethod
    def _tell(study, trial, result, monitor: str | None, TrialState) -> None:
        import math

        from hydra.core.utils import JobStatus

        from dlrun.errors import UserError

        run = RunDir(result.hydra_cfg.hydra.runtime.output_dir)
        trial.set_user_attr("run_dir", str(run.path))
        try:
            summary = run.read_summary()
        except UserError:  # none (the job did not start), or damaged: the trial failed
            summary = {}
        status = summary.get("status") if result.status == JobStatus.COMPLETED else "failed"
        value = summary.get("best", {}).get(monitor)
        if status == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        elif status == "ok" and isinstance(value, (int, float)) and math.isfinite(value):
            study.tell(trial, float(value))
        else:
            if result.status == JobStatus.FAILED:  # the job recorded why in its summary
                log.error("trial %d failed: %s", trial.number, summary.get("error", "?"))
            study.tell(trial, state=TrialState.FAIL)


class _Heartbeat:
    """A thread that beats every trial in ``running`` (its values) every HEARTBEAT_S."""

    def __init__(self, running: dict) -> None:
        from dlrun.search.study import HEARTBEAT_S

        self.running, self.interval = running, HEARTBEAT_S
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="dlrun-heartbeat", daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        while not self.stopped.wait(self.interval):
            for trial in list(self.running.values()):
                try:
                    trial.set_user_attr("heartbeat", time.time())
                except Exception as exc:  # finished meanwhile, or the storage hiccuped
                    log.debug("heartbeat of trial %d: %s", trial.number, exc)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


def _finished(study, TrialState) -> int:
    """Trials that ran to an end (complete, pruned, failed), not those interrupted."""
    attrs = study.user_attrs
    return sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        and not attrs.get(f"interrupted_{t.number}")
        for t in study.get_trials(deepcopy=False)
    )


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node) if OmegaConf.is_config(node) else node


def _dict_text(options: dict) -> str:
    return "{" + ",".join(f"{k}:{v}" for k, v in options.items()) + "}"
