"""Every YAML under conf/ composes and validates; groups on the command line win."""

from __future__ import annotations

import pytest
from conftest import fitting_overrides

from dlrun.plan.command import groups
from dlrun.plan.config import conf_dir, validate

CHOICES = [
    (group, choice) for group, choices in sorted(groups(conf_dir()).items()) for choice in choices
]


def test_every_yaml_is_a_choice():
    yamls = sorted(p.relative_to(conf_dir()) for p in conf_dir().rglob("*.yaml"))
    listed = sorted(
        [p for p in yamls if len(p.parts) == 1]
        + [conf_dir().joinpath(g, f"{c}.yaml").relative_to(conf_dir()) for g, c in CHOICES]
    )
    assert yamls == listed


@pytest.mark.parametrize(("group", "choice"), CHOICES)
def test_each_choice_composes_and_validates(tiny_cfg, group, choice):
    cfg = tiny_cfg(*fitting_overrides(group, choice))
    if group == "device" and choice in ("cuda", "mps"):
        assert cfg.device.type == choice  # selecting them is valid config; the device may be absent
        return
    data = validate(cfg)
    if group in ("task", "dataset", "optimizer", "scheduler"):
        assert getattr(data, group).name == choice
    elif group == "model":  # several presets of one registered model, e.g. transformer_seq2seq_cpu
        assert choice.startswith(getattr(data, group).name)
    elif group == "device":
        assert getattr(data, group).type == choice


def test_every_yaml_starts_with_a_comment():
    for path in conf_dir().rglob("*.yaml"):
        assert path.read_text().startswith("#"), path


def test_default_is_dates_with_gru(tiny_cfg):
    cfg = tiny_cfg()
    assert cfg.task.name == "dates"
    assert cfg.model.name == "gru_seq2seq"
    assert cfg.device.type == "cpu"  # TINY picks cpu; the primary default is auto


def test_command_line_group_wins_over_experiment_and_task(tiny_cfg):
    cfg = tiny_cfg("experiment=dates_seed", "optimizer=sgd", "model.hidden_size=48")
    assert cfg.optimizer.name == "sgd"
    assert cfg.model.hidden_size == 48
    assert cfg.model.teacher_forcing == 0.4  # the experiment's other values stay


def test_dates_seed_preset(tiny_cfg):
    cfg = tiny_cfg("experiment=dates_seed")
    assert cfg.model.name == "gru_seq2seq"
    assert cfg.model.teacher_forcing == 0.4
    assert cfg.optimizer.name == "adam" and cfg.optimizer.lr == pytest.approx(1e-3)
    assert cfg.trainer.grad_clip == 10.0
