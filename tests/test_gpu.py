"""The CUDA paths: bf16 and fp16 autocast, GradScaler, fused Adam, TF32, pinned host
indices, channels_last, resume on a GPU, and predict on the CPU of a GPU-trained run.

Opt-in (``python -m pytest -m gpu``; scripts/gpu_check.sh runs them), and skipped
where torch sees no CUDA GPU.
"""

from __future__ import annotations

import json
import math
import signal
from dataclasses import replace

import pytest
import torch
from conftest import save_run_config

from dlrun.cli.predict import load_run
from dlrun.engine.checkpoint import load
from dlrun.engine.device import resolve_device
from dlrun.engine.run import run
from dlrun.engine.trainer import Trainer, build_optimizer
from dlrun.errors import Interrupted
from dlrun.plan.config import DeviceConfig, OptimizerConfig, validate
from dlrun.registry import task_entry
from dlrun.rundir.read import read_jsonl
from dlrun.tasks.seq2seq import Seq2SeqTask

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CUDA = "device=cuda"


def summary_of(run_dir) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def train_losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["split"] == "train"]


def test_bf16_training_on_cuda_learns_and_records_the_device(tiny_cfg, tmp_path):
    cfg = tiny_cfg(
        CUDA,
        "trainer.max_steps=60",
        "trainer.eval_every=20",
        "optimizer.lr=1e-2",
        "task.monitor=val/char_accuracy",
    )
    metrics = run(cfg, tmp_path)
    losses = train_losses(tmp_path)
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.7 * losses[0]
    val = [
        r["char_accuracy"] for r in read_jsonl(tmp_path / "metrics.jsonl") if r["split"] == "val"
    ]
    assert metrics["test/char_accuracy"] > val[0] + 0.1
    summary = summary_of(tmp_path)
    assert summary["device"].startswith("cuda") and summary["device"].endswith("amp bf16")
    assert summary["steps"] == 60 and summary["peak_memory_mb"] > 0  # CUDA's max allocated


def test_device_settings_on_cuda(monkeypatch):
    # resolve_device switches TF32 on globally: put the flags back afterwards.
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    base = DeviceConfig(
        type="cuda", amp="auto", compile=False, threads=None, tf32=True, data="auto"
    )
    dev = resolve_device(base)
    assert dev.device.type == "cuda" and dev.amp_dtype is torch.bfloat16 and not dev.use_scaler
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    fp16 = resolve_device(replace(base, amp="fp16"))
    assert fp16.amp_dtype is torch.float16 and fp16.use_scaler
    assert "amp fp16" in fp16.describe()
    assert resolve_device(replace(base, amp="none")).amp_dtype is None


def test_fp16_run_steps_through_the_grad_scaler(tiny_cfg, tmp_path):
    run(tiny_cfg(CUDA, "device.amp=fp16"), tmp_path)
    assert summary_of(tmp_path)["device"].endswith("amp fp16")
    assert all(math.isfinite(x) for x in train_losses(tmp_path))
    scaler = load(tmp_path / "checkpoints" / "last.pt")["scaler"]
    # An enabled GradScaler saves its scale (a disabled one saves nothing). It starts at
    # 2**16 and either halved after an overflow or counted all 20 steps toward growing.
    assert "scale" in scaler
    assert scaler["scale"] < 2.0**16 or scaler["_growth_tracker"] == 20
    assert math.log2(scaler["scale"]).is_integer()


def test_fused_adam_on_cuda_steps_with_the_scaler():
    model = torch.nn.Linear(8, 2).cuda()
    cfg = OptimizerConfig(
        name="adam",
        lr=1e-2,
        weight_decay=0.0,
        betas=[0.9, 0.999],
        momentum=0.0,
        nesterov=False,
        fused=None,
    )
    opt = build_optimizer(model.parameters(), cfg, torch.device("cuda"))
    assert opt.defaults["fused"] is True  # null chooses the fused kernels on CUDA
    unfused = build_optimizer(model.parameters(), replace(cfg, fused=False), torch.device("cuda"))
    assert not unfused.defaults["fused"]
    assert not build_optimizer(model.parameters(), cfg, torch.device("cpu")).defaults["fused"]
    # The loop's fp16 step: scale, backward, unscale, clip, step, update.
    scaler = torch.amp.GradScaler("cuda")
    before = model.weight.detach().clone()
    with torch.autocast("cuda", dtype=torch.float16):
        loss = model(torch.randn(4, 8, device="cuda")).float().pow(2).mean()
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(opt)
    scaler.update()
    assert not torch.equal(model.weight.detach(), before)
    assert torch.isfinite(model.weight).all()


def test_cuda_checkpoint_predicts_on_the_cpu_and_the_gpu(tiny_cfg, tmp_path):
    cfg = tiny_cfg(CUDA, "trainer.max_steps=60", "optimizer.lr=1e-2", "trainer.num_samples=32")
    run(cfg, tmp_path)
    save_run_config(cfg, tmp_path)
    rows = [line.split("\t") for line in (tmp_path / "samples.txt").read_text().splitlines()[2:]]
    sources, on_gpu = [r[1] for r in rows], [r[3] for r in rows]
    task, model = load_run(tmp_path, "cpu")
    task_gpu, model_gpu = load_run(tmp_path, "cuda")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert {p.device.type for p in model_gpu.parameters()} == {"cuda"}
    with torch.inference_mode():  # as dlrun-predict runs them
        on_cpu = task.predict(model, sources)
        again = task_gpu.predict(model_gpu, sources)
    # samples.txt was decoded on the GPU at the end of training: greedy decoding on the
    # CPU gives the same answers but for rare near-ties in float arithmetic.
    agree = sum(a == b for a, b in zip(on_cpu, on_gpu)) / len(sources)
    assert len(on_cpu) == len(sources) == 32 and agree >= 0.9
    assert sum(a == b for a, b in zip(again, on_gpu)) / len(sources) >= 0.9


def test_resume_on_cuda_continues_at_the_interrupted_step(tiny_cfg, tmp_path, monkeypatch):
    ov = (CUDA, "trainer.max_steps=30", "trainer.eval_every=10", "model.dropout=0.2")
    calls = {"n": 0}
    original = Seq2SeqTask.loss

    def loss(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 17:
            signal.raise_signal(signal.SIGTERM)
        return original(self, model, batch)

    monkeypatch.setattr(Seq2SeqTask, "loss", loss)
    with pytest.raises(Interrupted, match="stopped by SIGTERM at step 17"):
        run(tiny_cfg(*ov), tmp_path)
    monkeypatch.undo()
    part = load(tmp_path / "checkpoints" / "last.pt")
    assert part["state"]["step"] == 17

    # Restores weights, optimizer and the CPU and CUDA RNG states onto the GPU.
    run(tiny_cfg(*ov, f"resume={tmp_path}"), tmp_path)
    summary = summary_of(tmp_path)
    assert summary["status"] == "ok" and summary["steps"] == 30
    assert summary["device"].startswith("cuda")
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if r["split"] == "val"] == [10, 20, 30]
    final = load(tmp_path / "checkpoints" / "last.pt")["model"]
    assert any(not torch.equal(final[k], part["model"][k]) for k in final)
    assert all(torch.isfinite(v).all() for v in final.values())


def test_kmnist_runs_channels_last_on_cuda(tiny_cfg, tmp_path, cache_dir):
    cfg = tiny_cfg("task=kmnist", CUDA, "trainer.max_epochs=null")
    data = validate(cfg)
    task = task_entry("kmnist").obj(data)
    task.prepare(cache_dir)
    task.to(torch.device("cuda"))
    model = task.build_model().cuda()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    x = task.inputs(task.splits["train"]["image"][:4])
    assert x.is_cuda and x.is_contiguous(memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert model(x).shape == (4, 10)
    # The loop keeps each epoch's order on the host, pinned, for asynchronous copies.
    dev = resolve_device(data.device)
    trainer = Trainer(task, model, data, dev, tmp_path / "direct")
    idx = trainer.order.next(trainer.state)
    assert idx.device.type == "cpu" and idx.is_pinned()

    metrics = run(cfg, tmp_path / "run")
    assert all(math.isfinite(v) for v in metrics.values())
    assert summary_of(tmp_path / "run")["device"].startswith("cuda")
