"""Shared fixtures: a tiny dates config composed with Hydra, outputs under tmp_path."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from corpora import (
    write_aclimdb,
    write_image_folder,
    write_kmnist,
    write_points,
    write_text_pairs,
)
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dlrun.config import conf_dir

# Small enough that a run takes seconds on a 2-core CPU.
TINY = [
    "device=cpu",
    "trainer.max_steps=20",
    "trainer.eval_every=10",
    "trainer.log_every=5",
    "trainer.num_samples=5",
]
# Per task; {imdb} and {kmnist} are the tiny corpora the session writes.
TINY_DATA = {
    "dates": [
        "dataset.train_size=768",
        "dataset.val_size=128",
        "dataset.test_size=128",
        "dataset.batch_size=64",
    ],
    "imdb": ["dataset.path={imdb}", "dataset.val_size=40", "dataset.batch_size=16"],
    "kmnist": ["dataset.path={kmnist}", "dataset.val_size=100", "dataset.batch_size=32"],
}
TINY_DATA["algebra"] = [*TINY_DATA["dates"], "dataset.extrapolate_size=50"]
TINY_DATA["text_pairs"] = ["dataset.path={text_pairs}", "dataset.batch_size=32"]
TINY_DATA["images"] = ["dataset.path={images}", "dataset.image_size=16", "dataset.batch_size=16"]
TINY_DATA["tabular"] = ["dataset.path={tabular}", "dataset.target=labels", "dataset.batch_size=16"]


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
def corpora(tmp_path_factory) -> dict[str, Path]:
    """A tiny aclImdb tree, tiny KMNIST IDX files and a parallel TSV, written once per session."""
    root = tmp_path_factory.mktemp("corpora")
    return {
        "imdb": write_aclimdb(root),
        "kmnist": write_kmnist(root / "KMNIST" / "raw"),
        "text_pairs": write_text_pairs(root / "pairs.tsv"),
        "images": write_image_folder(root / "images"),
        "tabular": write_points(root / "points.csv"),
    }


def task_of(overrides: tuple[str, ...]) -> str:
    """The task a command line selects: task=X, or the task an experiment preset picks."""
    for o in overrides:
        key, _, value = o.partition("=")
        if key == "task":
            return value
        if key == "experiment":
            with initialize_config_dir(str(conf_dir()), version_base="1.3"):
                return compose("config", overrides=[o]).task.name
    return "dates"


def make_cfg(cache_dir: Path, corpora: dict[str, Path], *overrides: str):
    chosen = {o.split("=")[0] for o in overrides}
    sizes = [] if chosen & {"model", "task", "experiment"} else TINY_GRU
    data = [o.format(**corpora) for o in TINY_DATA[task_of(overrides)]]
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose(
            "config",
            overrides=[*TINY, *data, *sizes, f"paths.cache_dir={cache_dir}", *overrides],
        )


def model_cfg(option: str, **changes):
    """The typed config of model option ``option`` (conf/model/OPTION.yaml), with ``changes``."""
    from dlrun.config import typed
    from dlrun.registry import model_entry

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        node = OmegaConf.to_container(compose("config", overrides=[f"model={option}"]).model)
    node.update(changes)
    return typed(model_entry(node["name"]).schema, node)


@pytest.fixture
def tiny_cfg(cache_dir, corpora):
    """A factory: tiny_cfg('optimizer.lr=1e-2', ...) -> composed DictConfig."""
    return lambda *overrides: make_cfg(cache_dir, corpora, *overrides)


def save_run_config(cfg, run_dir: Path) -> None:
    """What Hydra writes beside a run: ``.hydra/config.yaml``, which predict reads."""
    (run_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")


def run_cli(
    args: list[str], cwd: Path, cache_dir: Path, stdin: str | None = None, timeout: float = 240
) -> subprocess.CompletedProcess:
    """Run a console script the way a user would, in ``cwd``."""
    env = {**os.environ, "DLRUN_CACHE_DIR": str(cache_dir)}
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
