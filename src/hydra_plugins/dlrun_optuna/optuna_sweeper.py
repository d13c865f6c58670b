"""``hydra/sweeper=optuna``: asks an Optuna study for trials and launches each as a dlrun job.

Search keys come from ``hydra.sweeper.params`` (a preset's) and the command
line's sweep overrides, in Hydra's syntax and parsed by Hydra's parser. The
study is stored in the sweep directory (``optuna.journal``); each trial's job
gets a ``tune`` section naming it there, reports its monitored metric at every
evaluation and stops when pruned. The trial's outcome is read back from the
job's ``summary.json``.
"""

# No "from __future__ import annotations": Hydra's plugin scan runs this module before it
# is in sys.modules, where a dataclass with string annotations cannot be processed.
import logging
import sys
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
    n_jobs: int = 1  # trials launched at once (in parallel with a parallel launcher)
    pruner: str = "median"  # median, hyperband, none
    n_startup_trials: int = 5  # median: trials that run to the end before any is pruned
    n_warmup_steps: int = 0  # steps a trial runs before it can be pruned (hyperband: its minimum)
    params: dict[str, str] = field(default_factory=dict)  # key: sweep text, as on the command line


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="dlrun"
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
    ) -> None:
        self.sampler_name, self.seed = sampler, seed
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.pruner_name = pruner
        self.pruner_options = {
            "n_startup_trials": n_startup_trials,
            "n_warmup_steps": n_warmup_steps,
        }
        self.params = _plain(params) or {}
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

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
        from optuna.trial import TrialState

        assert self.config is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        preset = [f"{k}={v}" for k, v in self.params.items()]
        fixed, space = tune.split_overrides(parser.parse_overrides([*preset, *arguments]))
        tune.check_settings(space, self.config.hydra.sweeper)
        n_trials = self.n_trials
        if self.sampler_name == "grid":
            n_trials = min(n_trials, tune.grid_size(space))
        monitor = OmegaConf.select(self.config, "task.monitor")
        study, journal = self._open_study(space, fixed, monitor)
        distributions = {k: p.distribution() for k, p in space.items()}
        self._requeue_interrupted(study, TrialState)
        if self.sampler_name == "grid":
            tune.enqueue_grid(study, space, self.seed)
        tune_overrides = [
            tune.override_text("+tune.storage", str(journal)),
            f"+tune.study={tune.STUDY}",
            f"+tune.pruner={self.pruner_name}",
            f"+tune.pruner_options={_dict_text(self.pruner_options)}",
        ]
        returns = []
        while (done := _finished(study, TrialState)) < n_trials:
            trials = [study.ask(distributions) for _ in range(min(self.n_jobs, n_trials - done))]
            batch = [
                [
                    *fixed,
                    *(tune.override_text(k, t.params[k]) for k in space),
                    *tune_overrides,
                    f"+tune.trial={t.number}",
                ]
                for t in trials
            ]
            self.validate_batch_is_legal(batch)
            log.info(
                "trials %s of %d: %s",
                ", ".join(str(t.number) for t in trials),
                n_trials,
                "; ".join(" ".join(b[len(fixed) : len(fixed) + len(space)]) for b in batch),
            )
            results = self._launch(batch, [t.number for t in trials])
            for trial, result in zip(trials, results):
                self._tell(study, trial, result, monitor, TrialState)
            returns.append(results)
        return returns

    def _open_study(self, space: dict, fixed: list[str], monitor: str | None):
        """The search's study in its sweep directory's journal (created, or continued)."""
        from dlrun.search import study as tune

        optuna = tune.require_optuna()
        assert self.config is not None
        mode = OmegaConf.select(self.config, "task.mode") or "max"
        sweep = SweepDir(self.config.hydra.sweep.dir)
        sweep.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(sweep.multirun_yaml, OmegaConf.to_yaml(self.config))
        journal = sweep.journal.resolve()
        study = optuna.create_study(
            study_name=tune.STUDY,
            storage=tune.storage(journal),
            sampler=tune.make_sampler(self.sampler_name, self.seed, space),
            pruner=tune.make_pruner(self.pruner_name, self.pruner_options),
            direction="maximize" if mode == "max" else "minimize",
            load_if_exists=True,
        )
        study.set_user_attr("monitor", monitor)
        study.set_user_attr("fixed", fixed)
        return study, journal

    def _launch(self, batch: list[list[str]], numbers: list[int]) -> list:
        """Run the batch's jobs; job numbers are trial numbers, so job directories stay
        unique across restarts (consecutive numbers launch as one batch)."""
        if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
            return list(self.launcher.launch(batch, initial_job_idx=numbers[0]))
        return [r for b, n in zip(batch, numbers) for r in self.launcher.launch([b], n)]

    @staticmethod
    def _requeue_interrupted(study, TrialState) -> None:
        """Trials left running by an interrupted search: failed, and their parameters redone."""
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
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
