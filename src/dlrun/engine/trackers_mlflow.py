"""``logger=mlflow``: one MLflow run per dlrun run, nested under its sweep's parent run.

Opened and ended through :mod:`dlrun.engine.trackers`, which chooses the trackers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path

from dlrun import __version__
from dlrun.engine.trackers import _quiet, _require, _run_name, run_params
from dlrun.errors import UserError, first_line
from dlrun.rundir.layout import RunDir, SweepDir

log = logging.getLogger("dlrun")


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


def seed_store(uri: str, cache_dir: str) -> None:
    """Start a new SQLite store as a copy of an empty one already at MLflow's schema.

    MLflow creates a store's tables by running its Alembic migrations (about 1 s); a
    store whose schema is at MLflow's head skips them. The empty store is built once per
    MLflow version in ``<paths.cache_dir>/mlflow`` (one builder, as any cache entry).
    Anything in the way (no cache folder, a store another run created meanwhile) leaves
    the store to MLflow, which creates it as before, only slower.
    """
    path = uri.removeprefix("sqlite:///")
    if not uri.startswith("sqlite:///") or "?" in path or path in ("", ":memory:"):
        return
    db = Path(path)
    if db.exists() or not db.parent.is_dir():
        return
    from importlib.metadata import version

    from dlrun.data.cache import cache_key, cached

    root = Path(cache_dir).expanduser() / "mlflow"
    key = cache_key({"mlflow": version("mlflow")}, 1)
    tmp = db.with_name(f".{db.name}.{os.getpid()}")
    try:
        template, _ = cached(root, key, _empty_store, _checked_store)
        shutil.copyfile(template, tmp)
        os.link(tmp, db)  # never replaces a store that another run created meanwhile
    except Exception as exc:  # a store that MLflow makes itself works too, only slower
        log.debug("dlrun: mlflow: no pre-built store (%s)", first_line(exc, 200))
    finally:
        tmp.unlink(missing_ok=True)


def _empty_store(folder: Path) -> None:
    """An MLflow store with its tables and no experiment: MLflow adds its ``Default``
    experiment (id 0, artifacts where the store's user runs) when a copy is opened."""
    from mlflow import MlflowClient

    db = folder / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()  # creates the tables
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DELETE FROM experiments WHERE experiment_id = 0")


def _checked_store(folder: Path) -> Path:
    """The template's file, if SQLite can read it and it has MLflow's tables."""
    db = folder / "mlflow.db"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        conn.execute("SELECT version_num FROM alembic_version").fetchone()
        conn.execute("SELECT COUNT(*) FROM experiments").fetchone()
    return db


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
        seed_store(uri, data["paths"]["cache_dir"])
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

    @staticmethod
    def warm() -> None:
        """Import what opening a store takes (MLflow 1 s, its SQL store's SQLAlchemy ORM
        and Alembic 0.6 s), before the run asks for its tracker run."""
        import alembic.script  # noqa: F401  (the store reads its schema's head revision)
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

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

    def finish(self, run: RunDir, status: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        # Where the run came from (git commit, versions, data), searchable as tags.
        new = [RunTag(k, v[:5000]) for k, v in tags.items()]
        for i in range(0, len(new), self.BATCH):
            self.client.log_batch(self.run_id, tags=new[i : i + self.BATCH])
        for path in run.artifacts():
            self.client.log_artifact(self.run_id, str(path))
        if self.log_checkpoints:
            for path in run.checkpoint_files():
                self.client.log_artifact(self.run_id, str(path), artifact_path=run.checkpoints.name)
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
        seed_store(uri, data["paths"]["cache_dir"])
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
    def end_parent(record: dict, sweep: SweepDir) -> None:
        from mlflow import MlflowClient

        _quiet("mlflow", "alembic")
        client = MlflowClient(str(record["tracking_uri"]))
        run_id = str(record["id"])
        for path in sweep.report_files():
            client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, "FINISHED")


def _mlflow_call(uri: str, call):
    from mlflow.exceptions import MlflowException

    try:
        return call()
    except (MlflowException, OSError) as exc:
        raise UserError(
            f"logger=mlflow: cannot use the tracking store {uri} ({first_line(exc, 200)}); set "
            "logger.mlflow.tracking_uri to a store you can reach"
        ) from None


def _mlflow_experiment(uri: str, name: str, artifacts: str | None):
    """A client of ``uri`` and the id of experiment ``name`` (created on first use)."""
    from mlflow import MlflowClient

    client = _mlflow_call(uri, lambda: MlflowClient(uri))  # a store MLflow refuses: one line

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
