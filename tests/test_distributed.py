"""Beyond one process: torchrun data parallelism (gloo on CPU) and the submitit launcher."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, merged, read_csv, run_cli, sweep_dir, tiny_data

from dlrun.engine.distributed import SINGLE, Dist
from dlrun.engine.evaluate import evaluate


def test_shards_cover_the_batch_once():
    import torch

    idx = torch.arange(7)
    parts = [Dist(rank, 3).shard(idx) for rank in range(3)]
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3, 4], [5, 6]]
    assert SINGLE.shard(idx) is idx


def test_evaluation_rows_cover_the_split_once():
    for n in (0, 2, 7, 10):
        parts = [Dist(rank, 3).rows(n) for rank in range(3)]
        assert [i for part in parts for i in part] == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert SINGLE.rows(5) == range(5)


def _evaluate_as_rank(rank: int, world: int, cfg: dict, init_file: str, out: str) -> None:
    """One torchrun-like rank: its part of the validation split, totals summed over ranks."""
    import torch
    import torch.distributed as torch_dist

    from dlrun.registry import task_entry

    torch_dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    try:
        task = task_entry(cfg.task.name).obj(cfg)
        task.prepare(cfg.paths.cache_dir)
        torch.manual_seed(0)
        model = task.build_model().eval()
        with torch.inference_mode():
            metrics = evaluate(task, model, "val", 5, Dist(rank, world))
        Path(out, f"{rank}.json").write_text(json.dumps(metrics))
    finally:
        torch_dist.destroy_process_group()


@pytest.mark.parametrize(
    "task",  # sequence and classification metrics (dates: slow, the suite's 10 minutes)
    [pytest.param("dates", marks=pytest.mark.slow), "imdb"],
)
def test_evaluation_split_across_ranks_equals_one_process(tiny_cfg, tmp_path, task):
    import torch
    import torch.multiprocessing as mp

    from dlrun.plan.config import validate
    from dlrun.registry import task_entry

    cfg = validate(tiny_cfg(f"task={task}"))
    whole = task_entry(task).obj(cfg)
    whole.prepare(cfg.paths.cache_dir)  # fills the cache the ranks read
    torch.manual_seed(0)
    model = whole.build_model().eval()
    with torch.inference_mode():
        expected = evaluate(whole, model, "val", 5)
    world = 3  # the split's rows do not divide evenly, nor do the batches of 5
    assert whole.size("val") % world and whole.size("val") // world % 5
    mp.spawn(_evaluate_as_rank, (world, cfg, str(tmp_path / "rendezvous"), str(tmp_path)), world)
    for rank in range(world):
        got = json.loads((tmp_path / f"{rank}.json").read_text())
        assert got == pytest.approx(expected, rel=1e-5)


def _losses(run_dir: Path) -> list[tuple[int, str, float]]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return [(r["step"], r["split"], r["loss"]) for r in records]


def _only_run_dir(cwd: Path) -> Path:
    dirs = [p for p in (cwd / "outputs").glob("*/*") if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.fixture
def kmnist_args():
    # 600 - 100 images = 500 for training: the last batch of each epoch is partial.
    data = tiny_data("kmnist")
    # No dropout: ranks draw their own dropout masks, a single process draws others.
    return merged("task=kmnist", *TINY, *data, "model.dropout=0", "trainer.max_steps=24")


@pytest.mark.slow  # the default suite's time; CI runs it with the slow ones
def test_two_process_run_equals_one_process(tmp_path, cache_dir, kmnist_args):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    single.mkdir(), ddp.mkdir()
    done = run_cli(["dlrun", *kmnist_args], single, cache_dir)
    assert done.returncode == 0, done.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    done = run_cli(
        [*torchrun, "--nproc_per_node=2", "-m", "dlrun.train", *kmnist_args], ddp, cache_dir
    )
    assert done.returncode == 0, done.stderr
    assert "2 processes (torchrun)" in done.stderr
    assert done.stdout.count("run dir:") == 1  # only rank 0 reports

    one, two = _only_run_dir(single), _only_run_dir(ddp)
    a, b = _losses(one), _losses(two)
    assert [r[:2] for r in a] == [r[:2] for r in b]
    assert len(a) > 5
    for (_, _, x), (_, _, y) in zip(a, b):
        assert y == pytest.approx(x, rel=1e-4, abs=1e-5)
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2
    assert (two / "checkpoints" / "last.pt").is_file()

    # Resume: both ranks continue from rank 0's checkpoint, into the same directory.
    more = [*merged(*kmnist_args, "trainer.max_steps=30"), f"resume={two}"]
    done = run_cli([*torchrun, "--nproc_per_node=2", "-m", "dlrun.train", *more], ddp, cache_dir)
    assert done.returncode == 0, done.stderr
    assert _only_run_dir(ddp) == two
    assert json.loads((two / "summary.json").read_text())["steps"] == 30


def test_sweep_under_torchrun_is_one_clear_error(tmp_path, cache_dir, kmnist_args):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    done = run_cli(
        [*torchrun, "--nproc_per_node=2", "-m", "dlrun.train", "-m", *kmnist_args],
        tmp_path,
        cache_dir,
    )
    assert done.returncode != 0
    assert "dlrun: error: sweeps (-m) do not run under torchrun" in done.stderr, done.stderr
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()


@pytest.mark.slow  # the longest of its kind; CI runs slow tests when time allows
def test_submitit_local_sweep(tmp_path, cache_dir, kmnist_args):
    """The launcher a SLURM sweep uses, on this machine: each job in its own process."""
    args = ["dlrun", "-m", "hydra/launcher=submitit_local", *kmnist_args, "optimizer.lr=1e-3,1e-2"]
    done = run_cli(args, tmp_path, cache_dir)
    assert done.returncode == 0, done.stderr
    out = sweep_dir(done.stdout, tmp_path)
    assert (out / ".submitit").is_dir()  # submitit's own job records: it did launch them
    rows = read_csv(out / "summary.csv")
    assert sorted(r["optimizer.lr"] for r in rows) == ["0.001", "0.01"]
    assert all(r["status"] == "ok" for r in rows)
    for job in ("0_optimizer.lr=0.001", "1_optimizer.lr=0.01"):
        assert json.loads((out / job / "summary.json").read_text())["steps"] == 24


def test_a_rank_with_a_user_error_waits_for_torchrun_to_stop_it_silently():
    """Rank 0 prints a user error all ranks meet; another rank exiting first would have
    torchrun stop rank 0 before it printed (seen: rank 0 said "stopped by SIGTERM")."""
    code = (
        "from dlrun.cli.train import _after_rank_0; from dlrun.errors import UserError; "
        "print('waiting', flush=True); _after_rank_0(UserError('bad'))"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "waiting\n"
    time.sleep(0.5)
    child.send_signal(signal.SIGTERM)  # what torchrun sends once rank 0 has exited
    out, err = child.communicate(timeout=30)
    assert (child.returncode, err) == (2, "")
