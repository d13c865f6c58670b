"""Algebra data: generation determinism, the three layouts, held-out splits, statistics."""

from __future__ import annotations

import filecmp
import json
import random
from types import SimpleNamespace

import pytest

from dlrun.errors import ConfigError, UserError
from dlrun.plan.config import validate
from dlrun.tasks.algebra import (
    EXTRAPOLATE_MODULES,
    MODULES,
    AlgebraTask,
    extrapolate_modules,
    generate,
    load_mathematics_dataset,
)

TINY_TRANSFORMER = [
    "model=transformer_seq2seq_cpu",
    "model.d_model=32",
    "model.nhead=2",
    "model.dim_feedforward=64",
]


def algebra_cfg(tiny_cfg, *overrides):
    return validate(
        tiny_cfg(
            "task=algebra",
            *TINY_TRANSFORMER,
            "dataset.train_size=300",
            "dataset.val_size=20",
            "dataset.test_size=30",
            "dataset.batch_size=32",
            *overrides,
        )
    )


def place_value(rng: random.Random) -> tuple[str, str]:
    names = ["units", "tens", "hundreds", "thousands"]
    number = rng.randint(1000, 99999)
    k = rng.randrange(len(names))
    return f"What is the {names[k]} digit of {number}?", str(number // 10**k % 10)


def write_deepmind(root, module="numbers__place_value", per_file=100, seed=0):
    """A tiny copy of DeepMind's released layout, with known contents."""
    rng = random.Random(seed)
    written = {}
    for regime in ("train-easy", "train-medium", "train-hard", "interpolate", "extrapolate"):
        name = module if regime != "extrapolate" else extrapolate_modules(module)[0]
        pairs = [place_value(rng) for _ in range(per_file)]
        (root / regime).mkdir(parents=True, exist_ok=True)
        (root / regime / f"{name}.txt").write_text("".join(f"{q}\n{a}\n" for q, a in pairs))
        written[regime] = pairs
    return written


def test_module_lists_match_the_package():
    md = load_mathematics_dataset()
    assert list(md.filtered_modules["train-easy"]) == MODULES
    assert list(md.filtered_modules["interpolate"]) == MODULES
    assert list(md.filtered_modules["extrapolate"]) == EXTRAPOLATE_MODULES
    assert extrapolate_modules("comparison__sort") == ["comparison__sort_more"]
    assert extrapolate_modules("numbers__place_value") == ["numbers__place_value_big"]
    assert extrapolate_modules("algebra__linear_1d") == []


@pytest.mark.slow  # 5-16 s: the default suite stays under 10 minutes
def test_generation_is_byte_identical_across_processes(tmp_path):
    d = {
        "modules": ["algebra__linear_1d", "numbers__place_value"],
        "difficulties": ["train-easy", "train-hard"],
        "train_size": 40,
        "val_size": 4,
        "test_size": 12,
        "extrapolate_size": 6,
        "seed": 3,
    }
    generate(tmp_path / "a", SimpleNamespace(**d, workers=1))
    generate(tmp_path / "b", SimpleNamespace(**d, workers=2))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.txt"))
    assert [str(f) for f in files] == [
        "extrapolate/numbers__place_value_big.txt",
        "interpolate/algebra__linear_1d.txt",
        "interpolate/numbers__place_value.txt",
        "train-easy/algebra__linear_1d.txt",
        "train-easy/numbers__place_value.txt",
        "train-hard/algebra__linear_1d.txt",
        "train-hard/numbers__place_value.txt",
    ]
    match, mismatch, errors = filecmp.cmpfiles(
        tmp_path / "a", tmp_path / "b", [str(f) for f in files], shallow=False
    )
    assert mismatch == [] and errors == [] and len(match) == 7
    lines = (tmp_path / "a" / "interpolate" / "algebra__linear_1d.txt").read_text().splitlines()
    assert len(lines) == 24 and lines[0].startswith("Solve ")
    big = (tmp_path / "a" / "extrapolate" / "numbers__place_value_big.txt").read_text()
    assert len(big.splitlines()) == 12
    generate(tmp_path / "c", SimpleNamespace(**{**d, "seed": 4}, workers=2))
    assert (tmp_path / "c" / "interpolate" / "algebra__linear_1d.txt").read_text() != "\n".join(
        lines
    ) + "\n"


def test_deepmind_layout(tiny_cfg, tmp_path):
    written = write_deepmind(tmp_path)
    d = algebra_cfg(
        tiny_cfg,
        "dataset.source=deepmind",
        f"dataset.path={tmp_path}",
        "dataset.val_size=10",
        "dataset.test_size=50",
        "dataset.extrapolate_size=40",
    )
    task = AlgebraTask(d)
    task.prepare(tmp_path / "cache")
    src, tgt = task.texts["test"]
    assert list(zip(src, tgt)) == written["interpolate"][:50]
    assert list(zip(*task.texts["extrapolate"])) == written["extrapolate"][:40]
    train = set(task.texts["train"][0])
    held = set(src) | set(task.texts["val"][0]) | set(task.texts["extrapolate"][0])
    assert not train & held
    assert len(task.texts["val"][0]) == 10
    # Train + val come from all three difficulties.
    pool = {q for r in ("train-easy", "train-medium", "train-hard") for q, _ in written[r]}
    assert set(task.texts["train"][0]) | set(task.texts["val"][0]) <= pool


def test_course_layout(tiny_cfg, tmp_path):
    rng = random.Random(1)
    module = tmp_path / "numbers__place_value"
    module.mkdir()
    for stem, n in (("train", 80), ("interpolate", 30)):
        pairs = [place_value(rng) for _ in range(n)]
        (module / f"{stem}.x").write_text("\n".join(q for q, _ in pairs) + "\n")
        (module / f"{stem}.y").write_text("\n".join(a for _, a in pairs) + "\n")
    d = algebra_cfg(
        tiny_cfg,
        "dataset.source=course",
        f"dataset.path={tmp_path}",
        "dataset.val_size=10",
        "dataset.batch_size=16",
    )
    task = AlgebraTask(d)
    task.prepare(tmp_path / "cache")
    assert sorted(task.splits) == ["test", "train", "val"]  # no extrapolate in this layout
    assert task.size("test") == 30 and task.size("val") == 10
    assert task.texts["test"][1][0] in "0123456789"


def test_statistics_on_known_files(tiny_cfg, tmp_path):
    root = tmp_path / "data"
    for regime in ("train-easy", "train-medium", "train-hard", "interpolate"):
        (root / regime).mkdir(parents=True)
    (root / "train-easy" / "numbers__place_value.txt").write_text(
        "What is the units digit of 12?\n2\nWhat is the tens digit of 345?\n4\n"
    )
    (root / "train-medium" / "numbers__place_value.txt").write_text("Q1?\n1\nQ22?\n22\n")
    (root / "train-hard" / "numbers__place_value.txt").write_text("Q333?\n333\n")
    (root / "interpolate" / "numbers__place_value.txt").write_text("Q4444?\n4444\nQ5?\n5\n")
    d = algebra_cfg(
        tiny_cfg,
        "dataset.source=deepmind",
        f"dataset.path={root}",
        "dataset.val_size=1",
        "dataset.train_size=10",
        "dataset.batch_size=1",
    )
    task = AlgebraTask(d)
    task.prepare(tmp_path / "cache")
    stats = task.stats()
    test = stats["numbers__place_value/test"]
    assert test == {
        "examples": 2,
        "question_chars": 9,
        "answer_chars": 5,
        "mean_question_len": 4.5,
        "mean_answer_len": 2.5,
    }
    train, val = stats["numbers__place_value/train"], stats["numbers__place_value/val"]
    assert train["examples"] + val["examples"] == 5
    assert train["question_chars"] + val["question_chars"] == 30 + 30 + 3 + 4 + 5
    assert train["answer_chars"] + val["answer_chars"] == 1 + 1 + 1 + 2 + 3
    # Vocabularies come from the training split alone (4 specials + its characters).
    assert stats["vocab"]["target"] == 4 + len(set("".join(task.texts["train"][1])))


def test_missing_files_and_bad_modules(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError) as info:
        algebra_cfg(
            tiny_cfg,
            "dataset.source=deepmind",
            f"dataset.path={tmp_path}",
            "dataset.modules=[numbers__place_valeu,comparison__sort]",
        )
    text = str(info.value)
    assert "unknown module 'numbers__place_valeu' (did you mean 'numbers__place_value'?)" in text
    assert f"dataset.path={tmp_path}: missing train-easy/comparison__sort.txt" in text
    with pytest.raises(ConfigError, match="dataset.path: required with dataset.source=course"):
        algebra_cfg(tiny_cfg, "dataset.source=course")


def test_odd_file_is_a_user_error(tiny_cfg, tmp_path):
    write_deepmind(tmp_path)
    (tmp_path / "interpolate" / "numbers__place_value.txt").write_text("Q?\n1\nQ?\n")
    d = algebra_cfg(tiny_cfg, "dataset.source=deepmind", f"dataset.path={tmp_path}")
    with pytest.raises(UserError, match="odd number of lines"):
        AlgebraTask(d).prepare(tmp_path / "cache")


def test_stats_file_in_the_run_dir(tiny_cfg, tmp_path):
    from dlrun.engine.run import run

    write_deepmind(tmp_path / "data")
    cfg = tiny_cfg(
        "task=algebra",
        *TINY_TRANSFORMER,
        "dataset.source=deepmind",
        f"dataset.path={tmp_path / 'data'}",
        "dataset.val_size=20",
        "dataset.test_size=30",
        "dataset.batch_size=32",
        "trainer.max_steps=4",
        "trainer.eval_every=2",
        "trainer.train_eval_size=16",
    )
    metrics = run(cfg, tmp_path / "run")
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["numbers__place_value/test"]["examples"] == 30
    assert {"test/exact_match", "extrapolate/exact_match", "test/cer"} <= set(metrics)
    splits = {
        json.loads(line)["split"]
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    }
    assert splits == {"train", "val", "train_subset", "test", "extrapolate"}


def test_mixture_of_modules(tiny_cfg, tmp_path):
    write_deepmind(tmp_path, "numbers__place_value", seed=1)
    write_deepmind(tmp_path, "comparison__sort", seed=2)
    d = algebra_cfg(
        tiny_cfg,
        "dataset.source=deepmind",
        f"dataset.path={tmp_path}",
        "dataset.modules=[numbers__place_value,comparison__sort]",
        "dataset.val_size=10",
        "dataset.test_size=20",
        "dataset.train_size=200",
    )
    task = AlgebraTask(d)
    task.prepare(tmp_path / "cache")
    assert task.size("test") == 40 and task.size("val") == 20
    labels = task.groups["train"]
    assert len(labels) == task.size("train")
    assert set(labels[:50]) == {"numbers__place_value", "comparison__sort"}  # interleaved
    stats = task.stats()
    assert stats["comparison__sort/test"]["examples"] == 20
    assert stats["numbers__place_value/test"]["examples"] == 20
