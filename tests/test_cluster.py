"""SLURM for real: the one-node cluster scripts/local_slurm.sh starts on this machine.

The tests marked ``cluster`` are skipped, with the script's reason, only where it
cannot start the cluster (not root and none running, no apt-get).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, merged, run_cli, tiny_data

from dlrun.engine.distributed import _first_host, adopt_slurm

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
