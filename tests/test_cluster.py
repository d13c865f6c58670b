"""SLURM for real: the one-node cluster scripts/local_slurm.sh starts on this machine.

The tests marked ``cluster`` are skipped, with the script's reason, only where it
cannot start the cluster (not root and none running, no apt-get).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, merged, read_csv, run_cli, sweep_dir, tiny_data

from dlrun.engine.distributed import _first_host, adopt_slurm

# A search on the tests' tiny dates data (char_accuracy moves within 20 steps).
SEARCH = [
    "hydra/sweeper=optuna",
    "hydra.sweeper.seed=0",
    "trainer.eval_every=5",
    "task.monitor=val/char_accuracy",
    "optimizer.lr=tag(log, interval(1e-3, 1e-1))",
]


def search_args(*more: str) -> list[str]:
    return ["-m", *merged(*TINY, *tiny_data("dates"), *SEARCH, *more)]


ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def slurm():
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "local_slurm.sh")], capture_output=True, text=True
    )
    if done.returncode:
        pytest.skip(f"no local SLURM cluster: {done.stderr.strip().splitlines()[-1]}")


def test_a_slurm_step_of_several_tasks_reads_as_torchrun():
    env = {
        "SLURM_STEP_NUM_TASKS": "4",
        "SLURM_PROCID": "3",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_NODELIST": "gpu[07-08]",
        "SLURM_JOB_ID": "1234",
        "SLURM_STEP_ID": "0",
    }
    adopt_slurm(env)
    assert (env["WORLD_SIZE"], env["RANK"], env["LOCAL_RANK"]) == ("4", "3", "1")
    assert env["MASTER_ADDR"] == "gpu07" and 20000 <= int(env["MASTER_PORT"]) < 40000
    # torchrun's own variables win; a batch script (no step of several tasks) is left alone.
    for env in (
        {"WORLD_SIZE": "2", "RANK": "1", "SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "3"},
        {"SLURM_NTASKS": "4", "SLURM_PROCID": "0", "SLURM_JOB_ID": "5"},
        {"SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"},
    ):
        before = dict(env)
        adopt_slurm(env)
        assert env == before


def test_first_host_of_a_node_list_without_scontrol(monkeypatch):
    def missing(*args, **kwargs):
        raise FileNotFoundError("scontrol")

    monkeypatch.setattr(subprocess, "run", missing)
    assert _first_host("node[003-005,9],login1") == "node003"
    assert _first_host("vm") == "vm"
    assert _first_host("a1,b2") == "a1"


def _records(run_dir: Path) -> list[tuple[int, str, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return [(r["step"], r["split"], r["loss"]) for r in rows]


@pytest.mark.slow  # the default suite's time; CI runs it with the slow ones
@pytest.mark.cluster
def test_srun_two_tasks_train_one_run_like_one_process(slurm, tmp_path, cache_dir):
    # No dropout: ranks draw their own masks, one process draws others.
    args = merged("task=kmnist", *TINY, *tiny_data("kmnist"), "model.dropout=0")
    one, two = tmp_path / "one", tmp_path / "two"
    done = run_cli(["dlrun", *args, f"hydra.run.dir={one}"], tmp_path, cache_dir)
    assert done.returncode == 0, done.stderr
    srun = ["srun", "--ntasks=2", "--cpus-per-task=1", f"--chdir={tmp_path}"]
    done = run_cli([*srun, str(BIN / "dlrun"), *args, f"hydra.run.dir={two}"], tmp_path, cache_dir)
    assert done.returncode == 0, done.stderr
    assert "2 processes (srun)" in done.stderr
    assert done.stdout.count("run dir:") == 1  # rank 0 alone reports and writes
    a, b = _records(one), _records(two)
    assert [r[:2] for r in a] == [r[:2] for r in b] and len(a) > 3
    for (_, _, x), (_, _, y) in zip(a, b):
        assert y == pytest.approx(x, rel=1e-4, abs=1e-5)
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2


@pytest.mark.cluster
@pytest.mark.slow  # CI runs the slow tests when its time allows
def test_a_sweep_through_sbatch_runs_every_job(slurm, tmp_path, cache_dir):
    args = merged("task=kmnist", *TINY, *tiny_data("kmnist"))
    done = run_cli(
        [
            "dlrun",
            "-m",
            "hydra/launcher=submitit_slurm",
            "hydra.launcher.timeout_min=10",
            *args,
            "optimizer.lr=1e-3,1e-2",
        ],
        tmp_path,
        cache_dir,
    )
    assert done.returncode == 0, done.stderr
    out = sweep_dir(done.stdout, tmp_path)
    # submitit's records of the SLURM array it submitted: a folder per task, JOBID_INDEX
    found = [re.fullmatch(r"\d+_(\d+)", p.name) for p in (out / ".submitit").iterdir()]
    tasks = sorted(m.group(1) for m in found if m)
    assert tasks == ["0", "1"], list((out / ".submitit").iterdir())
    rows = read_csv(out / "summary.csv")
    assert sorted(r["optimizer.lr"] for r in rows) == ["0.001", "0.01"]
    assert all(r["status"] == "ok" for r in rows)


# -- a search shared through a database ---------------------------------------------------


@pytest.fixture(scope="session")
def postgres():
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "local_postgres.sh")], capture_output=True, text=True
    )
    if done.returncode:
        pytest.skip(f"no local PostgreSQL: {done.stderr.strip().splitlines()[-1]}")
    return done.stdout.strip()


@pytest.mark.cluster
@pytest.mark.slow  # CI runs the slow tests when its time allows
def test_two_sweepers_share_one_study_in_postgresql(postgres, tmp_path, cache_dir):
    import optuna

    from dlrun.search.study import storage

    name = f"shared-{tmp_path.name}-{os.getpid()}"
    args = search_args(
        "hydra.sweeper.n_trials=4",
        f"hydra.sweeper.storage={postgres}",
        f"hydra.sweeper.study_name={name}",
    )
    env = {**os.environ, "DLRUN_CACHE_DIR": str(cache_dir)}
    workers = [
        subprocess.Popen(
            [str(BIN / "dlrun"), *args, f"hydra.sweep.dir={tmp_path / f'S{i}'}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    study = optuna.load_study(study_name=name, storage=storage(postgres))
    states = [t.state.name for t in study.trials]
    # Neither sweeper failed the other's running trials; together they finished the study
    # (each stops once 4 are finished, counting the other's; its last trial may add one).
    assert "FAIL" not in states and "RUNNING" not in states, states
    assert 4 <= states.count("COMPLETE") <= 5
    dirs = {Path(t.user_attrs["run_dir"]).parent.name for t in study.trials}
    assert dirs == {"S0", "S1"}  # both worked on it
    for i in range(2):  # each wrote the study's best.yaml into its sweep folder
        best = (tmp_path / f"S{i}" / "best.yaml").read_text()
        assert f"trial: {study.best_trial.number}" in best


# -- preemption: a requeued job resumes by itself -------------------------------------------


def _squeue_state(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


def _wait(what, timeout: float = 120.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"gave up waiting for {what.__doc__}")


@pytest.mark.cluster
@pytest.mark.slow  # CI runs the slow tests when its time allows
def test_a_requeued_job_resumes_its_run_and_ends_like_an_uninterrupted_one(
    slurm, tmp_path, cache_dir
):
    args = merged(
        *TINY,
        *tiny_data("dates"),
        "trainer.max_steps=200",
        "trainer.eval_every=20",
        "trainer.log_every=10",
        f"paths.output_dir={tmp_path / 'out'}",
    )
    ref = tmp_path / "ref"
    done = run_cli(["dlrun", *args, f"hydra.run.dir={ref}"], tmp_path, cache_dir)
    assert done.returncode == 0, done.stderr

    script = tmp_path / "job.sh"
    script.write_text(
        f"#!/bin/bash\nexec {BIN / 'dlrun'} {' '.join(shlex.quote(a) for a in args)}\n"
    )
    env = {**os.environ, "DLRUN_CACHE_DIR": str(cache_dir)}
    submit = ["sbatch", "--parsable", "--requeue", f"--chdir={tmp_path}", "-o", "job-%j.out"]
    submit.append("--open-mode=append")  # both attempts' output
    job = subprocess.run(
        [*submit, str(script)], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()

    def evaluated():
        """the job's first evaluation"""
        for metrics in (tmp_path / "out" / "slurm").glob(f"{job}-*/metrics.jsonl"):
            if '"split": "val"' in metrics.read_text():
                return metrics.parent
        return None

    run_dir = _wait(evaluated)
    # SIGTERM, then back in the queue; it starts again 11 s later (local_slurm.sh's
    # cred_expire), as SLURM_RESTART_COUNT=1.
    subprocess.run(["scontrol", "requeue", job], check=True)
    _wait(lambda: _squeue_state(job) == "PENDING")
    _wait(lambda: _squeue_state(job) == "", timeout=240)

    assert [p.name for p in (tmp_path / "out" / "slurm").iterdir()] == [run_dir.name]
    log = (run_dir / "dlrun.log").read_text()
    resumed = re.search(r"resumed from .* at step (\d+)", log)
    assert resumed and 0 < int(resumed.group(1)) < 200, log[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    expected = json.loads((ref / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 200
    assert summary["test"] == pytest.approx(expected["test"], rel=1e-6, abs=1e-9)
    output = (tmp_path / f"job-{job}.out").read_text()
    assert f"SLURM requeued job {job}: resuming {run_dir}" in output


def test_last_checkpoint_on_sigusr1_and_on_a_time_cadence(tiny_cfg, tmp_path, monkeypatch):
    import signal

    from dlrun.engine.run import run
    from dlrun.engine.trainer import Trainer
    from dlrun.tasks.seq2seq import Seq2SeqTask

    saved, calls = [], {"n": 0}
    original_save, original_loss = Trainer.save, Seq2SeqTask.loss

    def save(self, which):
        saved.append((which, self.state.step))
        return original_save(self, which)

    def loss(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 7:  # SLURM's warning (sbatch --signal=B:USR1@120) during step 7
            signal.raise_signal(signal.SIGUSR1)
        return original_loss(self, model, batch)

    monkeypatch.setattr(Trainer, "save", save)
    monkeypatch.setattr(Seq2SeqTask, "loss", loss)
    run(tiny_cfg("trainer.max_steps=20", "trainer.eval_every=10"), tmp_path / "a")
    last = [step for which, step in saved if which == "last"]
    assert 7 in last and last.count(10) == 1 and last[-1] == 20  # 7: asked; 10, 20: evaluations

    saved.clear()
    monkeypatch.setattr(Seq2SeqTask, "loss", original_loss)
    monkeypatch.setenv("SLURM_JOB_ID", "42")  # in a SLURM job: every 10 minutes by default
    cfg = tiny_cfg("trainer.max_steps=20", "trainer.eval_every=10", "trainer.checkpoint_every=1e-6")
    run(cfg, tmp_path / "b")
    last = [step for which, step in saved if which == "last"]
    assert [s for s in last if s % 10] == [s for s in range(1, 20) if s % 10]  # every step


@pytest.mark.cluster
@pytest.mark.slow  # a controller job and its array: about a minute
def test_a_sweep_submitted_as_a_job_needs_no_terminal(slurm, tmp_path, cache_dir):
    args = merged("task=kmnist", *TINY, *tiny_data("kmnist"))
    sweep = tmp_path / "S"
    command = shlex.join(
        [
            str(BIN / "dlrun"),
            "-m",
            "hydra/launcher=submitit_slurm",
            *args,
            "hydra.launcher.timeout_min=10",
            "optimizer.lr=1e-3,1e-2",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    env = {**os.environ, "DLRUN_CACHE_DIR": str(cache_dir)}
    submit = ["sbatch", "--parsable", "-c", "1", f"--chdir={tmp_path}", "-o", "sweep-%j.out"]
    job = subprocess.run(
        [*submit, "--wrap", command], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()  # the submitting command returns at once: the controller is a job
    _wait(lambda: _squeue_state(job) == "", timeout=240)
    rows = read_csv(sweep / "summary.csv")
    assert sorted(r["optimizer.lr"] for r in rows) == ["0.001", "0.01"]
    assert all(r["status"] == "ok" for r in rows), (tmp_path / f"sweep-{job}.out").read_text()
