"""Shared fixtures: a tiny dates config composed with Hydra, outputs under tmp_path."""

from __future__ import annotations

import atexit
import csv
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hydra import compose
from omegaconf import OmegaConf

from dlrun.plan.compose import initialized
from dlrun.plan.config import conf_dir
from dlrun.registry import list_tasks, model_entry, task_entry
from dlrun.testing import tiny

# Small enough that a run takes seconds on a 2-core CPU.
TINY = [
    "device=cpu",
    "trainer.max_steps=20",
    "trainer.eval_every=10",
    "trainer.log_every=5",
    "trainer.num_samples=5",
]
_CORPORA: list[Path] = []  # the session's folder of tiny data sets, made on first use


@functools.cache
def tiny_data(task: str) -> tuple[str, ...]:
    """The task's settings for a seconds-long run (``dlrun.testing.tiny``); a task that
    reads files writes its tiny data set once per session."""
    if not _CORPORA:
        _CORPORA.append(Path(tempfile.mkdtemp(prefix="dlrun-corpora-")))
        atexit.register(shutil.rmtree, _CORPORA[0], ignore_errors=True)
    return tuple(tiny(task, _CORPORA[0]))


def merged(*overrides: str) -> list[str]:
    """Overrides with a later value for a key replacing an earlier one.

    dlrun refuses a key given twice on one command line; tests that start from
    TINY and change one of its keys build their command lines with this.
    """
    out: dict[str, str] = {}
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+")
        out.pop(key, None)  # the later value takes the later place
        out[key] = o
    return list(out.values())


# Applied when a test keeps the default model (gru_seq2seq).
TINY_GRU = ["model.hidden_size=32", "model.embedding_size=16"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One data cache for the whole session: generated data are reused across tests."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def corpora() -> dict[str, Path]:
    """The tiny data set of each task that reads files (the ``dataset.path`` of its tiny)."""
    paths = {}
    for task in list_tasks():
        for override in tiny_data(task):
            key, _, value = override.partition("=")
            if key == "dataset.path":
                paths[task] = Path(value)
    return paths


def task_of(overrides: tuple[str, ...]) -> str:
    """The task a command line selects: task=X, or the task an experiment preset picks."""
    for o in overrides:
        key, _, value = o.partition("=")
        if key == "task":
            return value
        if key == "experiment":
            with initialized(conf_dir()):
                return compose("config", overrides=[o]).task.name
    return "dates"


def make_cfg(cache_dir: Path, *overrides: str):
    chosen = {o.split("=")[0] for o in overrides}
    sizes = [] if chosen & {"model", "task", "experiment"} else TINY_GRU
    data = tiny_data(task_of(overrides))
    with initialized(conf_dir()):
        return compose(
            "config",
            overrides=[*TINY, *data, *sizes, f"paths.cache_dir={cache_dir}", *overrides],
        )


def fitting_overrides(group: str, choice: str) -> list[str]:
    """The overrides that select ``choice`` of ``group`` with a task it fits: a dataset
    is selected by its task; a model is composed with the first task of its kind."""
    if group == "dataset":
        return [f"task={choice}"]
    if group == "model":
        kind = model_entry(OmegaConf.load(conf_dir() / "model" / f"{choice}.yaml").name).kind
        task = next(t for t in list_tasks() if task_entry(t).obj.model_kind == kind)
        return [f"task={task}", f"model={choice}"]
    return [f"{group}={choice}"]


def model_cfg(option: str, **changes):
    """The typed config of model option ``option`` (conf/model/OPTION.yaml), with ``changes``."""
    from dlrun.plan.config import typed
    from dlrun.registry import model_entry

    with initialized(conf_dir()):
        node = OmegaConf.to_container(compose("config", overrides=[f"model={option}"]).model)
    node.update(changes)
    return typed(model_entry(node["name"]).schema, node)


@pytest.fixture
def tiny_cfg(cache_dir):
    """A factory: tiny_cfg('optimizer.lr=1e-2', ...) -> composed DictConfig."""
    return lambda *overrides: make_cfg(cache_dir, *overrides)


def save_run_config(cfg, run_dir: Path) -> None:
    """What Hydra writes beside a run: ``.hydra/config.yaml``, which predict reads."""
    (run_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")


def run_cli(
    args: list[str],
    cwd: Path,
    cache_dir: Path,
    stdin: str | None = None,
    timeout: float = 240,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run a console script the way a user would, in ``cwd`` (``env``: more variables)."""
    env = {**os.environ, "DLRUN_CACHE_DIR": str(cache_dir), **(env or {})}
    bindir = Path(sys.executable).parent
    exe = args[0] if os.path.isabs(args[0]) else str(bindir / args[0])
    if not Path(exe).exists():  # console scripts may live elsewhere on PATH
        exe = args[0]
    return subprocess.run(
        [exe, *args[1:]],
        cwd=cwd,
        env=env,
        input=stdin,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def sweep_dir(stdout: str, cwd: Path) -> Path:
    """The sweep directory a `dlrun -m` run printed in its summary line."""
    return cwd / re.search(r"sweep summary \(.*\): (.+)", stdout).group(1)


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))
