"""dlrun's CUDA paths dry-run on a CPU (``dlrun.testing.fake_cuda``): every task trains a
step, evaluates a batch of each split, tests, writes its outputs and predicts with
``device=cuda``, under CUDA's device rules (one device per operation, pinned host memory,
``cuda`` vs ``cuda:0``), autocast (bf16, fp16 with the GradScaler), fused AdamW and
streamed data. What a dry run cannot reach is in the module's docstring; the real GPU
runs are tests/test_gpu.py (scripts/gpu_check.sh).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import make_cfg, save_run_config

from dlrun.cli.predict import main as predict_main
from dlrun.engine.checkpoint import load
from dlrun.engine.run import run
from dlrun.registry import list_tasks
from dlrun.testing.fake_cuda import FakeCudaTensor, FakeGpu, fake_cuda

# debug=fast: one training step, one evaluation batch of each split, the test, every output.
DRY = ("device=cuda", "debug=fast", "trainer.max_steps=1", "trainer.log_every=1")
DRY += ("trainer.eval_batch_size=8", "trainer.num_samples=3")
SMALL = {  # small models, so that a step costs little
    "dates": ["model.hidden_size=32", "model.embedding_size=16"],
    "algebra": ["model.hidden_size=32", "model.embedding_size=16"],
    "text_pairs": ["model.hidden_size=32", "model.embedding_size=16"],
}


def predict_inputs(cfg, run_dir: Path) -> list[str]:
    """Inputs to predict: the samples' (image files where the task reads them)."""
    rows = (run_dir / "samples.txt").read_text().splitlines()[2:]
    sources = [row.split("\t")[1] for row in rows]
    if cfg.task.name == "images":  # paths under the data set's folder
        return [str(Path(cfg.dataset.path) / s) for s in sources]
    if cfg.task.name == "kmnist":  # images kept in arrays: one written as a file
        from PIL import Image

        Image.new("L", (28, 28), 128).save(run_dir / "glyph.png")
        return [str(run_dir / "glyph.png")]
    return sources


def dry_run(cache_dir, run_dir, capsys, task: str, *overrides: str) -> tuple[dict, FakeGpu]:
    """``dlrun task=TASK device=cuda debug=fast`` and ``dlrun-predict --device cuda`` of
    the samples' inputs, on fake CUDA: the run's summary, and what the fake GPU saw."""
    cfg = make_cfg(cache_dir, f"task={task}", *DRY, *SMALL.get(task, []), *overrides)
    with fake_cuda() as gpu:
        metrics = run(cfg, run_dir)
        save_run_config(cfg, run_dir)
        inputs = predict_inputs(cfg, run_dir)
        capsys.readouterr()
        predict_main([str(run_dir), "--device", "cuda", "--", *inputs])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 1
    assert metrics and all(math.isfinite(v) for v in metrics.values()), metrics
    lines = capsys.readouterr().out.splitlines()
    assert inputs and len(lines) == len(inputs)
    return summary, gpu


@pytest.mark.parametrize("task", list_tasks())
def test_cuda_dry_run_trains_evaluates_and_predicts_every_task(cache_dir, tmp_path, capsys, task):
    summary, _ = dry_run(cache_dir, tmp_path, capsys, task)
    # device.amp=auto is bf16 on CUDA; the device is CUDA's, with its name.
    assert summary["device"] == "cuda (fake CUDA (dlrun.testing.fake_cuda)), amp bf16"


@pytest.mark.parametrize("task", ["kmnist", "images", "tabular", "text", "imdb"])
def test_cuda_dry_run_streams_data_through_pinned_memory(cache_dir, tmp_path, capsys, task):
    # device.data=stream: rows gathered on the host (in the prefetch thread too), pinned,
    # sent to the GPU; the small per-example tensors are on the GPU already.
    _, gpu = dry_run(cache_dir, tmp_path, capsys, task, "device.data=stream")
    # The epoch's order is pinned; so are the batches of a task with wide rows (a tiny
    # table's rows are too narrow to stream: it keeps them on the device).
    assert gpu.pinned > (0 if task == "tabular" else 1)


@pytest.mark.parametrize("amp", ["fp16", "none"])
def test_cuda_dry_run_fp16_scales_and_fused_adamw_steps(cache_dir, tmp_path, capsys, amp):
    overrides = (f"device.amp={amp}", "trainer.grad_clip=1.0", "optimizer.name=adamw")
    summary, _ = dry_run(cache_dir, tmp_path, capsys, "dates", *overrides)
    assert summary["device"].endswith("amp " + {"none": "off"}.get(amp, amp))
    ckpt = load(tmp_path / "checkpoints" / "last.pt")
    # optimizer.fused=null chooses the fused kernels on CUDA; an enabled GradScaler
    # saves its scale (2**16, halved after a step whose gradients overflowed).
    assert "scale" in ckpt["scaler"] if amp == "fp16" else not ckpt["scaler"]
    assert ckpt["optimizer"]["param_groups"][0]["fused"] is True


def test_cuda_dry_run_keeps_cudas_device_rules():
    available = torch.cuda.is_available()
    with fake_cuda():
        x = torch.ones(4, 3).to("cuda")
        assert x.device == torch.device("cuda", 0) and x.is_cuda
        assert x.device != torch.device("cuda")  # the bug the rules below catch
        assert (x * torch.tensor(2.0)).device.type == "cuda"  # a CPU scalar is allowed
        assert x[torch.tensor([0, 2])].shape == (2, 3)  # so are CPU indices
        with pytest.raises(RuntimeError, match="same device, but found .* cuda:0 and cpu"):
            x + torch.ones(4, 3)
        with pytest.raises(RuntimeError, match="only dense CPU tensors can be pinned"):
            x.pin_memory()
        with pytest.raises(TypeError, match="can't convert cuda:0"):
            x.numpy()
        host = torch.arange(3).pin_memory()
        assert host.is_pinned() and not torch.arange(3).is_pinned()
        assert type(x.cpu()) is torch.Tensor and x.cpu().device.type == "cpu"
        model = torch.nn.Linear(3, 2).cuda()
        assert isinstance(model.weight, FakeCudaTensor)
        assert isinstance(model.weight, torch.nn.Parameter)
        with torch.autocast("cuda", dtype=torch.float16):
            y = model(x)
        assert y.dtype == torch.float16 and y.device.type == "cuda"
        y.float().sum().backward()
        assert model.weight.grad.device.type == "cuda"
        # fp16 with the GradScaler: a step whose gradients are not finite is skipped and
        # the scale halved, as on a GPU.
        opt = torch.optim.AdamW(model.parameters(), fused=True)
        scaler = torch.amp.GradScaler("cuda")
        before = model.weight.detach().clone()
        scaler.scale(model(x * float("inf")).float().sum()).backward()
        scaler.step(opt)
        scaler.update()
        assert torch.equal(model.weight.detach(), before) and scaler.get_scale() == 2.0**15
    assert torch.cuda.is_available() == available  # all of it undone
    assert type(torch.ones(1).to(torch.device("cpu"))) is torch.Tensor
