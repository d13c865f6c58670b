"""IMDB: statistics, batching, the EmbeddingBag model against the dense one, short runs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import model_cfg, save_run_config

from dlrun.cli.predict import load_run
from dlrun.cli.stats import format_stats
from dlrun.data.text import WordVocab
from dlrun.engine.run import run
from dlrun.models import build_model
from dlrun.models.bow import BagSum, argsort_ids
from dlrun.plan.config import validate
from dlrun.rundir.read import read_jsonl
from dlrun.tasks.imdb import ImdbTask, distinct_ids, nb_ratios

BOW = {"name": "bow_mlp", "hidden_size": 16, "outputs": 1, "dropout": 0.0, "sparse_grad": False}


def write_reviews(root, reviews):
    for (split, label, rid, rating), text in reviews.items():
        folder = root / "aclImdb" / split / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{rid}_{rating}.txt").write_text(text)
    return root / "aclImdb"


def test_stats_on_a_corpus_with_known_counts(tiny_cfg, tmp_path):
    path = write_reviews(
        tmp_path,
        {
            ("train", "pos", 0, 9): "Good good film.",  # good good film .
            ("train", "pos", 1, 8): "A good plot",  # a good plot
            ("train", "neg", 2, 2): "Bad film",  # bad film
            ("train", "neg", 3, 1): "Bad<br />bad bad!",  # bad bad bad !
            ("train", "neg", 4, 3): "zzz",
            ("test", "pos", 5, 10): "good unseen words",
            ("test", "neg", 6, 1): "bad",
        },
    )
    cfg = validate(
        tiny_cfg(
            "task=imdb",
            f"dataset.path={path}",
            "dataset.val_fraction=0.2",
            "dataset.vocab_size=3",
            "dataset.seed=3",
        )
    )
    task = ImdbTask(cfg)
    task.prepare(tmp_path / "cache")
    stats = task.stats()
    train, val, test = stats["train"], stats["val"], stats["test"]
    assert train["examples"] + val["examples"] == 5
    assert train["positives"] + val["positives"] == 2
    assert test == {
        "examples": 2,
        "positives": 1,
        "negatives": 1,
        "mean_words": 2.0,
        "tokens": 4,
        "oov_tokens": 2,  # 'unseen', 'words'
    }
    assert stats["vocab_size"] == 4  # 3 words + OOV
    # dataset.seed=3 holds out "Bad film"; the rest is the training split.
    assert val == {
        "examples": 1,
        "positives": 0,
        "negatives": 1,
        "mean_words": 2.0,
        "tokens": 2,
        "oov_tokens": 1,  # 'film' is not among the 3 most frequent training words
    }
    # good good film . / a good plot / bad bad bad ! / zzz  (<br /> removed)
    assert train["mean_words"] == 12 / 4 and train["oov_tokens"] == 12 - 3 - 3 - 1
    words = stats["train_words"]
    assert words["distinct"] == 8
    assert sorted(map(tuple, words["most_frequent"][:2])) == [("bad", 3), ("good", 3)]
    assert all(count == 1 for _, count in words["least_frequent"])
    table = format_stats(stats).splitlines()  # what dlrun-stats prints
    assert table[0].startswith("| split | examples | positives | negatives | mean_words")
    assert table[4] == "| test | 2 | 1 | 1 | 2.00 | 4 | 2 |"
    assert any(line.startswith("train_words: ") for line in table)


def test_batch_gathers_each_reviews_distinct_ids(tiny_cfg):
    task = ImdbTask(validate(tiny_cfg("task=imdb")))
    task.prepare(tiny_cfg("task=imdb").paths.cache_dir)
    idx = torch.tensor([5, 0, 17])
    batch = task.batch("train", idx)
    d = task.splits["train"]
    expected = [task.flat["train"][d["start"][i] : d["start"][i] + d["length"][i]] for i in idx]
    assert torch.equal(batch["ids"], torch.cat(expected))
    assert batch["offsets"].tolist() == [0, len(expected[0]), len(expected[0]) + len(expected[1])]
    for ids in expected:  # distinct and sorted: a presence vector, not counts
        assert torch.equal(ids, torch.unique(ids))


def test_distinct_ids_maps_unknown_tokens_to_zero():
    vocab = WordVocab(["good", "film"])
    flat = distinct_ids([["good", "good", "film"], ["nope", "film"]], vocab)
    assert flat["ids"].tolist() == [1, 2, 0, 2]
    assert flat["start"].tolist() == [0, 2] and flat["length"].tolist() == [2, 2]


@pytest.mark.parametrize(("outputs", "weighted"), [(1, False), (2, False), (1, True)])
def test_embedding_bag_equals_the_dense_one_hot_mlp(outputs, weighted):
    torch.manual_seed(0)
    vocab = 50
    model = build_model(model_cfg("bow_mlp", **{**BOW, "outputs": outputs}), vocab_size=vocab)
    dense_first = torch.nn.Linear(vocab, 16)
    dense_first.weight.data = model.first.weight.detach().T.clone()
    dense_first.bias.data = model.bias.detach().clone()
    sets = [torch.randperm(vocab)[: torch.randint(1, 20, ()).item()] for _ in range(8)]
    ids = torch.cat(sets)
    lengths = torch.tensor([len(s) for s in sets])
    # Presence (1) or a weight per token (nb feature weights) in the dense input.
    token_weight = torch.randn(vocab) if weighted else torch.ones(vocab)
    one_hot = torch.zeros(8, vocab)
    for row, s in enumerate(sets):
        one_hot[row, s] = token_weight[s]
    dense = model.out(torch.relu(dense_first(one_hot)))
    bag = model(ids, torch.cumsum(lengths, 0) - lengths, token_weight[ids] if weighted else None)
    assert bag.shape == (8, outputs)
    torch.testing.assert_close(bag, dense)


def test_nb_ratios_by_hand():
    # Reviews (distinct ids): {0, 1} positive, {1, 2} negative, {2} negative.
    ids, label, length = (
        torch.tensor([0, 1, 1, 2, 2]),
        torch.tensor([1, 0, 0]),
        torch.tensor([2, 2, 1]),
    )
    r = nb_ratios(ids, label, length, vocab_size=4, alpha=1.0)
    p = torch.tensor([2.0, 2.0, 1.0, 1.0])  # positive reviews with the id, + alpha
    q = torch.tensor([1.0, 2.0, 3.0, 1.0])
    torch.testing.assert_close(r, torch.log((p / p.sum()) / (q / q.sum())))
    assert r[0] > 0 > r[2]  # a token of positive reviews only, one of negative ones


@pytest.mark.parametrize("weighted", [False, True])
def test_sparse_gradient_step_equals_the_dense_one(weighted):
    torch.manual_seed(0)
    ids, offsets = torch.tensor([3, 7, 9, 1, 3]), torch.tensor([0, 3])
    weights = torch.rand(5) if weighted else None
    label = torch.tensor([1.0, 0.0])
    models = [
        build_model(model_cfg("bow_mlp", **{**BOW, "sparse_grad": s}), vocab_size=12)
        for s in (False, True)
    ]
    models[1].load_state_dict(models[0].state_dict())
    for model in models:
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        logits = model(ids, offsets, weights)[:, 0]
        torch.nn.functional.binary_cross_entropy_with_logits(logits, label).backward()
        opt.step()
    grad = models[1].first.weight.grad
    # One row per distinct id (autograd drops the coalesced flag when it stores .grad).
    assert grad.is_sparse and grad._indices().tolist() == [[1, 3, 7, 9]]
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b)


def test_argsort_ids_is_a_stable_sort():
    ids = torch.tensor([70_000, 5, 2**20 + 5, 5, 65_536, 0, 70_000, 2**31 - 1, 65_535])
    assert torch.equal(argsort_ids(ids), torch.sort(ids, stable=True).indices)
    assert argsort_ids(torch.tensor([], dtype=torch.long)).numel() == 0


@pytest.mark.filterwarnings("error")  # users see no warning from it on each run
@pytest.mark.parametrize("vocab", [50, 70_000])  # ids of 16 bits: one radix pass; more: two
def test_bag_sum_gradient_equals_embedding_bags(vocab):
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(0, 30, (16,), generator=g)  # empty examples too
    ids = torch.randint(0, vocab, (int(lengths.sum()),), generator=g)
    offsets = torch.cumsum(lengths, 0) - lengths
    weights = torch.rand(ids.numel(), generator=g)
    upstream = torch.randn(16, 8, generator=g)
    weight = torch.randn(vocab, 8, generator=g, requires_grad=True)
    (ours,) = torch.autograd.grad(BagSum.apply(weight, ids, offsets, weights), weight, upstream)
    torch.nn.functional.embedding_bag(
        ids, weight, offsets, mode="sum", per_sample_weights=weights
    ).backward(upstream)
    assert ours.is_coalesced() and ours.indices()[0].tolist() == ids.unique().tolist()
    torch.testing.assert_close(ours.to_dense(), weight.grad)


@pytest.mark.parametrize(
    "options",
    [["model.outputs=1"], ["model.outputs=2"], ["model.outputs=1", "dataset.feature_weights=nb"]],
)
def test_short_run_learns_from_step_zero(tiny_cfg, tmp_path, options):
    cfg = tiny_cfg(
        "experiment=imdb_seed",
        *options,
        "trainer.max_steps=60",
        "trainer.eval_every=20",
        "trainer.eval_at_start=true",
        "optimizer.lr=0.5",
    )
    result = run(cfg, tmp_path)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    first = next(r for r in records if r["split"] == "val")
    assert first["step"] == 0
    nb = "dataset.feature_weights=nb" in options
    # Seed V.2.a: about ln 2 untrained; nb-weighted inputs are larger (this corpus's cue
    # words have ratios near +-3), so the untrained logits spread wider there.
    assert first["loss"] == pytest.approx(math.log(2), abs=0.2 if nb else 0.05)
    assert first["perplexity"] == pytest.approx(math.exp(first["loss"]))
    last = [r for r in records if r["split"] == "val"][-1]
    assert last["loss"] < first["loss"] / 2 and result["test/accuracy"] >= 0.9
    samples = (tmp_path / "samples.txt").read_text().splitlines()
    assert len(samples) == 2 + 5 and samples[2].split("\t")[2] in ("negative", "positive")
    save_run_config(cfg, tmp_path)
    assert (tmp_path / "feature_weights.pt").is_file() == nb
    task, model = load_run(tmp_path)
    (good, p_good), (bad, p_bad) = (
        line.split("\t") for line in task.predict(model, ["Wonderful, superb!", "Awful. Dull."], 4)
    )
    assert (good, bad) == ("positive", "negative") and min(float(p_good), float(p_bad)) > 0.5


def test_balanced_subsample(tiny_cfg, tmp_path):
    task = ImdbTask(validate(tiny_cfg("task=imdb", "dataset.train_samples=20")))
    task.prepare(tmp_path)
    assert task.splits["train"]["label"].tolist().count(1) == 10
    assert task.size("train") == 20


def test_unshuffled_training_visits_stored_order(tiny_cfg, tmp_path):
    from dlrun.engine.device import resolve_device
    from dlrun.engine.trainer import Trainer

    data = validate(tiny_cfg("task=imdb", "trainer.shuffle=false"))
    task = ImdbTask(data)
    task.prepare(tmp_path)
    dev = resolve_device(data.device)
    trainer = Trainer(task, task.build_model(), data, dev, tmp_path)
    assert trainer.order.next(trainer.state).tolist() == list(range(16))
    assert trainer.order.next(trainer.state).tolist() == list(range(16, 32))


@pytest.mark.parametrize(
    ("ngrams", "tokenizer"), [(1, "whitespace"), (2, "basic_english"), (3, "basic_english")]
)
def test_array_build_equals_the_list_of_strings_build(corpora, tmp_path, ngrams, tokenizer):
    """Word ids and int64 n-gram keys give what with_ngrams + WordVocab + sets gave."""
    import json
    import random
    from collections import Counter

    from dlrun.data.text import TOKENIZERS, read_aclimdb, with_ngrams

    d = {
        "path": str(corpora["imdb"]),
        "tokenizer": tokenizer,
        "ngrams": ngrams,
        "vocab_size": 40,
        "val_fraction": 0.05,  # 10 of the 200 training reviews
        "train_samples": None,
        "seed": 3,
    }
    task = ImdbTask.__new__(ImdbTask)
    task.cfg = SimpleNamespace(dataset=SimpleNamespace(**d))
    task._build(tmp_path, corpora["imdb"])
    data = task._load_cached(tmp_path)
    stats = json.loads((tmp_path / "stats.json").read_text())

    reviews = read_aclimdb(corpora["imdb"])
    train = list(reviews["train"])
    random.Random(3).shuffle(train)
    splits = {"train": train[10:], "val": train[:10], "test": reviews["test"]}
    words = {s: [TOKENIZERS[tokenizer](t) for t, _, _ in rows] for s, rows in splits.items()}
    docs = {s: [with_ngrams(w, ngrams) for w in ws] for s, ws in words.items()}
    vocab = WordVocab.build(docs["train"], 40)
    assert json.loads((tmp_path / "vocab.json").read_text()) == vocab.itos
    for split in splits:
        expected = distinct_ids(docs[split], vocab)
        for key in ("ids", "start", "length"):
            assert torch.equal(data[split][key], expected[key]), (split, key)
        assert stats[split]["tokens"] == sum(map(len, docs[split]))
        oov = sum(t not in vocab.stoi for doc in docs[split] for t in doc)
        assert stats[split]["oov_tokens"] == oov
    ranked = Counter(w for ws in words["train"] for w in ws).most_common()
    assert stats["train_words"]["most_frequent"] == [list(p) for p in ranked[:5]]
    assert stats["train_words"]["least_frequent"] == [list(p) for p in ranked[-5:]]
    assert stats["train_words"]["distinct"] == len(ranked)


def test_a_run_recorded_with_val_size_reads_as_a_fraction():
    from dlrun.plan.config import migrate

    old = {"dataset": {"name": "imdb", "val_size": 1000, "seed": 0}}
    dataset = migrate(old)["dataset"]
    assert dataset == {"name": "imdb", "val_fraction": 0.04, "max_tokens": 400, "seed": 0}
