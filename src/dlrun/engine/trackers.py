"""Experiment trackers: ``logger=mlflow``, ``logger=wandb``, or several (``logger=[a,b]``).

Each tracker gets what the run directory gets: the flattened config as
parameters, every metrics record as ``<split>/<metric>`` at its step, tags
(task, model, dlrun's version) and, at the end, ``summary.json``,
``curves.png`` and ``samples.txt`` (checkpoints with ``log_checkpoints``).

The tracker runs' ids are data in the run directory (``trackers.json``), so
``dlrun resume=RUN_DIR`` continues the same runs. A sweep (``-m``, any
sweeper or launcher) keeps its parent run's id, or its W&B group, in the
sweep directory's ``trackers.json``: jobs in other processes find it there;
the first job creates it under a file lock, :class:`SweepTrackers` (a Hydra
callback) closes it when the sweep ends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from dlrun import __version__
from dlrun.config import to_dict
from dlrun.engine.writers import TensorBoardWriter, flat_hparams, write_text_atomic
from dlrun.errors import Interrupted, UserError

log = logging.getLogger("dlrun")

RECORD = "trackers.json"  # in a run directory: each tracker's run id; in a sweep's: the parent's
ARTIFACTS = ("summary.json", "curves.png", "samples.txt")
# Directories trackers write inside dlrun's output tree (not run directories themselves).
STORE_DIRS = ("mlflow", "wandb")
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
    """The external trackers of one run, written to like any metric writer.

    ``close()`` (the writers' end) leaves the tracker runs open: the artifacts
    are written after it; ``finish()`` logs them and ends the runs.
    """

    def __init__(self, trackers: list):
        self.trackers = trackers

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        """A run that raised ends its tracker runs failed, or killed when interrupted."""
        if exc is not None:
            interrupted = isinstance(exc, (KeyboardInterrupt, Interrupted))
            self.fail("interrupted" if interrupted else "failed")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        values = scalars(metrics)
        if values:
            for t in self.trackers:
                t.log(values, step)

    def close(self) -> None:
        pass

    def finish(self, run_dir: Path, status: str) -> None:
        """Log the run's files and end each tracker run (``status``: the summary's)."""
        self._end(lambda t: t.finish(run_dir, status))

    def fail(self, status: str) -> None:
        """End each tracker run as failed (``status`` failed) or killed (interrupted)."""
        self._end(lambda t: t.fail(status))

    def _end(self, end) -> None:
        ended, self.trackers = self.trackers, []  # each run ends once
        for t in ended:
            try:
                end(t)
            except Exception as exc:  # a tracker's outage must not fail a finished run
                log.warning("dlrun: %s: could not end the run (%s)", t.name, _brief(exc))


def open_trackers(cfg, run_dir: Path) -> Trackers | None:
    """Start (or, on resume, continue) the tracker runs ``cfg.logger`` chooses.

    Returns None when it chooses none. Writes ``run_dir/trackers.json``.
    """
    data = to_dict(cfg)  # trackers receive the flattened config as params
    names = chosen(data)
    if not names:
        return None
    previous = _previous(run_dir) if data.get("resume") else {}
    sweep = sweep_record(run_dir, data, names)
    opened = []
    try:
        for name in names:
            cls = MlflowTracker if name == "mlflow" else WandbTracker
            opened.append(cls(data, run_dir, previous.get(name), sweep.get(name)))
    except BaseException:
        for t in opened:
            with contextlib.suppress(Exception):
                t.fail("failed")
        raise
    record = {**previous, **{t.name: t.record for t in opened}}
    write_text_atomic(run_dir / RECORD, json.dumps(record, indent=2) + "\n")
    return Trackers(opened)


def _previous(run_dir: Path) -> dict:
    """The tracker runs a resumed run logged to (its ``trackers.json``, read as data)."""
    from dlrun.rundir import read_json

    path = run_dir / RECORD
    if not path.is_file():
        return {}
    record = read_json(path)
    return {k: v for k, v in record.items() if isinstance(v, dict) and isinstance(v.get("id"), str)}


def _brief(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return (text or type(exc).__name__)[:200]


def _quiet(*names: str) -> None:
    for name in names:  # their INFO lines (database setup, run links) are not the run's news
        logging.getLogger(name).setLevel(logging.WARNING)


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


def sweep_record(run_dir: Path, data: dict, names: list[str]) -> dict:
    """For a sweep's job: its sweep's parent runs, the first job creating them.

    Jobs may run in other processes (joblib, submitit), so the parent's ids
    live in the sweep directory's ``trackers.json``, written under a file lock.
    """
    sweep = _sweep_dir(run_dir)
    if sweep is None:
        return {}
    from dlrun.rundir import read_json

    path = sweep / RECORD
    with _locked(sweep / f".{RECORD}.lock"):
        record = read_json(path) if path.is_file() else {}
        added = False
        for name in names:
            if name not in record:
                make = MlflowTracker.parent if name == "mlflow" else WandbTracker.parent
                record[name] = make(data, sweep)
                added = True
        if added:
            write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    return record


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - Hydra is a dependency
    Callback = object  # type: ignore[misc,assignment]


class SweepTrackers(Callback):
    """Hydra callback: at a sweep's end, its parent tracker runs get the sweep's
    summary table and plots and are ended; a sweep started again on the same
    directory (a search that continues) reopens them."""

    def on_multirun_start(self, config, **kwargs) -> None:
        self._parent(config, lambda record, sweep: MlflowTracker.reopen_parent(record))

    def on_multirun_end(self, config, **kwargs) -> None:
        self._parent(config, MlflowTracker.end_parent)

    @staticmethod
    def _parent(config, act) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        if not (sweep / RECORD).is_file():
            return
        from dlrun.rundir import read_json

        try:
            record = read_json(sweep / RECORD)
            if isinstance(record.get("mlflow"), dict):
                act(record["mlflow"], sweep)
        except Exception as exc:  # the sweep's jobs matter more than its parent run
            log.warning("dlrun: mlflow: the sweep's parent run: %s", _brief(exc))


# -- MLflow ----------------------------------------------------------------------------


def _require(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise UserError(
            f"logger={name}: the {name} package is not installed; {INSTALL[name]} "
            "(or choose logger=none)"
        ) from None


def mlflow_store(settings: dict, output_dir: str) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment).

    ``logger.mlflow.tracking_uri`` if set, else ``$MLFLOW_TRACKING_URI``, else a
    SQLite store in ``<paths.output_dir>/mlflow/`` (MLflow 3 refuses new file
    stores), its artifacts beside it.
    """
    uri = settings.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return str(uri), None
    root = Path(output_dir).expanduser().resolve() / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


class MlflowTracker:
    """One MLflow run, through ``MlflowClient`` (explicit run ids, no global active run)."""

    name = "mlflow"
    BATCH = 100  # MLflow's limit on params (and tags) in one log_batch

    def __init__(self, data: dict, run_dir: Path, previous: dict | None, sweep: dict | None):
        _require("mlflow")
        _quiet("mlflow", "alembic")
        settings = data["logger"]["mlflow"]
        self.log_checkpoints = settings["log_checkpoints"]
        uri, artifacts = mlflow_store(settings, data["paths"]["output_dir"])
        self.client, experiment = _mlflow_experiment(uri, settings["experiment"], artifacts)
        self.run_id = None
        if previous:
            self.run_id = self._reopen(previous["id"], uri)
        if self.run_id is None:
            tags = {
                "task": data["task"]["name"],
                "model": data["model"]["name"],
                "dlrun_version": __version__,
                "dlrun.run_dir": str(Path(run_dir).resolve()),
            }
            if sweep:
                tags["mlflow.parentRunId"] = sweep["id"]
            if (data.get("tune") or {}).get("trial") is not None:
                tags["optuna_trial"] = str(data["tune"]["trial"])
            run = _mlflow_call(
                uri,
                lambda: self.client.create_run(experiment, run_name=_run_name(run_dir), tags=tags),
            )
            self.run_id = run.info.run_id
        self.record = {"id": self.run_id, "tracking_uri": uri, "experiment_id": experiment}
        self._log_params(run_params(data))

    def _reopen(self, run_id: str, uri: str) -> str | None:
        try:
            run = self.client.get_run(run_id)
        except Exception:
            log.warning(
                "dlrun: mlflow: run %s is not in %s; this resume starts a new MLflow run",
                run_id,
                uri,
            )
            return None
        if run.info.lifecycle_stage == "deleted":
            log.warning("dlrun: mlflow: run %s was deleted; starting a new MLflow run", run_id)
            return None
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        # A resumed run keeps the values it started with (MLflow refuses changes).
        have = self.client.get_run(self.run_id).data.params
        new = [Param(k, v[:6000]) for k, v in params.items() if k not in have]
        for i in range(0, len(new), self.BATCH):
            self.client.log_batch(self.run_id, params=new[i : i + self.BATCH])

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, run_dir: Path, status: str) -> None:
        for name in ARTIFACTS:
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        if self.log_checkpoints:
            for path in sorted((run_dir / "checkpoints").glob("*.pt")):
                self.client.log_artifact(self.run_id, str(path), artifact_path="checkpoints")
        self.client.set_tag(self.run_id, "dlrun.status", status)
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, status: str) -> None:
        self.client.set_tag(self.run_id, "dlrun.status", status)
        self.client.set_terminated(self.run_id, "KILLED" if status == "interrupted" else "FAILED")

    @staticmethod
    def parent(data: dict, sweep: Path) -> dict:
        """A sweep's parent run (its jobs are nested under it)."""
        _require("mlflow")
        _quiet("mlflow", "alembic")
        settings = data["logger"]["mlflow"]
        uri, artifacts = mlflow_store(settings, data["paths"]["output_dir"])
        client, experiment = _mlflow_experiment(uri, settings["experiment"], artifacts)
        tags = {"dlrun.sweep_dir": str(sweep), "dlrun_version": __version__}
        run = client.create_run(experiment, run_name=_run_name(sweep), tags=tags)
        return {"id": run.info.run_id, "tracking_uri": uri, "experiment_id": experiment}

    @staticmethod
    def reopen_parent(record: dict) -> None:
        from mlflow import MlflowClient

        _quiet("mlflow", "alembic")
        MlflowClient(str(record["tracking_uri"])).update_run(str(record["id"]), status="RUNNING")

    @staticmethod
    def end_parent(record: dict, sweep: Path) -> None:
        from mlflow import MlflowClient

        _quiet("mlflow", "alembic")
        client = MlflowClient(str(record["tracking_uri"]))
        run_id = str(record["id"])
        for path in sorted(sweep.glob("summary.*")) + sorted(sweep.glob("*.png")):
            client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, "FINISHED")


def _mlflow_call(uri: str, call):
    from mlflow.exceptions import MlflowException

    try:
        return call()
    except (MlflowException, OSError) as exc:
        raise UserError(
            f"logger=mlflow: cannot use the tracking store {uri} ({_brief(exc)}); set "
            "logger.mlflow.tracking_uri to a store you can reach"
        ) from None


def _mlflow_experiment(uri: str, name: str, artifacts: str | None):
    """A client of ``uri`` and the id of experiment ``name`` (created on first use)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)

    def find() -> str:
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifacts)
        except Exception:  # another job created it in between
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    return client, _mlflow_call(uri, find)


def _run_name(path: Path) -> str:
    """``2026-01-02/03-04-05`` or a sweep job's ``0_optimizer.lr=0.001``."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


# -- Weights & Biases --------------------------------------------------------------------


def wandb_mode(mode: str) -> str | None:
    """``auto``: online with a configured key, else offline; ``WANDB_MODE`` wins over auto."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return None  # wandb reads it itself
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return "online"
    return "online" if _netrc_key() else "offline"


def _netrc_key() -> bool:
    """Whether ``wandb login`` stored a key (in ~/.netrc, or $NETRC) for the W&B host."""
    import netrc
    from urllib.parse import urlparse

    hosts = {"api.wandb.ai"}
    if os.environ.get("WANDB_BASE_URL"):
        hosts.add(urlparse(os.environ["WANDB_BASE_URL"]).hostname or "")
    else:
        with contextlib.suppress(Exception):
            import wandb

            hosts.add(urlparse(wandb.Settings().base_url).hostname or "")
    path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
    try:
        entries = netrc.netrc(path)
    except (OSError, netrc.NetrcParseError):
        return False
    return any(entries.authenticators(h) for h in hosts if h)


class WandbTracker:
    """One W&B run, its files under ``RUN_DIR/wandb/``."""

    name = "wandb"

    def __init__(self, data: dict, run_dir: Path, previous: dict | None, sweep: dict | None):
        wandb = _require("wandb")
        _quiet("wandb")
        settings = data["logger"]["wandb"]
        self.log_checkpoints = settings["log_checkpoints"]
        mode = wandb_mode(settings["mode"])
        tags = [data["task"]["name"], data["model"]["name"], f"dlrun-{__version__}"]
        try:
            self.run = wandb.init(
                project=settings["project"],
                entity=settings["entity"],
                dir=str(run_dir),
                id=previous["id"] if previous else None,
                resume="allow" if previous else None,
                mode=mode,
                group=sweep["group"] if sweep else None,
                name=_run_name(run_dir),
                config=run_params(data),
                tags=tags,
                reinit="create_new",
                settings=wandb.Settings(console="off"),
            )
        except Exception as exc:  # wandb.errors.CommError, UsageError, AuthenticationError...
            raise UserError(
                f"logger=wandb: could not start a W&B run ({_brief(exc)}); "
                "logger.wandb.mode=offline logs without the network"
            ) from None
        self.record = {
            "id": self.run.id,
            "project": settings["project"],
            "mode": mode or os.environ.get("WANDB_MODE", ""),
        }

    def log(self, values: dict[str, float], step: int) -> None:
        # Steps must not go back: W&B drops (with a warning) what a resume repeats.
        self.run.log(values, step=step)

    def finish(self, run_dir: Path, status: str) -> None:
        for name in ARTIFACTS:
            if (run_dir / name).is_file():
                self.run.save(str(run_dir / name), base_path=str(run_dir), policy="now")
        if self.log_checkpoints:
            for path in sorted((run_dir / "checkpoints").glob("*.pt")):
                self.run.save(str(path), base_path=str(run_dir), policy="now")
        self.run.summary["status"] = status
        self.run.finish()

    def fail(self, status: str) -> None:
        self.run.summary["status"] = status
        self.run.finish(exit_code=130 if status == "interrupted" else 1)

    @staticmethod
    def parent(data: dict, sweep: Path) -> dict:
        """W&B has no nested runs: a sweep's jobs share one group, named after the sweep."""
        return {"group": f"{sweep.parent.name}_{sweep.name}"}
