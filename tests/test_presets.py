"""Every study preset composes, sweeps only keys that exist, and runs on tiny data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, TINY_GRU, read_csv, run_cli, sweep_dir, task_of, tiny_data
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from dlrun.engine.run import run
from dlrun.plan.command import groups
from dlrun.plan.config import conf_dir, validate
from dlrun.search import study as tune

PRESETS = groups(conf_dir())["experiment"]
DATES = [*TINY, *TINY_GRU, *tiny_data("dates")]  # dataset.batch_size last


def sweep_params(preset: str) -> dict[str, list[str]]:
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={preset}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params or {}
    parser = OverridesParser.create()
    swept = {}
    for key, value in params.items():
        override = parser.parse_override(f"{key}={value}")
        if override.is_discrete_sweep():
            swept[key] = list(override.sweep_string_iterator())
        else:  # a search's range (hydra/sweeper=optuna): both ends
            ends = tune.parse_param(override).extremes()
            swept[key] = [tune.override_text(key, v).partition("=")[2] for v in ends]
    return swept


def test_each_preset_opens_with_the_command_that_runs_it():
    for preset in PRESETS:
        lines = (conf_dir() / "experiment" / f"{preset}.yaml").read_text().splitlines()
        command = next(line for line in lines if line.startswith("# dlrun"))
        assert f"experiment={preset}" in command
        # A preset that sweeps says so with -m.
        assert ("dlrun -m " in command) == bool(sweep_params(preset)), preset


@pytest.mark.parametrize("preset", [p for p in PRESETS if sweep_params(p)])
def test_every_swept_value_composes_and_validates(tiny_cfg, preset):
    for key, values in sweep_params(preset).items():
        assert len(values) >= 2
        for value in values:
            data = validate(tiny_cfg(f"experiment={preset}", f"{key}={value}"))
            assert data is not None


@pytest.mark.parametrize(
    "preset",  # the ResNet's 10 s: the default suite stays under 10 minutes
    [pytest.param(p, marks=pytest.mark.slow) if p == "kmnist_resnet" else p for p in PRESETS],
)
def test_each_preset_runs_a_few_steps(tiny_cfg, tmp_path, preset):
    # An untrained Transformer decodes to the maximum length: with the algebra presets'
    # 31 characters and training subset that takes most of a minute on a CPU.
    slow = ["trainer.train_eval_size=0", "dataset.max_tgt_len=8"]
    slow = slow if task_of((f"experiment={preset}",)) == "algebra" else []
    cfg = tiny_cfg(
        f"experiment={preset}",
        "trainer.max_steps=2",
        "trainer.eval_every=2",
        "dataset.batch_size=16",
        *slow,
    )
    metrics = run(cfg, tmp_path)
    assert metrics and all(v == v for v in metrics.values())  # numbers, no NaN
    assert (tmp_path / "summary.json").is_file()


@pytest.mark.slow  # the default suite's time; CI runs it with the slow ones
def test_a_sweep_preset_runs_its_jobs(tmp_path, cache_dir):
    data = tiny_data("imdb")
    args = ["dlrun", "-m", "experiment=imdb_logits", "device=cpu", *data]
    result = run_cli([*args, "trainer.max_epochs=2"], tmp_path, cache_dir)
    assert result.returncode == 0, result.stderr
    rows = read_csv(sweep_dir(result.stdout, tmp_path) / "summary.csv")
    assert sorted(r["model.outputs"] for r in rows) == ["1", "2"]
    assert all(r["status"] == "ok" for r in rows)
    assert (sweep_dir(result.stdout, tmp_path) / "summary_accuracy_vs_model.outputs.png").is_file()


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_script(args: list[str], cwd: Path, cache_dir: Path, **env: str):
    bindir = str(Path(sys.executable).parent)
    full_env = {
        **os.environ,
        "PATH": bindir + os.pathsep + os.environ["PATH"],
        "DLRUN_CACHE_DIR": str(cache_dir),
        **env,
    }
    return subprocess.run(
        ["bash", *args], cwd=cwd, env=full_env, text=True, capture_output=True, timeout=300
    )


@pytest.mark.slow  # the default suite's time; CI runs it with the slow ones
def test_run_presets_script_collects_the_tables(tmp_path, cache_dir):
    data = tiny_data("imdb")
    result = run_script(
        [str(SCRIPTS / "run_presets.sh"), "device=cpu", "trainer.max_epochs=1", *data],
        tmp_path,
        cache_dir,
        PRESETS="imdb_logits imdb_seed",
        OUT=str(tmp_path / "out"),
    )
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "out" / "REPORT.md").read_text()
    assert "## imdb_logits" in report and "## imdb_seed" in report
    # Each preset's own table: two jobs for the sweep, one run for the single preset.
    tables = [block for block in report.split("## ")[1:]]
    assert [t.count("| ok |") for t in tables] == [2, 1]
    assert "| model.outputs |" in tables[0]


@pytest.mark.slow  # the default suite's time; CI runs it with the slow ones
def test_sweep_lr_batch_script_runs_a_grid(tmp_path, cache_dir):
    result = run_script(
        [str(SCRIPTS / "sweep_lr_batch.sh"), "dates", *DATES[:-1]],
        tmp_path,
        cache_dir,
        LRS="1e-3",
        BATCHES="32,64",
    )
    assert result.returncode == 0, result.stderr
    rows = read_csv(sweep_dir(result.stdout, tmp_path) / "summary.csv")
    assert sorted(r["dataset.batch_size"] for r in rows) == ["32", "64"]
    assert all(r["status"] == "ok" for r in rows)
    usage = run_script([str(SCRIPTS / "sweep_lr_batch.sh")], tmp_path, cache_dir)
    assert usage.returncode == 2 and "usage:" in usage.stderr
