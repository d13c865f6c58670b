"""The console scripts as a user runs them: errors are one line, predict round-trips."""

from __future__ import annotations

import multiprocessing
import re
import shutil

import pytest
from conftest import TINY, TINY_GRU, run_cli, tiny_data

from dlrun.cli.train import _unique_dir
from dlrun.engine.device import resolve_device
from dlrun.errors import UserError
from dlrun.plan.command import expand_home
from dlrun.plan.config import DeviceConfig
from dlrun.registry import list_tasks


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    """One tiny run through the `dlrun` console script, shared by the predict tests."""
    cwd = tmp_path_factory.mktemp("cli")
    result = run_cli(["dlrun", *TINY, *tiny_data("dates"), *TINY_GRU], cwd, cache_dir)
    assert result.returncode == 0, result.stderr
    run_dir = re.search(r"run dir: (.+)", result.stdout).group(1)
    return cwd, run_dir, result


def test_dlrun_writes_a_timestamped_run_dir(trained):
    cwd, run_dir, result = trained
    assert re.search(r"outputs/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", run_dir)
    assert "test/exact_match=" in result.stdout
    assert (cwd / run_dir / "dlrun.log").is_file() or (cwd / "outputs").is_dir()


def test_predict_round_trip(trained, cache_dir):
    cwd, run_dir, _ = trained
    lines = (cwd / run_dir / "samples.txt").read_text().splitlines()[2:]
    sources = [line.split("\t")[1] for line in lines]
    expected = [line.split("\t")[3] for line in lines]
    by_args = run_cli(["dlrun-predict", run_dir, *sources], cwd, cache_dir)
    assert by_args.returncode == 0, by_args.stderr
    # input<TAB>prediction, as every task prints (no probability for a decoded sequence)
    assert by_args.stdout.splitlines() == [f"{s}\t{e}" for s, e in zip(sources, expected)]
    by_stdin = run_cli(["dlrun-predict", run_dir], cwd, cache_dir, stdin="\n".join(sources))
    assert by_stdin.stdout == by_args.stdout
    # Normalization as in training: case and spacing do not matter; unseen characters are unk.
    shouted = run_cli(
        ["dlrun-predict", run_dir, sources[0].upper().replace(" ", "  "), "№"], cwd, cache_dir
    )
    assert shouted.returncode == 0
    assert shouted.stdout.splitlines()[0].split("\t")[1] == expected[0]


USER_ERRORS = [
    (
        ["task=nope"],
        rf"unknown task 'nope'; valid: {', '.join(list_tasks())}; choose one with task=NAME",
    ),
    (["model=gru_seq2sq"], r"unknown model 'gru_seq2sq'; valid: .*did you mean 'gru_seq2seq'"),
    (
        ["optimizer.lr=-1", "dataset.batch_size=0"],
        r"invalid config \(2 problems\): .*optimizer.lr=-1: must be > 0.*dataset.batch_size=0",
    ),
    (["optimizer.lrr=0.1"], r"unknown config key 'optimizer.lrr' \(did you mean 'optimizer.lr'"),
    (["model.name=nope"], r"model.name: unknown model 'nope'"),
    (["resume=does/not/exist"], r"resume=does/not/exist: not a dlrun run directory"),
    (["dataset.locales=[xx]"], r"unknown Babel locale 'xx'"),
    (["-m", "--cfg", "job"], r"--cfg and --multirun cannot be combined"),
    (
        ["dataset=text_pairs"],
        r"dataset=text_pairs is the data of task=text_pairs, not of task=dates",
    ),
    (
        ["-m", "hydra/launcher=submitit_slurn"],
        r"unknown hydra/launcher 'submitit_slurn'; valid: basic, .*did you mean 'submitit_slurm'",
    ),
    (["task=kmnist"], r"KMNIST not found in data/KMNIST/raw: .*dataset.download=true"),
    (
        ["task=imdb"],
        r"dataset.path=data/aclImdb_v1.tar.gz: no such file or folder; .*dataset.download=true",
    ),
    (["task=imdb", "optimizer=adam"], r"model.sparse_grad=true works with plain SGD only"),
]


@pytest.mark.parametrize(("args", "message"), USER_ERRORS)
def test_user_errors_are_one_line(tmp_path, cache_dir, args, message):
    result = run_cli(["dlrun", *args], tmp_path, cache_dir)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlrun: error: "), result.stderr
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "outputs").exists()  # nothing half-written


def test_a_home_path_on_the_command_line(tmp_path, cache_dir, monkeypatch):
    # The shell leaves ~ alone after "dataset.path=" and Hydra cannot parse it: dlrun expands it.
    home = tmp_path / "home"
    home.mkdir()
    pairs = next(o for o in tiny_data("text_pairs") if o.startswith("dataset.path="))
    shutil.copy(pairs.partition("=")[2], home / "pairs.tsv")
    env = {"HOME": str(home)}
    args = ["dlrun-stats", "task=text_pairs", "dataset.path=~/pairs.tsv"]
    result = run_cli(args, tmp_path, cache_dir, env=env)
    assert result.returncode == 0, result.stderr
    missing = run_cli(
        ["dlrun", "task=text_pairs", "dataset.path=~/no.tsv"], tmp_path, cache_dir, env=env
    )
    assert missing.returncode == 2
    assert f"dataset.path={home}/no.tsv: no such file" in missing.stderr
    # A sweep's values, and nothing but a value's leading ~.
    monkeypatch.setenv("HOME", "/h")
    sweep = ["-m", "dataset.path=~/a,~,~/c", "x=[~/d,~]", "~trainer.x", "task.name=a~b"]
    expanded = ["-m", "dataset.path=/h/a,/h,/h/c", "x=[/h/d,/h]", "~trainer.x", "task.name=a~b"]
    assert expand_home(sweep) == expanded


def test_predict_errors(tmp_path, cache_dir):
    result = run_cli(["dlrun-predict", str(tmp_path / "missing"), "x"], tmp_path, cache_dir)
    assert result.returncode == 2
    expected = f"dlrun-predict: error: {tmp_path / 'missing'}: no such run directory"
    assert result.stderr.strip() == expected
    (tmp_path / "half").mkdir()
    result = run_cli(["dlrun-predict", str(tmp_path / "half"), "x"], tmp_path, cache_dir)
    assert result.returncode == 2 and "not a complete dlrun run directory" in result.stderr
    # A row of features that starts with a minus sign reads as an option, unless after --.
    row = ["dlrun-predict", str(tmp_path / "half"), "1,2", "-0.5,0.5"]
    result = run_cli(row, tmp_path, cache_dir)
    assert result.returncode == 2
    assert "-0.5,0.5; an input that starts with '-' goes after '--'" in result.stderr
    result = run_cli([*row[:3], "--", row[3]], tmp_path, cache_dir)
    assert result.returncode == 2 and "not a complete dlrun run directory" in result.stderr


def test_cfg_job_prints_the_composed_config(tmp_path, cache_dir):
    result = run_cli(["dlrun", "--cfg", "job", "model.hidden_size=7"], tmp_path, cache_dir)
    assert result.returncode == 0
    assert "name: gru_seq2seq" in result.stdout and "hidden_size: 7" in result.stdout


def test_cuda_missing_is_a_user_error(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = DeviceConfig(type="cuda", amp="auto", compile=False, threads=None, tf32=True, data="auto")
    with pytest.raises(UserError, match="device=cuda but .* sees no CUDA GPU; use device=cpu"):
        resolve_device(cfg)


def _claim(args):
    return _unique_dir(*args)


@pytest.mark.slow  # 5-16 s: the default suite stays under 10 minutes
def test_runs_in_the_same_second_get_different_dirs(tmp_path):
    base = str(tmp_path / "outputs" / "2026-01-01" / "12-00-00")
    with multiprocessing.get_context("spawn").Pool(4, maxtasksperchild=1) as pool:
        dirs = pool.map(_claim, [(base,)] * 8)
    assert len(set(dirs)) == 8
    assert _unique_dir(base) == _unique_dir(base)  # memoized within one process


def test_version_is_dlrun_s_and_hydra_flags_still_work(tmp_path, cache_dir):
    from dlrun import __version__

    version = run_cli(["dlrun", "--version"], tmp_path, cache_dir)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith(f"dlrun {__version__} (Hydra ")
    shown = run_cli(["dlrun", "--cfg", "job", "trainer.max_steps=3"], tmp_path, cache_dir)
    assert shown.returncode == 0, shown.stderr
    assert "max_steps: 3" in shown.stdout
    assert not (tmp_path / "outputs").exists()
