"""init_from=RUN_DIR: a new run that starts from a trained run's weights under a new config."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import TINY, merged, tiny_data

from dlrun.engine.run import run
from dlrun.errors import UserError
from dlrun.plan.command import plan_command
from dlrun.plan.config import conf_dir
from dlrun.rundir.layout import RunDir
from dlrun.rundir.read import read_jsonl
from dlrun.testing import fake

SMALL = ("task=tabular", "model.width=8", "model.depth=1")


def command(cache_dir: Path, out: Path, *overrides: str) -> list[str]:
    """A tiny tabular command line writing under ``out``."""
    base = [*TINY, *tiny_data("tabular"), *SMALL, f"paths.cache_dir={cache_dir}"]
    return merged(*base, f"paths.output_dir={out}", *overrides)


def files(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def source(tmp_path_factory, cache_dir) -> Path:
    """A trained tiny tabular run."""
    root = tmp_path_factory.mktemp("source")
    plan = plan_command(command(cache_dir, root), conf_dir())
    run(plan.config, root / "run")
    return root / "run"


def test_a_fine_tune_starts_from_the_runs_weights_and_leaves_it_as_it_was(
    source, cache_dir, tmp_path
):
    before = files(source)
    argv = command(
        cache_dir,
        tmp_path,
        f"init_from={source}",
        "optimizer.lr=1e-4",
        "optimizer.weight_decay=0.0",
        "trainer.max_steps=4",
        "trainer.eval_every=2",
        "trainer.eval_at_start=true",
    )
    plan = plan_command(argv, conf_dir())
    assert plan.init is not None and plan.init.checkpoint == RunDir(source).best
    run(plan.config, tmp_path / "tuned", None, plan.init)
    tuned = RunDir(tmp_path / "tuned")
    first = next(r for r in read_jsonl(tuned.metrics) if r["split"] == "val")
    theirs = json.loads(RunDir(source).summary.read_text())
    assert first["step"] == 0
    # The weights were loaded: the first evaluation is the source's kept one, exactly.
    assert first["loss"] == pytest.approx(theirs["best"]["val/loss"], rel=1e-5)
    assert first["accuracy"] == pytest.approx(theirs["best"]["val/accuracy"])
    summary = json.loads(tuned.summary.read_text())
    assert summary["init_from"] == {
        "path": str(source.resolve()),
        "checkpoint": "best.pt",
        "step": theirs["best"]["step"],
    }
    assert summary["steps"] == 4  # a fresh schedule: its own step count
    assert files(source) == before  # the handed run is read, never written


def test_the_last_checkpoint_is_named_by_its_path(source, cache_dir, tmp_path):
    plan = plan_command(
        command(cache_dir, tmp_path, f"init_from={RunDir(source).last}"), conf_dir()
    )
    assert plan.init.record()["checkpoint"] == "last.pt"
    # A model key that leaves the weights' names and shapes as they were may change.
    argv = command(cache_dir, tmp_path, f"init_from={source}", "model.activation=tanh")
    assert plan_command(argv, conf_dir()).init is not None
    with pytest.raises(UserError, match="checkpoints/best.pt or checkpoints/last.pt"):
        plan_command(command(cache_dir, tmp_path, f"init_from={source}/stats.pt"), conf_dir())


def test_a_key_that_shapes_the_weights_is_refused_by_name(source, cache_dir, tmp_path):
    before = files(source)
    for key, value in (("model.width", "16"), ("model.depth", "2")):
        argv = command(cache_dir, tmp_path, f"init_from={source}", f"{key}={value}")
        with pytest.raises(UserError) as err:
            plan_command(argv, conf_dir())
        message = str(err.value)
        assert f"{key}={value} here" in message and "\n" not in message
    assert not any(tmp_path.iterdir())  # refused before anything is written
    assert files(source) == before


def test_a_changed_vocabulary_is_refused_never_remapped(source, cache_dir, tmp_path):
    other = fake.write_points(tmp_path / "data")
    text = other.read_text().replace(",other\n", ",oval\n")  # another category word
    other.write_text(text)
    argv = command(cache_dir, tmp_path / "out", f"init_from={source}", f"dataset.path={other}")
    plan = plan_command(argv, conf_dir())  # the data is read by the run, not the plan
    with pytest.raises(UserError, match="categories of shape are not that run's"):
        run(plan.config, tmp_path / "out" / "run", None, plan.init)
    assert not RunDir(tmp_path / "out" / "run").checkpoints.exists()


def test_init_from_and_resume_together_are_refused(source, cache_dir, tmp_path):
    with pytest.raises(UserError, match="give one of them"):
        plan_command([f"resume={source}", f"init_from={source}"], conf_dir())
    with pytest.raises(UserError, match="init_from=.*no such run directory"):
        plan_command(command(cache_dir, tmp_path, f"init_from={tmp_path}/nothing"), conf_dir())
