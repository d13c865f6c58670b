"""logger=mlflow and logger=wandb against the real libraries: what a run, a sweep and a
resume leave in each tracker's own store, read back with the tracker's own reader."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import platform
import signal
import struct
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, TINY_GRU, merged, run_cli, tiny_data
from mlflow import MlflowClient
from wandb.proto import wandb_internal_pb2

from dlrun import __version__
from dlrun.engine import trackers, trackers_mlflow, trackers_process, trackers_wandb
from dlrun.engine.run import run
from dlrun.errors import ConfigError, UserError
from dlrun.plan.config import to_dict, validate
from dlrun.report.runs import find_runs
from dlrun.rundir.layout import RunDir
from dlrun.rundir.read import read_jsonl


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, no user settings: W&B offline, its own directories under tmp_path."""
    for key in ("MLFLOW_TRACKING_URI", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(key, str(tmp_path / "wandb_home" / key.lower()))
    monkeypatch.setenv("NETRC", str(tmp_path / "no.netrc"))


def mlflow_client(output_dir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{output_dir / 'mlflow' / 'mlflow.db'}")


def only_run(client: MlflowClient):
    (found,) = client.search_runs([client.get_experiment_by_name("dlrun").experiment_id])
    return found


def history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    """``{step: value}`` of one metric."""
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def jsonl_history(run_dir: Path, split: str, key: str) -> dict[int, float]:
    records = read_jsonl(run_dir / "metrics.jsonl")
    return {r["step"]: r[key] for r in records if r["split"] == split}


@pytest.mark.slow  # 5-16 s: the default suite stays under 10 minutes
def test_mlflow_run_has_params_metrics_tags_and_artifacts(tiny_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "out"
    # With TensorBoard at once (any list of loggers).
    cfg = tiny_cfg("logger=[tensorboard,mlflow]", f"paths.output_dir={out}", "optimizer.lr=0.002")
    logger = validate(cfg).logger
    assert logger.tensorboard is not None and logger.mlflow is not None and logger.wandb is None
    metrics = run(cfg, tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert "val/loss" in events.Tags()["scalars"]
    assert not (tmp_path / "run" / "wandb").exists()
    client = mlflow_client(out)
    found = only_run(client)
    assert found.info.status == "FINISHED"
    assert json.loads((tmp_path / "run" / "trackers.json").read_text())["mlflow"]["id"] == (
        found.info.run_id
    )
    params = found.data.params
    assert params["optimizer.lr"] == "0.002" and params["model.hidden_size"] == "32"
    assert params["task.name"] == "dates" and params["trainer.max_steps"] == "20"
    tags = found.data.tags
    assert (tags["task"], tags["model"], tags["dlrun.status"]) == ("dates", "gru_seq2seq", "ok")
    assert tags["dlrun_version"] == __version__
    # Where the run came from, as the summary records it (issue 27, item 5).
    origin = json.loads((tmp_path / "run" / "summary.json").read_text())["provenance"]
    assert tags["provenance.dlrun"] == __version__ == origin["dlrun"]
    assert tags["provenance.python"] == origin["python"] == platform.python_version()
    assert tags["provenance.code.dlrun.path"] == origin["code"]["dlrun"]["path"]
    # Every step of every split, the same numbers as metrics.jsonl.
    run_id = found.info.run_id
    for split, key in [("train", "loss"), ("val", "loss"), ("val", "exact_match")]:
        expected = jsonl_history(tmp_path / "run", split, key)
        assert history(client, run_id, f"{split}/{key}") == pytest.approx(expected)
    assert sorted(history(client, run_id, "train/loss")) == [5, 10, 15, 20]
    assert history(client, run_id, "test/exact_match") == {20: metrics["test/exact_match"]}
    assert "train/lr" in found.data.metrics and "val/lr" not in found.data.metrics
    names = {a.path for a in client.list_artifacts(run_id)}
    assert names == {"summary.json", "curves.png", "samples.txt"}  # no checkpoints by default
    local = Path(client.download_artifacts(run_id, "summary.json", str(tmp_path)))
    assert json.loads(local.read_text())["status"] == "ok"


@pytest.mark.slow  # 5-16 s: the default suite stays under 10 minutes
def test_resume_continues_the_same_mlflow_run(tiny_cfg, tmp_path):
    out, run_dir = tmp_path / "out", tmp_path / "run"
    common = ["logger=mlflow", f"paths.output_dir={out}", "logger.mlflow.log_checkpoints=true"]
    run(tiny_cfg(*merged(*TINY, *common, "trainer.max_steps=10")), run_dir)
    first = only_run(mlflow_client(out))
    run(tiny_cfg(*merged(*TINY, *common, "trainer.max_steps=20", f"resume={run_dir}")), run_dir)
    client = mlflow_client(out)
    found = only_run(client)  # still one run
    assert found.info.run_id == first.info.run_id and found.info.status == "FINISHED"
    assert sorted(history(client, found.info.run_id, "val/loss")) == [10, 20]
    assert found.data.params["trainer.max_steps"] == "10"  # as it started (MLflow keeps params)
    checkpoints = {a.path for a in client.list_artifacts(found.info.run_id, "checkpoints")}
    assert checkpoints == {"checkpoints/best.pt", "checkpoints/last.pt"}


SWEEPS = {
    "grid": ["optimizer.lr=1e-3,2e-3"],
    "optuna": [
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=2",
        "optimizer.lr=tag(log, interval(1e-3, 1e-2))",
    ],
}


@pytest.mark.parametrize(
    "kind",
    ["grid", pytest.param("optuna", marks=pytest.mark.slow)],  # default suite's time
)
def test_a_sweep_is_a_parent_run_with_nested_children(tmp_path, cache_dir, kind):
    out, sweep = tmp_path / "out", tmp_path / "S"
    common = [*TINY, *tiny_data("dates"), *TINY_GRU, "trainer.max_steps=10", "logger=mlflow"]
    where = [f"paths.output_dir={out}", f"hydra.sweep.dir={sweep}"]
    done = run_cli(["dlrun", "-m", *merged(*common, *where, *SWEEPS[kind])], tmp_path, cache_dir)
    assert done.returncode == 0, done.stderr
    client = mlflow_client(out)
    runs = client.search_runs([client.get_experiment_by_name("dlrun").experiment_id])
    parent_id = json.loads((sweep / "trackers.json").read_text())["mlflow"]["id"]
    (parent,) = [r for r in runs if r.info.run_id == parent_id]
    children = [r for r in runs if r.info.run_id != parent_id]
    assert len(children) == 2
    assert all(c.data.tags["mlflow.parentRunId"] == parent_id for c in children)
    if kind == "grid":
        assert sorted(c.data.params["optimizer.lr"] for c in children) == ["0.001", "0.002"]
    else:  # each trial says which it is
        assert sorted(c.data.tags["optuna_trial"] for c in children) == ["0", "1"]
    assert all(c.info.status == "FINISHED" for c in children + [parent])
    # The sweep's end gave the parent the sweep's table.
    assert {"summary.csv", "summary.md"} <= {a.path for a in client.list_artifacts(parent_id)}
    assert "sweep summary (2 jobs, 0 failed)" in done.stdout


def test_a_failed_or_interrupted_run_ends_its_tracker_runs(tiny_cfg, tmp_path):
    """An error or Ctrl-C ends the tracker runs failed or killed. The trackers' process,
    sent the SIGINT a terminal's Ctrl-C would send, lives on to record it. One process
    hosts both runs in turn, as it hosts the folds of trainer.folds."""
    out = tmp_path / "out"
    cases = [("failed", "FAILED", UserError("bad")), ("interrupted", "KILLED", KeyboardInterrupt())]
    data = validate(tiny_cfg("logger=mlflow", f"paths.output_dir={out}"))
    with trackers.tracker_process(data) as host:
        for n, (status, mlflow_status, raised) in enumerate(cases):
            with pytest.raises(type(raised)):  # what run() does on an error or Ctrl-C
                with trackers.open_trackers(data, tmp_path / f"run{n}", host) as opened:
                    os.kill(host.proc.pid, signal.SIGINT)
                    opened.log({"split": "train", "loss": 1.5, "lr": 0.1}, step=3)
                    raise raised
            assert opened.ended and host.lost is None  # ended, once; the process lives
            run_id = json.loads((tmp_path / f"run{n}" / "trackers.json").read_text())["mlflow"][
                "id"
            ]
            client = mlflow_client(out)
            found = client.get_run(run_id)
            assert (found.info.status, found.data.tags["dlrun.status"]) == (mlflow_status, status)
            assert history(client, found.info.run_id, "train/loss") == {3: 1.5}
    assert host.proc.returncode == 0


FAKE_CHILD = """
import json, sys, time
sys.stdin.readline()  # the run's "open"
for reply in {replies!r}:
    print(json.dumps(reply), flush=True)
if {hangs}:
    time.sleep(600)
sys.exit(3)
"""


@pytest.fixture
def fake_child(monkeypatch):
    """``fake_child(replies, hangs)``: the trackers' process is a script that reads the
    run's first message (its "open"), writes ``replies``, then hangs or exits (code 3).
    Returns the list of the processes the run starts."""
    made = []
    real = trackers_process.TrackerProcess.__init__

    def init(self, names):
        real(self, names)
        made.append(self)

    monkeypatch.setattr(trackers_process.TrackerProcess, "__init__", init)

    def use(replies: list[dict], hangs: bool) -> list:
        script = FAKE_CHILD.format(replies=replies, hangs=hangs)
        command = staticmethod(lambda names: [sys.executable, "-c", script])
        monkeypatch.setattr(trackers_process.TrackerProcess, "command", command)
        return made

    return use


def tracker_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_trackers_process_that_dies_mid_run_costs_a_warning(
    tiny_cfg, tmp_path, fake_child, caplog
):
    made = fake_child([{"opened": {"mlflow": {"id": "x"}}}], hangs=False)
    with caplog.at_level(logging.WARNING, logger="dlrun"):
        run(tiny_cfg("logger=mlflow"), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "ok"
    assert json.loads((tmp_path / "run" / "trackers.json").read_text()) == {"mlflow": {"id": "x"}}
    assert tracker_warnings(caplog) == [
        "dlrun: mlflow: the trackers' process ended (exit code 3); the run goes on without "
        "them (their runs may lack its later records and files)"
    ]
    assert [p.proc.returncode for p in made] == [3]


@pytest.mark.parametrize("when", ["open", "end"])
def test_every_wait_on_the_trackers_process_is_bounded(
    tiny_cfg, tmp_path, monkeypatch, fake_child, caplog, when
):
    made = fake_child([{"opened": {"mlflow": {"id": "x"}}}] if when == "end" else [], hangs=True)
    monkeypatch.setattr(trackers_process, "OPEN_TIMEOUT_S", 0.5)
    monkeypatch.setattr(trackers_process, "END_TIMEOUT_S", 0.5)
    data = validate(tiny_cfg("logger=mlflow"))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    started = time.monotonic()
    if when == "open":
        with pytest.raises(UserError) as raised:
            trackers.open_trackers(data, run_dir)
        assert str(raised.value) == (
            "logger=mlflow: the trackers' process did not answer within 0.5 s before its tracker "
            "runs were open; check that the tracking store answers, or choose logger=none"
        )
        assert not (run_dir / "trackers.json").exists()
    else:
        opened = trackers.open_trackers(data, run_dir)
        opened.log({"split": "train", "loss": 1.5}, step=3)  # never waits
        with caplog.at_level(logging.WARNING, logger="dlrun"):
            opened.finish(RunDir(run_dir), {"status": "ok"})
        assert tracker_warnings(caplog) == [
            "dlrun: mlflow: the trackers' process did not answer within 0.5 s; the run goes on "
            "without them (their runs may lack its later records and files)"
        ]
    assert time.monotonic() - started < 15
    assert [p.proc.returncode for p in made] == [-signal.SIGKILL]  # stopped, not left behind


def test_trackers_that_cannot_start_end_the_run_before_training(tiny_cfg, tmp_path, fake_child):
    error = "logger=mlflow: cannot use the tracking store x (down); set logger.mlflow.tracking_uri"
    fake_child([{"error": error}], hangs=False)
    with pytest.raises(UserError) as raised:
        run(tiny_cfg("logger=mlflow"), tmp_path / "run")
    assert str(raised.value) == error
    left = {p.name for p in (tmp_path / "run").iterdir()}
    assert "stats.json" in left and not left & {"metrics.jsonl", "checkpoints"}  # no step


def test_a_tracking_store_mlflow_refuses_is_one_line(tiny_cfg, tmp_path):
    """What the trackers' process (its loop, run here) answers for a store MLflow refuses."""
    uri = (tmp_path / "mlruns").as_uri()  # MLflow 3 refuses new file stores
    cfg = validate(tiny_cfg("logger=mlflow", f"logger.mlflow.tracking_uri={uri}"))
    data = json.loads(json.dumps(to_dict(cfg)))
    opening = {"op": "open", "data": data, "run_dir": str(tmp_path), "previous": {}, "sweep": None}
    replies: list[dict] = []
    trackers_process.serve(["mlflow"], [json.dumps(opening)], replies.append)
    ((key, message),) = [(k, v) for reply in replies for k, v in reply.items()]
    assert key == "error"
    assert message.startswith(f"logger=mlflow: cannot use the tracking store {uri} (The filesys")
    assert message.endswith("set logger.mlflow.tracking_uri to a store you can reach")


def test_a_tracker_outage_during_the_run_is_a_warning(tiny_cfg, tmp_path, monkeypatch):
    """The trackers' process (its loop, run here) goes on when a tracker fails to log."""
    out, run_dir = tmp_path / "out", tmp_path / "run"
    run_dir.mkdir()
    data = json.loads(
        json.dumps(to_dict(validate(tiny_cfg("logger=mlflow", f"paths.output_dir={out}"))))
    )

    def outage(self, values, step):
        raise OSError("connection refused")

    monkeypatch.setattr(trackers_mlflow.MlflowTracker, "log", outage)
    messages = [
        {"op": "open", "data": data, "run_dir": str(run_dir), "previous": {}, "sweep": None},
        {"op": "log", "values": {"train/loss": 1.0}, "step": 5},
        {"op": "log", "values": {"train/loss": 0.5}, "step": 10},
        {"op": "finish", "run_dir": str(run_dir), "status": "ok", "tags": {"provenance.x": "1"}},
    ]
    replies: list[dict] = []
    trackers_process.serve(["mlflow"], [json.dumps(m) for m in messages], replies.append)
    answers = [r for r in replies if "log" not in r]
    assert [sorted(r) for r in answers] == [["opened"], ["ended"]]
    assert [r["log"] for r in replies if "log" in r] == [  # once: the run goes on
        [
            "dlrun",
            logging.WARNING,
            "dlrun: mlflow: could not log step 5 (connection refused); the run goes on, the "
            "tracker run may lack some records",
        ]
    ]
    run_id = answers[0]["opened"]["mlflow"]["id"]
    found = mlflow_client(out).get_run(run_id)
    assert found.info.status == "FINISHED" and found.data.tags["provenance.x"] == "1"


def test_the_tracker_runs_of_a_run_that_died_end_killed(tiny_cfg, tmp_path):
    """The trackers' process (its loop, run here) whose run died without a word (its
    messages end): the tracker run ends killed, not left running."""
    out = tmp_path / "out"
    data = json.loads(
        json.dumps(to_dict(validate(tiny_cfg("logger=mlflow", f"paths.output_dir={out}"))))
    )
    messages = [
        {"op": "open", "data": data, "run_dir": str(tmp_path), "previous": {}, "sweep": None},
        {"op": "log", "values": {"train/loss": 1.0}, "step": 5},
    ]
    replies: list[dict] = []
    trackers_process.serve(["mlflow"], [json.dumps(m) for m in messages], replies.append)
    found = mlflow_client(out).get_run(replies[0]["opened"]["mlflow"]["id"])
    assert (found.info.status, found.data.tags["dlrun.status"]) == ("KILLED", "interrupted")
    assert found.data.metrics == {"train/loss": 1.0}


def test_a_new_mlflow_store_is_a_copy_of_a_template_at_the_current_schema(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path)
    trackers_mlflow.seed_store(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}", str(cache))
    (template,) = (cache / "mlflow").glob("*/mlflow.db")
    built = template.stat().st_mtime_ns
    trackers_mlflow.seed_store(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}", str(cache))
    assert template.stat().st_mtime_ns == built  # built once, copied for each new store
    for folder in ("a", "b"):
        db = tmp_path / folder / "mlflow.db"
        assert db.read_bytes() == template.read_bytes()
        # MLflow takes it as it is (no migration) and adds its Default experiment here.
        client = MlflowClient(f"sqlite:///{db}")
        (default,) = client.search_experiments()
        assert default.artifact_location == str(tmp_path / "mlruns" / "0")
        run_id = client.create_run(client.create_experiment("x")).info.run_id
        client.log_metric(run_id, "loss", 0.5, step=1)
        assert history(client, run_id, "loss") == {1: 0.5}
        assert db.read_bytes() != template.read_bytes()
    # An existing store is never replaced; other stores and an unusable cache are left
    # to MLflow (the run goes on, only slower).
    before = (tmp_path / "a" / "mlflow.db").read_bytes()
    trackers_mlflow.seed_store(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}", str(cache))
    assert (tmp_path / "a" / "mlflow.db").read_bytes() == before
    (tmp_path / "file").write_text("")
    (tmp_path / "c").mkdir()
    trackers_mlflow.seed_store(f"sqlite:///{tmp_path / 'c' / 'mlflow.db'}", str(tmp_path / "file"))
    trackers_mlflow.seed_store("http://localhost:5000", str(cache))
    assert not (tmp_path / "c" / "mlflow.db").exists()
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == []


def wandb_records(path: Path) -> list:
    """The records of a W&B ``.wandb`` file (a LevelDB-style log of ``Record`` protos)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)  # W&B writes "train/loss" either way


def finished_wandb_records(path: Path, seconds: float = 30) -> list:
    """``wandb_records(path)`` once the run's exit record is there: W&B's service process
    may still be writing the file when ``run.finish()`` has returned (seen on a loaded
    2-core machine)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.stat().st_size > 7:  # past the header
            records = wandb_records(path)
            if any(r.WhichOneof("record_type") == "exit" for r in records):
                return records
        time.sleep(0.2)
    return wandb_records(path)  # the assertions on its contents say what is missing


def read_wandb_run(run_dir: Path) -> dict:
    """History, config, tags and files of the offline W&B run(s) in ``run_dir/wandb``."""
    out = {"ids": set(), "history": {}, "config": {}, "tags": set(), "files": set(), "group": ""}
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for record in finished_wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                out["ids"].add(record.run.run_id)
                out["tags"].update(record.run.tags)
                out["group"] = record.run.run_group
                for item in record.run.config.update:
                    out["config"][_key(item)] = json.loads(item.value_json)
            elif kind == "config":
                for item in record.config.update:
                    out["config"][_key(item)] = json.loads(item.value_json)
            elif kind == "history":
                items = {_key(i): json.loads(i.value_json) for i in record.history.item}
                for key, value in items.items():
                    if "/" in key:
                        out["history"].setdefault(key, {})[items["_step"]] = value
            elif kind == "files":
                out["files"].update(f.path for f in record.files.files)
    return out


@pytest.mark.slow  # 5-16 s: the default suite stays under 10 minutes
def test_wandb_offline_run_has_config_metrics_tags_and_files_and_resumes(tiny_cfg, tmp_path):
    run_dir = tmp_path / "run"
    common = [*TINY, "logger=wandb", f"paths.output_dir={tmp_path / 'out'}", "optimizer.lr=0.002"]
    first = run(tiny_cfg(*merged(*common, "trainer.max_steps=10")), run_dir)
    record = json.loads((run_dir / "trackers.json").read_text())["wandb"]
    assert record["mode"] == "offline"
    # A resume continues the same W&B run.
    metrics = run(tiny_cfg(*merged(*common, f"resume={run_dir}")), run_dir)
    assert json.loads((run_dir / "trackers.json").read_text())["wandb"] == record
    logged = read_wandb_run(run_dir)
    assert logged["ids"] == {
        record["id"]
    }  # two offline segments of one run (wandb sync joins them)
    assert logged["config"]["optimizer.lr"] == "0.002"
    assert logged["config"]["model.hidden_size"] == "32"
    assert {"dates", "gru_seq2seq"} <= logged["tags"]
    assert logged["config"]["provenance.dlrun"] == __version__
    assert logged["config"]["provenance.torch"] == torch.__version__
    for split, key in [("train", "loss"), ("val", "loss"), ("val", "exact_match")]:
        expected = jsonl_history(run_dir, split, key)
        assert logged["history"][f"{split}/{key}"] == pytest.approx(expected)
    assert sorted(logged["history"]["val/loss"]) == [10, 20]
    tested = {10: first["test/exact_match"], 20: metrics["test/exact_match"]}
    assert logged["history"]["test/exact_match"] == tested
    assert "val/lr" not in logged["history"]
    assert {"summary.json", "curves.png", "samples.txt"} <= logged["files"]
    for files in run_dir.glob("wandb/offline-run-*/files"):
        assert json.loads((files / "summary.json").read_text())["status"] == "ok"
    assert find_runs([tmp_path]) == [run_dir.resolve()]  # not W&B's copy of summary.json


def test_old_run_directories_logger_name_still_loads(tiny_cfg):
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(tiny_cfg(), resolve=True)
    for old, new in [({"name": "none"}, {}), ({"name": "tensorboard"}, {"tensorboard": {}})]:
        data["logger"] = old
        logger = to_dict(validate(data).logger)
        assert {k for k, v in logger.items() if v is not None} == set(new)


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_a_missing_tracker_is_one_line_with_the_pip_command(tiny_cfg, monkeypatch, name):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda mod, *a: None if mod == name else real(mod, *a)
    )
    with pytest.raises(ConfigError, match=rf"logger={name}: .*pip install 'dlrun\[{name}\]'"):
        validate(tiny_cfg(f"logger={name}"))


def test_a_misspelt_tracker_key_is_one_line_exit_2(tmp_path, cache_dir):
    # Each tracker's section has a schema: a typo is caught before anything runs.
    done = run_cli(["dlrun", "logger=mlflow", "logger.mlflow.experimnt=x"], tmp_path, cache_dir)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "dlrun: error: unknown config key 'logger.mlflow.experimnt' "
        "(did you mean 'logger.mlflow.experiment'?)"
    ]
    assert not (tmp_path / "outputs").exists()


def test_wandb_mode_is_offline_without_a_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE")
    assert trackers_wandb.wandb_mode("auto") == "offline"
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert trackers_wandb.wandb_mode("auto") == "online"  # `wandb login` stored a key
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert trackers_wandb.wandb_mode("auto") == "online"
    assert trackers_wandb.wandb_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert trackers_wandb.wandb_mode("auto") is None  # wandb's own setting wins


@pytest.fixture
def mlflow_server(tmp_path):
    """A real ``mlflow server`` process on a free local port, its store under tmp_path."""
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mlflow = Path(sys.executable).parent / "mlflow"
    server = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server_artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"mlflow server did not start: {server.stderr.read()}"
                    ) from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow  # the default suite's time; CI runs it with the slow ones
@pytest.mark.cluster
def test_mlflow_against_a_real_tracking_server(tiny_cfg, tmp_path, mlflow_server):
    cfg = tiny_cfg("logger=mlflow", f"logger.mlflow.tracking_uri={mlflow_server}")
    metrics = run(cfg, tmp_path / "run")
    client = MlflowClient(mlflow_server)
    found = only_run(client)
    assert found.info.status == "FINISHED" and found.data.tags["dlrun.status"] == "ok"
    run_id = found.info.run_id
    expected = jsonl_history(tmp_path / "run", "val", "loss")
    assert history(client, run_id, "val/loss") == pytest.approx(expected)
    assert history(client, run_id, "test/exact_match") == {20: metrics["test/exact_match"]}
    # Artifacts went through the server into its own store, not next to the run.
    names = {a.path for a in client.list_artifacts(run_id)}
    assert names == {"summary.json", "curves.png", "samples.txt"}
    assert list((tmp_path / "server_artifacts").rglob("summary.json"))
