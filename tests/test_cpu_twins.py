"""CPU twins of the CUDA features (tests/test_gpu.py runs them on a GPU): the same dlrun
code on a CPU where PyTorch supports the feature there. fp16 autocast with the
GradScaler, fused AdamW, channels_last, and ``device.compile=true`` for a model of each
family. What stays CUDA-only is listed in README ("On a GPU box without network").
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from dlrun.engine.device import DeviceInfo, resolve_device
from dlrun.engine.run import run
from dlrun.engine.trainer import Trainer
from dlrun.plan.config import validate
from dlrun.registry import task_entry

CPU = torch.device("cpu")


def ready(cfg, cache_dir):
    """The validated config, its task prepared on the CPU, and its model."""
    data = validate(cfg)
    task = task_entry(data.task.name).obj(data)
    task.prepare(cache_dir)
    task.to(CPU)
    return data, task, task.build_model()


def test_fp16_on_a_cpu_skips_a_non_finite_step_and_halves_the_scale(
    tiny_cfg, cache_dir, tmp_path, monkeypatch
):
    # dlrun refuses device.amp=fp16 off CUDA (bf16 is the CPU's half precision); the
    # trainer's fp16 path itself, torch.amp.GradScaler("cpu"), runs the same code.
    data, task, model = ready(tiny_cfg("trainer.grad_clip=1.0"), cache_dir)
    dev = DeviceInfo(CPU, torch.float16, use_scaler=True, compile=False)
    trainer = Trainer(task, model, data, dev, tmp_path)
    assert trainer.scaler.is_enabled() and trainer.scaler.get_scale() == 2.0**16
    loss, calls = type(task).loss, []

    def overflowing(self, model, batch):
        calls.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        out = loss(self, model, batch)
        return out * float("inf") if len(calls) == 1 else out

    monkeypatch.setattr(type(task), "loss", overflowing)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train_step()  # gradients not finite: the step is skipped, the scale halved
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert trainer.scaler.get_scale() == 2.0**15 and int(trainer._first_bad) == 1
    trainer.train_step()
    assert calls == [torch.float16, torch.float16]  # under fp16 autocast
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert trainer.scaler.get_scale() == 2.0**15  # grows only after 2,000 good steps
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_fused_adamw_trains_on_a_cpu(tiny_cfg, tmp_path):
    cfg = tiny_cfg("optimizer.name=adamw", "optimizer.fused=true", "optimizer.lr=1e-2")
    metrics = run(cfg, tmp_path)
    assert all(math.isfinite(v) for v in metrics.values())
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["optimizer"]["param_groups"][0]["fused"] is True


def test_kmnist_is_channels_last_on_a_cpu(tiny_cfg, cache_dir, tmp_path):
    data, task, model = ready(tiny_cfg("task=kmnist"), cache_dir)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    x = task.inputs(task.splits["train"]["image"][:4])
    assert x.is_contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).shape == (4, 10)
    # The loop pins the epoch's order on CUDA alone.
    trainer = Trainer(task, model, data, resolve_device(data.device), tmp_path)
    assert not trainer.order.next(trainer.state).is_pinned()


# One model of each family; RNN models run eagerly (Dynamo does not trace them).
COMPILED = {
    "seq2seq": ["model=transformer_seq2seq_small"],
    "image": ["task=kmnist"],
    "text": ["task=text", "model=text_cnn"],
    "tabular": ["task=tabular"],
}


def test_compile_runs_a_sparse_gradient_bag_of_words_eagerly(tiny_cfg, tmp_path, caplog):
    # Inductor fails on EmbeddingBag's sparse gradient (model.sparse_grad=true, the default).
    cfg = tiny_cfg("task=text", "model=bow_mlp", "device.compile=true", "trainer.max_steps=3")
    metrics = run(cfg, tmp_path)
    assert all(math.isfinite(v) for v in metrics.values())
    assert "running BowMLP eagerly (model.sparse_grad=true" in caplog.text


@pytest.mark.slow  # inductor compiles C++ for each: tens of seconds
@pytest.mark.parametrize("family", COMPILED)
def test_compile_on_a_cpu_trains_a_model_of_each_family(tiny_cfg, tmp_path, family):
    cfg = tiny_cfg(*COMPILED[family], "device.compile=true", "trainer.max_steps=3")
    metrics = run(cfg, tmp_path)
    assert all(math.isfinite(v) for v in metrics.values())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 3
