"""task=text_pairs: any parallel TSV, read, split and learnt by every seq2seq model."""

from __future__ import annotations

import pytest

from dlrun.engine.run import run
from dlrun.errors import ConfigError, UserError
from dlrun.plan.config import validate
from dlrun.rundir.read import read_jsonl
from dlrun.tasks.text_pairs import TextPairsTask, read_pairs


def test_read_pairs_columns_reverse_and_errors(tmp_path):
    path = tmp_path / "spa.txt"
    path.write_text("Go.\tVe.\tCC-BY #1\n\nHi.\tHola.\r\n", encoding="utf-8")
    assert read_pairs(path) == [("Go.", "Ve."), ("Hi.", "Hola.")]
    assert read_pairs(path, reverse=True) == [("Ve.", "Go."), ("Hola.", "Hi.")]
    path.write_text("a\tb\nno tab here\n")
    with pytest.raises(UserError, match=r"spa.txt, line 2: expected source<TAB>target"):
        read_pairs(path)


def test_splits_are_disjoint_seeded_and_filtered(tiny_cfg, tmp_path):
    lines = [f"s{i}\tt{i}" for i in range(200)] + ["x" * 30 + "\tlong source"]
    (tmp_path / "p.tsv").write_text("\n".join(lines) + "\n")
    cfg = tiny_cfg(
        "task=text_pairs",
        f"dataset.path={tmp_path / 'p.tsv'}",
        "dataset.max_src_len=20",
        "dataset.test_fraction=0.2",
    )
    splits = []
    for _ in range(2):
        task = TextPairsTask(validate(cfg))
        splits.append(task.load_pairs(tmp_path))
    a, b = splits
    assert a == b  # the same seed, the same split
    assert [len(a[s]) for s in ("train", "val", "test")] == [140, 20, 40]  # long pair left out
    seen = [p for s in a.values() for p in s]
    assert len(set(seen)) == 200


def test_a_short_run_learns_and_lowers_cer(tiny_cfg, tmp_path):
    cfg = tiny_cfg(
        "task=text_pairs",
        "model.hidden_size=64",
        "trainer.max_steps=200",
        "trainer.max_epochs=null",
        "trainer.eval_every=100",
        "trainer.eval_at_start=true",
        "optimizer.lr=3e-3",
    )
    metrics = run(cfg, tmp_path)
    val = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if r["split"] == "val"]
    assert val[0]["step"] == 0 and val[-1]["cer"] < val[0]["cer"] / 2
    assert metrics["test/cer"] < 0.5


def test_missing_file_and_bad_fractions_are_config_errors(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.path=.*nope.tsv: no such file"):
        validate(tiny_cfg("task=text_pairs", f"dataset.path={tmp_path / 'nope.tsv'}"))
    with pytest.raises(ConfigError, match=r"holds out more than 0.5 of the pairs"):
        validate(
            tiny_cfg("task=text_pairs", "dataset.val_fraction=0.5", "dataset.test_fraction=0.5")
        )
