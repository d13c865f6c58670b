"""Shared fixtures: a tiny dates config composed with Hydra, outputs under tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from dlrun.train import CONF_DIR

# Small enough that a run takes seconds on a 2-core CPU.
TINY = [
    "device=cpu",
    "dataset.train_size=768",
    "dataset.val_size=128",
    "dataset.test_size=128",
    "dataset.batch_size=64",
    "trainer.max_steps=20",
    "trainer.eval_every=10",
    "trainer.log_every=5",
    "trainer.num_samples=5",
]


# Applied when a test keeps the default model (gru_seq2seq).
TINY_GRU = ["model.hidden_size=32", "model.embedding_size=16"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One data cache for the whole session: generated data are reused across tests."""
    return tmp_path_factory.mktemp("cache")


def make_cfg(cache_dir: Path, *overrides: str):
    chosen = {o.split("=")[0] for o in overrides}
    sizes = [] if chosen & {"model", "task", "experiment"} else TINY_GRU
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(
            "config", overrides=[*TINY, *sizes, f"paths.cache_dir={cache_dir}", *overrides]
        )


@pytest.fixture
def tiny_cfg(cache_dir):
    """A factory: tiny_cfg('optimizer.lr=1e-2', ...) -> composed DictConfig."""
    return lambda *overrides: make_cfg(cache_dir, *overrides)


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
