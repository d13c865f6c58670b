"""device.threads=null: torch's default less the cores other processes keep busy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import make_cfg

from dlrun.engine import cpuload
from dlrun.engine.device import _TORCH_THREADS, set_threads
from dlrun.engine.run import run


@pytest.fixture(autouse=True)
def torch_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield
    torch.set_num_threads(_TORCH_THREADS)


@pytest.fixture
def neighbour():
    """Another process spinning on one of this process's CPUs."""
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    cpu = cpuload.cpus()[0]
    os.sched_setaffinity(spin.pid, {cpu})
    time.sleep(0.3)
    yield
    spin.kill()
    spin.wait()


def test_a_busy_neighbour_is_seen_and_takes_a_thread(neighbour):
    cpuload.mark()
    time.sleep(0.5)
    assert 0.7 < cpuload.others_busy() < len(cpuload.cpus()) + 0.1
    cpuload.mark()
    time.sleep(0.3)
    assert set_threads(None) == max(1, min(_TORCH_THREADS, len(cpuload.cpus()) - 1))
    assert torch.get_num_threads() == max(1, min(_TORCH_THREADS, len(cpuload.cpus()) - 1))


def test_its_own_work_and_its_childrens_are_not_a_neighbours():
    cpuload.mark()
    end = time.monotonic() + 0.4
    while time.monotonic() < end:  # this process busy on one core
        pass
    subprocess.run([sys.executable, "-c", "sum(range(3_000_000))"], check=True)  # a child
    assert cpuload.others_busy() < 0.5


def test_a_number_or_omp_num_threads_wins(neighbour, monkeypatch):
    assert set_threads(1) == 1 == torch.get_num_threads()
    assert set_threads(3) == 3 == torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # torchrun's, or the user's
    assert set_threads(None) == 3 == torch.get_num_threads()


def test_a_run_says_how_many_threads_it_used(tmp_path, cache_dir):
    cfg = make_cfg(cache_dir, "task=tabular", "trainer.max_steps=2", "device.threads=1")
    run(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["device"] == "cpu, 1 CPU thread, amp off"


def test_freed_memory_is_kept_for_reuse_under_glibc():
    import platform

    from dlrun.engine.device import keep_freed_memory

    # glibc accepts both settings; elsewhere (musl, macOS) nothing is changed or claimed.
    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")
