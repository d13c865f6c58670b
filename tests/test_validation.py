"""Config validation reports every problem at once, naming the key and the valid range."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from dlrun.errors import ConfigError, UserError
from dlrun.plan.config import validate
from dlrun.registry import MODELS, Registry, list_models, list_tasks


def problems(cfg) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    return info.value.problems


def test_valid_tiny_config_passes(tiny_cfg):
    data = validate(tiny_cfg())
    assert data.dataset.train_size == 768


def test_all_problems_reported_together(tiny_cfg):
    found = problems(
        tiny_cfg(
            "optimizer.lr=-1", "dataset.batch_size=0", "trainer.accumulate=two", "model.dropout=1.5"
        )
    )
    assert len(found) == 4
    text = "\n".join(found)
    assert "optimizer.lr=-1: must be > 0" in text
    assert "dataset.batch_size=0: must be >= 1" in text
    assert "trainer.accumulate='two': expected int" in text
    assert "model.dropout=1.5: must be < 1" in text


def test_unknown_key_suggests_the_closest(tiny_cfg):
    cfg = tiny_cfg("+optimizer.lrr=0.1")
    (problem,) = problems(cfg)
    assert "optimizer.lrr: unknown key" in problem and "optimizer.lr" in problem


def test_bad_choice_lists_valid_ones(tiny_cfg):
    (problem,) = problems(tiny_cfg("optimizer.name=adamm"))
    assert "must be one of adam, adamw, sgd" in problem and "did you mean 'adam'" in problem


def test_split_sizes_that_do_not_fit(tiny_cfg):
    cfg = tiny_cfg(
        "dataset.start_date=2020-01-01",
        "dataset.end_date=2020-01-31",
        "dataset.val_size=200",
        "dataset.test_size=200",
    )
    (problem,) = problems(cfg)
    assert "dataset.val_size + dataset.test_size = 400" in problem


def test_batch_larger_than_train(tiny_cfg):
    (problem,) = problems(tiny_cfg("dataset.batch_size=1000"))
    assert "dataset.batch_size=1000: larger than dataset.train_size=768" in problem


def test_max_length_too_short_for_the_data(tiny_cfg):
    found = problems(tiny_cfg("dataset.max_src_len=12", "dataset.max_tgt_len=8"))
    assert any(p.startswith("dataset.max_src_len=12: too short for the data") for p in found)
    assert any(p.startswith("dataset.max_tgt_len=8: must be >= 11") for p in found)


def test_bad_dates_locales_and_formats(tiny_cfg):
    found = problems(tiny_cfg("dataset.locales=[da,xx_YY]", "dataset.start_date=2020-13-01"))
    assert any("unknown Babel locale 'xx_YY'" in p for p in found)
    assert any("dataset.start_date='2020-13-01': expected a date" in p for p in found)


def test_no_stopping_condition(tiny_cfg):
    (problem,) = problems(tiny_cfg("trainer.max_steps=null"))
    assert "set at least one of trainer.max_steps" in problem


def test_monitor_must_be_a_task_metric(tiny_cfg):
    (problem,) = problems(tiny_cfg("task.monitor=val/bleu"))
    assert "task.monitor=val/bleu: must be one of val/loss, val/char_accuracy" in problem


def test_registry_lists_names_and_the_closest():
    assert "dates" in list_tasks() and "gru_seq2seq" in list_models()
    with pytest.raises(
        UserError,
        match=r"unknown model 'gru_seq2sq'; valid: .*gru_seq2seq.*"
        r"did you mean 'gru_seq2seq'",
    ):
        MODELS.get("gru_seq2sq")


def test_registry_rejects_duplicates():
    reg = Registry("thing")
    reg.register("a")(object)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(object)
    assert reg.names() == ["a"]


def test_model_that_does_not_fit_the_task(tiny_cfg, monkeypatch):
    from dlrun import registry

    @dataclass
    class ToyConfig:
        name: str = "toy_classifier"

    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))
    toy = type("Toy", (), {"kind": "image_classifier"})  # a model's kind is its class attribute
    registry.MODELS.register("toy_classifier", schema=ToyConfig)(toy)
    found = problems(tiny_cfg("model.name=toy_classifier"))
    assert any(
        "a image_classifier model does not fit task 'dates'" in p and "gru_seq2seq" in p
        for p in found
    )


def test_a_format_without_the_date_cannot_fill_the_held_out_splits(tiny_cfg):
    # Every date renders the same text: there are no 256 distinct eval inputs to draw.
    (problem,) = problems(tiny_cfg("dataset.formats=['{0}']"))
    assert "dataset.val_size + dataset.test_size = 256: must be at most half" in problem
