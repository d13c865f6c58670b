"""Validation (and test) sizes: fractions of the data a task splits, refused in one line
when they leave too little to train on; counts of generated examples otherwise."""

from __future__ import annotations

import pytest
from conftest import TINY, merged, run_cli, tiny_data

from dlrun.errors import ConfigError, UserError
from dlrun.plan.config import validate
from dlrun.tasks.algebra import AlgebraTask
from dlrun.tasks.kmnist import KmnistTask

TOO_MUCH = {
    "images": ("dataset.val_fraction=0.3", "dataset.test_fraction=0.3"),
    "tabular": ("dataset.val_fraction=0.4", "dataset.test_fraction=0.2"),
    "text_pairs": ("dataset.val_fraction=0.5", "dataset.test_fraction=0.1"),
    "kmnist": ("dataset.val_fraction=0.8",),
}


@pytest.mark.parametrize("task", sorted(TOO_MUCH))
def test_fractions_that_leave_too_little_to_train_on_are_one_line(tiny_cfg, task):
    with pytest.raises(ConfigError) as info:
        validate(tiny_cfg(*merged(f"task={task}", *tiny_data(task), *TOO_MUCH[task])))
    (problem,) = info.value.problems
    keys = " + ".join(o.partition("=")[0] for o in TOO_MUCH[task])
    assert problem.startswith(f"{keys} = ") and "too few left to train on; lower" in problem


@pytest.mark.parametrize("task", sorted(TOO_MUCH))
def test_half_held_out_is_allowed(tiny_cfg, task):
    half = [o.partition("=")[0] + "=0.25" for o in TOO_MUCH[task]]
    if len(half) == 1:
        half = [half[0].replace("0.25", "0.5")]
    validate(tiny_cfg(*merged(f"task={task}", *tiny_data(task), *half)))


def test_tabular_with_a_test_table_checks_the_validation_fraction_alone(tiny_cfg, corpora):
    two_way = [
        "task=tabular",
        *tiny_data("tabular"),
        f"dataset.test_path={corpora['tabular']}",
        "dataset.test_fraction=0.9",  # unused with a test table
    ]
    validate(tiny_cfg(*merged(*two_way, "dataset.val_fraction=0.3")))
    with pytest.raises(ConfigError, match=r"dataset.val_fraction = 0.6: holds out more than"):
        validate(tiny_cfg(*merged(*two_way, "dataset.val_fraction=0.6")))


def test_kmnist_holds_out_a_fraction_of_its_training_images(tiny_cfg):
    cfg = validate(
        tiny_cfg(*merged("task=kmnist", *tiny_data("kmnist"), "dataset.val_fraction=0.25"))
    )
    task = KmnistTask(cfg)
    task.prepare(cfg.paths.cache_dir)
    n = task.size("train") + task.size("val")
    assert task.size("val") == round(n * 0.25) and task.size("train") == n - round(n * 0.25)


def test_kmnist_fraction_on_the_command_line_is_one_line(tmp_path, cache_dir):
    result = run_cli(
        ["dlrun", *merged(*TINY, "task=kmnist", *tiny_data("kmnist"), "dataset.val_fraction=0.9")],
        tmp_path,
        cache_dir,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "dataset.val_fraction = 0.9: holds out more than 0.5 of the training images" in (
        result.stderr
    )
    assert not (tmp_path / "outputs").exists()


def test_algebra_from_files_refuses_a_validation_set_larger_than_training(tiny_cfg, tmp_path):
    root = tmp_path / "course" / "numbers__place_value"
    root.mkdir(parents=True)
    (root / "train.x").write_text("".join(f"Q{i}?\n" for i in range(10)))
    (root / "train.y").write_text("".join(f"{i}\n" for i in range(10)))
    (root / "interpolate.x").write_text("Q100?\n")
    (root / "interpolate.y").write_text("100\n")
    course = [
        "task=algebra",
        *tiny_data("algebra"),
        "dataset.source=course",
        f"dataset.path={root.parent}",
        "dataset.train_size=100",
        "dataset.batch_size=1",
        "dataset.extrapolate_size=0",
    ]
    cfg = validate(tiny_cfg(*merged(*course, "dataset.val_size=6")))
    with pytest.raises(
        UserError, match=r"^dataset.val_size=6: holds out more than half of the 10 "
    ):
        AlgebraTask(cfg).prepare(tmp_path / "cache")
    task = AlgebraTask(validate(tiny_cfg(*merged(*course, "dataset.val_size=5"))))
    task.prepare(tmp_path / "cache")
    assert task.size("val") == 5 and task.size("train") == 5


def test_a_kmnist_run_from_before_fractions_still_loads():
    from dlrun.plan.config import migrate

    old = {"dataset": {"name": "kmnist", "val_size": 5000, "seed": 0}, "trainer": {"seed": 0}}
    new = migrate(old)
    assert new["dataset"] == {"name": "kmnist", "seed": 0, "val_fraction": 5000 / 60000}
    assert new["trainer"] == {
        "seed": 0,
        "folds": None,
        "checkpoint_every": None,
        "keep": "best",
        "ema": None,
        "group_by_length": False,
    }
