"""Every sequence model on every sequence task; place value is learnt; predict round-trips."""

from __future__ import annotations

import pytest
from test_algebra import write_deepmind

from dlrun.cli.predict import main as predict_main
from dlrun.engine.run import run
from dlrun.rundir.read import read_jsonl

MODELS = {
    "gru_seq2seq": ["model.hidden_size=24", "model.embedding_size=8"],
    "transformer_seq2seq_cpu": ["model.d_model=16", "model.nhead=2", "model.dim_feedforward=32"],
    "lstm_attention_seq2seq": ["model.hidden_size=24", "model.embedding_size=8"],
}


@pytest.fixture(scope="module")
def place_value_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("mathematics")
    write_deepmind(root, per_file=1500, seed=5)
    return root


def task_overrides(task: str, data_dir) -> list[str]:
    if task == "dates":
        return ["task=dates"]
    return [
        "task=algebra",
        "dataset.source=deepmind",
        f"dataset.path={data_dir}",
        "dataset.val_size=100",
        "dataset.test_size=100",
        "dataset.batch_size=64",
    ]


@pytest.mark.parametrize("task", ["dates", "algebra"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_model_on_every_sequence_task(tiny_cfg, tmp_path, place_value_dir, task, model):
    cfg = tiny_cfg(
        *task_overrides(task, place_value_dir),
        f"model={model}",
        *MODELS[model],
        "trainer.max_steps=4",
        "trainer.eval_every=2",
        "decode.beam_size=2",
    )
    metrics = run(cfg, tmp_path)
    assert 0.0 <= metrics["test/exact_match"] <= 1.0
    assert metrics["val/loss"] > 0 and 0.0 <= metrics["test/cer"]


@pytest.mark.slow  # CI runs the slow tests when its time allows
def test_place_value_exact_match_rises(tiny_cfg, tmp_path, place_value_dir):
    cfg = tiny_cfg(
        *task_overrides("algebra", place_value_dir),
        "model=lstm_attention_seq2seq",
        "model.hidden_size=64",
        "model.embedding_size=16",
        "optimizer.lr=3e-3",
        "dataset.batch_size=128",
        "trainer.max_steps=300",
        "trainer.eval_every=50",
        "trainer.seed=1",
    )
    metrics = run(cfg, tmp_path)
    val = [r["exact_match"] for r in read_jsonl(tmp_path / "metrics.jsonl") if r["split"] == "val"]
    assert val[-1] > val[0] + 0.2, val
    assert metrics["test/exact_match"] > 0.4


def test_algebra_predict_round_trip(tiny_cfg, tmp_path, place_value_dir, capsys):
    cfg = tiny_cfg(
        *task_overrides("algebra", place_value_dir),
        "trainer.max_steps=10",
        "trainer.eval_every=5",
        "trainer.num_samples=8",
    )
    run(cfg, tmp_path)
    (tmp_path / ".hydra").mkdir()
    from omegaconf import OmegaConf

    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    capsys.readouterr()
    lines = (tmp_path / "samples.txt").read_text().splitlines()[2:]
    sources = [line.split("\t")[1] for line in lines]
    predict_main([str(tmp_path), *sources])
    predicted = [line.split("\t")[3] for line in lines]
    expected = [f"{source}\t{p}" for source, p in zip(sources, predicted)]
    assert capsys.readouterr().out.splitlines() == expected


@pytest.mark.parametrize("model", sorted(MODELS))
def test_batches_cut_to_their_longest_row_change_nothing(tiny_cfg, place_value_dir, model):
    """A batch is cut to its own longest source and target; the loss is the same as padded."""
    import torch

    from dlrun.plan.config import validate
    from dlrun.registry import task_entry

    cfg = validate(tiny_cfg(*task_overrides("algebra", place_value_dir), f"model={model}"))
    task = task_entry("algebra").obj(cfg)
    task.prepare(cfg.paths.cache_dir)
    full = task.splits["train"]
    # The shortest questions: their batch is narrower than the split.
    idx = torch.argsort((full["src"] != 0).sum(1))[:16]
    cut = task.batch("train", idx)
    padded = {k: v[idx] for k, v in full.items()}
    assert cut["src"].shape[1] < padded["src"].shape[1]
    assert (padded["src"][:, cut["src"].shape[1] :] == 0).all()  # only padding was cut
    assert (cut["src"][:, -1] != 0).any() and (cut["tgt"][:, -1] != 0).any()
    torch.manual_seed(0)
    net = task.build_model().eval()
    with torch.no_grad():
        assert task.loss(net, cut).item() == pytest.approx(task.loss(net, padded).item(), rel=1e-5)


def test_samples_are_the_first_wrong_ones_in_data_order(tiny_cfg, cache_dir, monkeypatch):
    from dlrun.plan.config import validate
    from dlrun.tasks.dates import DatesTask

    task = DatesTask(validate(tiny_cfg("task=dates")))
    task.prepare(cache_dir)
    src, tgt = task.texts["test"]
    decoded = []

    def predict_ids(model, rows, max_len=0):
        decoded.append(rows.shape[0])
        start = sum(decoded[:-1])
        # Every third example wrong, the others right: a model partly trained.
        return [t if (start + i) % 3 else t + "!" for i, t in enumerate(tgt[start:][: len(rows)])]

    monkeypatch.setattr(task, "_predict_ids", predict_ids)
    rows = task.samples(None, "test", 5)
    wrong = [i for i in range(len(src)) if i % 3 == 0][:5]
    assert [r["source"] for r in rows] == [src[i] for i in wrong]
    assert not any(r["correct"] for r in rows)
    assert sum(decoded) == 20 < len(src)  # one part of 4 x 5 rows held 5 wrong ones
    decoded.clear()
    rows = task.samples(None, "test", 50)  # fewer wrong than asked: then the right ones
    assert sum(decoded) == min(len(src), 1000)
    assert [r["correct"] for r in rows] == sorted(r["correct"] for r in rows)
