"""Experiment trackers: ``logger=mlflow``, ``logger=wandb``, or several (``logger=[a,b]``).

Each tracker gets what the run directory gets: the flattened config as
parameters, every metrics record as ``<split>/<metric>`` at its step, tags
(task, model, dlrun's version) and, at the end, the run's provenance
(``provenance.*`` tags in MLflow, config keys in W&B: git commit, versions, data
fingerprint), ``summary.json``, ``curves.png`` and ``samples.txt`` (checkpoints
with ``log_checkpoints``).

The tracker runs' ids are data in the run directory (``trackers.json``), so
``dlrun resume=RUN_DIR`` continues the same runs. A sweep (``-m``, any
sweeper or launcher) keeps its parent run's id, or its W&B group, in the
sweep directory's ``trackers.json``: jobs in other processes find it there;
the first job creates it under a file lock, :class:`SweepTrackers` (a Hydra
callback) closes it when the sweep ends.

This module chooses and drives the trackers; each one lives in its own module
(``trackers_mlflow``, ``trackers_wandb``), imported only by the side process that
hosts a run's trackers (``trackers_process``: :class:`TrackerRuns` there,
:class:`Trackers` the run's handle on them), so that their imports (MLflow's take
about 1.6 s) run on another core while the run prepares its data.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from dlrun.engine.writers import TensorBoardWriter, flat_hparams
from dlrun.errors import Interrupted, UserError, first_line
from dlrun.plan.config import to_dict
from dlrun.rundir.layout import RunDir, SweepDir
from dlrun.rundir.read import read_json
from dlrun.rundir.write import write_json

if TYPE_CHECKING:
    from dlrun.engine.trackers_process import TrackerProcess

log = logging.getLogger("dlrun")

INSTALL = {"mlflow": "pip install 'dlrun[mlflow]'", "wandb": "pip install 'dlrun[wandb]'"}


def chosen(data: dict) -> list[str]:
    """The external trackers the config chooses, in a fixed order."""
    logger = data.get("logger") or {}
    return [name for name in ("mlflow", "wandb") if logger.get(name) is not None]


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """A metrics record as ``{"<split>/<metric>": value}``, as TensorBoard gets it."""
    split = metrics.get("split", "train")
    skip = TensorBoardWriter.SKIP | (TensorBoardWriter.TRAIN_ONLY if split != "train" else set())
    out = {}
    for key, value in metrics.items():
        if key in skip:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{split}/{key}"] = float(value)
    return out


def run_params(data: dict) -> dict[str, str]:
    """The flattened config, every value as text (``optimizer.lr`` -> ``"0.001"``)."""
    return {k: str(v) for k, v in flat_hparams(data).items() if k != "resume"}


class Trackers:
    """The external trackers of one run, written to like any metric writer. They live in
    a side process (:mod:`dlrun.engine.trackers_process`): ``log`` never waits for them.

    ``close()`` (the writers' end) leaves the tracker runs open: the artifacts are
    written after it; ``finish()`` logs them and ends the runs. A process of the trackers
    that dies or hangs during the run costs a warning: the run itself goes on.
    """

    def __init__(self, host: TrackerProcess, record: dict, owned: bool):
        self.host = host
        self.record = record  # the tracker runs, as trackers.json has them
        self.owned = owned  # whether ending the runs also ends the process
        self.ended = False
        self._warned = False

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        """A run that raised ends its tracker runs failed, or killed when interrupted."""
        if exc is not None:
            interrupted = isinstance(exc, (KeyboardInterrupt, Interrupted))
            self.fail("interrupted" if interrupted else "failed")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        values = scalars(metrics)
        if values and not self.ended:
            self.host.send("log", values=values, step=step)
            self._check()

    def close(self) -> None:
        pass

    def finish(self, run: RunDir, summary: dict[str, Any]) -> None:
        """Log the run's files and its provenance (as tags) and end each tracker run
        with the status of its ``summary``."""
        from dlrun.engine.provenance import flat

        tags = flat(summary.get("provenance") or {})
        self._end("finish", run_dir=str(run.path), status=summary["status"], tags=tags)

    def fail(self, status: str) -> None:
        """End each tracker run as failed (``status`` failed) or killed (interrupted)."""
        self._end("fail", status=status)

    def _end(self, op: str, **fields: Any) -> None:
        if self.ended:  # each run ends once
            return
        self.ended = True
        from dlrun.engine.trackers_process import END_TIMEOUT_S

        try:
            if self.host.request(op, ("ended",), END_TIMEOUT_S, **fields) is None:
                self._check()
        finally:
            if self.owned:
                self.host.close()

    def _check(self) -> None:
        """One warning when the trackers' process stopped answering."""
        if self.host.lost and not self._warned:
            self._warned = True
            log.warning(
                "dlrun: %s: the trackers' process %s; the run goes on without them (their "
                "runs may lack its later records and files)",
                ", ".join(self.record) or ", ".join(self.host.names),
                self.host.lost,
            )


class TrackerRuns:
    """The tracker runs of one dlrun run, in the process that hosts them
    (:func:`dlrun.engine.trackers_process.serve`): opened, logged to, ended.

    ``previous``: the runs a resumed run logged to (its ``trackers.json``); ``sweep``: the
    sweep directory of a sweep's job, whose parent runs the first job creates.
    """

    def __init__(self, data: dict, run_dir: str, previous: dict, sweep: str | None):
        names = chosen(data)
        parents = sweep_record(Path(sweep), data, names) if sweep else {}
        self.trackers: list = []
        try:
            for name in names:
                cls = tracker_class(name)
                self.trackers.append(
                    cls(data, Path(run_dir), previous.get(name), parents.get(name))
                )
        except BaseException:
            for t in self.trackers:
                with contextlib.suppress(Exception):
                    t.fail("failed")
            raise
        self.record = {t.name: t.record for t in self.trackers}
        self._failing: set[str] = set()

    def log(self, values: dict[str, float], step: int) -> None:
        for t in self.trackers:
            try:
                t.log(values, step)
            except Exception as exc:  # an outage of the tracker: the run goes on
                if t.name not in self._failing:  # said once
                    self._failing.add(t.name)
                    log.warning(
                        "dlrun: %s: could not log step %d (%s); the run goes on, the "
                        "tracker run may lack some records",
                        t.name,
                        step,
                        first_line(exc, 200),
                    )

    def finish(self, run_dir: str, status: str, tags: dict[str, str]) -> None:
        run = RunDir(Path(run_dir))
        self._end(lambda t: t.finish(run, status, tags))

    def fail(self, status: str) -> None:
        self._end(lambda t: t.fail(status))

    def _end(self, end) -> None:
        ended, self.trackers = self.trackers, []  # each run ends once
        for t in ended:
            try:
                end(t)
            except Exception as exc:  # a tracker's outage must not fail a finished run
                log.warning("dlrun: %s: could not end the run (%s)", t.name, first_line(exc, 200))


def tracker_class(name: str):
    """The class of tracker ``name``, its module imported now."""
    if name == "mlflow":
        from dlrun.engine.trackers_mlflow import MlflowTracker

        return MlflowTracker
    from dlrun.engine.trackers_wandb import WandbTracker

    return WandbTracker


def warm(names: list[str]) -> None:
    """Import what the trackers ``names`` will need (their side process does it first)."""
    for name in names:
        with contextlib.suppress(Exception):  # a missing package is said when it opens
            tracker_class(name).warm()


@contextlib.contextmanager
def tracker_process(cfg, wanted: bool = True) -> Iterator[TrackerProcess | None]:
    """The side process of the trackers ``cfg.logger`` chooses, started now, so that their
    imports overlap what the run does next (None: it chooses none, or not ``wanted``);
    ended with the block, however it ends."""
    names = chosen(to_dict(cfg)) if wanted else []
    if not names:
        yield None
        return
    from dlrun.engine.trackers_process import TrackerProcess

    host = TrackerProcess(names)
    try:
        yield host
    finally:
        host.close()


def open_trackers(cfg, run_dir: Path, host: TrackerProcess | None = None) -> Trackers | None:
    """Start (or, on resume, continue) the tracker runs ``cfg.logger`` chooses, in
    ``host`` (a process of :func:`tracker_process`) or in a process of their own.

    Returns None when it chooses none. Writes ``run_dir/trackers.json``.
    """
    data = to_dict(cfg)  # trackers receive the flattened config as params
    names = chosen(data)
    if not names:
        return None
    previous = _previous(run_dir) if data.get("resume") else {}
    owned = host is None
    if host is None:
        from dlrun.engine.trackers_process import TrackerProcess

        host = TrackerProcess(names)
    try:
        record = host.open(data, run_dir, previous, _sweep_dir(run_dir))
    except BaseException:
        if owned:
            host.close()
        raise
    write_json(RunDir(run_dir).trackers, {**previous, **record})
    return Trackers(host, record, owned)


def _previous(run_dir: Path) -> dict:
    """The tracker runs a resumed run logged to (its ``trackers.json``, read as data)."""
    path = RunDir(run_dir).trackers
    if not path.is_file():
        return {}
    record = read_json(path)
    return {k: v for k, v in record.items() if isinstance(v, dict) and isinstance(v.get("id"), str)}


def _quiet(*names: str) -> None:
    for name in names:  # their INFO lines (database setup, run links) are not the run's news
        logging.getLogger(name).setLevel(logging.WARNING)


def _require(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise UserError(
            f"logger={name}: the {name} package is not installed; {INSTALL[name]} "
            "(or choose logger=none)"
        ) from None


def _run_name(path: Path) -> str:
    """``2026-01-02/03-04-05`` or a sweep job's ``0_optimizer.lr=0.001``."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


# -- sweeps ----------------------------------------------------------------------------


def _sweep_dir(run_dir: Path) -> Path | None:
    """The sweep directory when this run is a job of a Hydra multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN or not hc.sweep.dir:
            return None
        sweep = Path(hc.sweep.dir).resolve()
    except Exception:  # no Hydra context (run() called directly)
        return None
    # A job's directory lies in its sweep's; anything else is a stale context.
    return sweep if sweep in Path(run_dir).resolve().parents else None


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            import fcntl
        except ImportError:  # no fcntl (Windows): jobs of one process need no lock
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sweep_record(sweep: Path, data: dict, names: list[str]) -> dict:
    """For a job of the sweep in ``sweep``: its sweep's parent runs, the first job
    creating them.

    Jobs may run in other processes (joblib, submitit), so the parent's ids
    live in the sweep directory's ``trackers.json``, written under a file lock.
    """
    path = SweepDir(sweep).trackers
    with _locked(path.with_name(f".{path.name}.lock")):
        record = read_json(path) if path.is_file() else {}
        added = False
        for name in names:
            if not _ours(data, name, record.get(name)):
                record[name] = tracker_class(name).parent(data, sweep)
                added = True
        if added:
            write_json(path, record)
    return record


def _ours(data: dict, name: str, record: Any) -> bool:
    """Whether a sweep folder's ``record`` of a tracker run is in the store this command's
    config chooses: a folder someone hands you never chooses where results are sent."""
    if name not in chosen(data) or not isinstance(record, dict):
        return False
    if name != "mlflow":
        return isinstance(record.get("id"), str)
    from dlrun.engine.trackers_mlflow import mlflow_store

    uri, _ = mlflow_store(data["logger"]["mlflow"], data["paths"]["output_dir"])
    return record.get("tracking_uri") == uri and isinstance(record.get("id"), str)


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - Hydra is a dependency
    Callback = object  # type: ignore[misc,assignment]


class SweepTrackers(Callback):
    """Hydra callback: at a sweep's end, its parent tracker runs get the sweep's
    summary table and plots and are ended; a sweep started again on the same
    directory (a search that continues) reopens them."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from dlrun.engine.trackers_mlflow import MlflowTracker

        self._parent(config, lambda record, sweep: MlflowTracker.reopen_parent(record))

    def on_multirun_end(self, config, **kwargs) -> None:
        from dlrun.engine.trackers_mlflow import MlflowTracker

        self._parent(config, MlflowTracker.end_parent)

    @staticmethod
    def _parent(config, act) -> None:
        sweep = SweepDir(str(config.hydra.sweep.dir))
        if not sweep.trackers.is_file():
            return
        try:
            record = read_json(sweep.trackers)
            data = {k: OmegaConf.to_container(config[k], resolve=True) for k in ("logger", "paths")}
            if _ours(data, "mlflow", record.get("mlflow")):
                act(record["mlflow"], sweep)
        except Exception as exc:  # the sweep's jobs matter more than its parent run
            log.warning("dlrun: mlflow: the sweep's parent run: %s", first_line(exc, 200))
