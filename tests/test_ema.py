"""trainer.ema: the average is the one computed by hand, it is what evaluation, best.pt,
the test and predict use, and a resumed run averages exactly as an uninterrupted one."""

from __future__ import annotations

import pytest
import torch
from test_training import interrupt_at_call

from dlrun.engine.checkpoint import load
from dlrun.engine.ema import EMA
from dlrun.engine.run import run
from dlrun.errors import Interrupted


def test_the_average_is_the_hand_computed_one():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = EMA(model, decay=0.6)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    by_hand: dict[str, torch.Tensor] = {}
    for n in range(5):
        model(torch.randn(8, 3)).square().mean().backward()  # BatchNorm updates its stats
        opt.step()
        opt.zero_grad()
        ema.update(model)
        d = min(0.6, 1 - (1 + n) ** (-2 / 3))  # warm-up: 0 (a copy), 0.37, 0.52, 0.6, 0.6
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                previous = by_hand.get(name, torch.zeros_like(value))
                by_hand[name] = d * previous + (1 - d) * value
            else:
                by_hand[name] = value.clone()
    averaged = ema.module.state_dict()
    for name, value in by_hand.items():
        torch.testing.assert_close(averaged[name], value, rtol=0, atol=1e-6)
    assert averaged["1.running_mean"].abs().sum() > 0  # buffers are averaged too
    assert int(averaged["1.num_batches_tracked"]) == 5  # integer buffers copied
    assert not torch.equal(averaged["0.weight"], model.state_dict()["0.weight"])
    assert ema.state_dict() == {"decay": 0.6, "updates": 5}
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_evaluation_uses_the_average(tiny_cfg, tmp_path):
    from dlrun.engine import run as engine
    from dlrun.engine.device import resolve_device
    from dlrun.engine.distributed import SINGLE
    from dlrun.engine.evaluate import evaluate
    from dlrun.plan.config import validate
    from dlrun.rundir.layout import RunDir

    cfg = validate(tiny_cfg("trainer.ema=0.9", "optimizer.lr=1e-2"))
    dev = resolve_device(cfg.device)
    task, _ = engine._load(cfg, SINGLE)
    engine._ready(cfg, task, dev, SINGLE, RunDir(tmp_path))
    trainer = engine._trainer(cfg, task, dev, SINGLE, RunDir(tmp_path), None)
    for _ in range(4):
        trainer.train_step()
    assert trainer.eval_model is trainer.ema.module
    got = trainer.evaluate("val")
    assert trainer.model.training  # evaluating the average leaves training as it was
    size = cfg.trainer.eval_batch_size
    with torch.inference_mode():
        averaged = evaluate(task, trainer.ema.module, "val", size, SINGLE)
        trained = evaluate(task, trainer.model.eval(), "val", size, SINGLE)
    assert got == averaged != trained


def test_resume_with_ema_ends_like_an_uninterrupted_run_and_predict_loads_the_average(
    tiny_cfg, tmp_path, monkeypatch
):
    from dlrun.api import load_run

    ov = ("trainer.max_steps=10", "trainer.eval_every=5", "trainer.ema=0.8", "model.dropout=0.2")
    full = run(tiny_cfg(*ov), tmp_path / "full")

    interrupt_at_call(monkeypatch, 7)
    with pytest.raises(Interrupted, match="stopped by SIGTERM at step 7"):
        run(tiny_cfg(*ov), tmp_path / "part")
    monkeypatch.undo()
    resumed = run(tiny_cfg(*ov, f"resume={tmp_path / 'part'}"), tmp_path / "part")
    assert resumed == full
    a = load(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load(tmp_path / "part" / "checkpoints" / "last.pt")
    assert a["ema"] == b["ema"] == {"decay": 0.8, "updates": 10}
    for part in ("model", "train_model"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    # best.pt's model is the average the run tested; train_model what the optimizer trained.
    best = load(tmp_path / "part" / "checkpoints" / "best.pt")
    assert not torch.equal(best["model"]["out.weight"], best["train_model"]["out.weight"])
    loaded = load_run(tmp_path / "part").model.state_dict()
    assert all(torch.equal(loaded[k], best["model"][k]) for k in loaded)


@pytest.mark.slow
def test_two_processes_average_as_one_does_and_resume(tmp_path, cache_dir):
    """Under torchrun every rank holds the same weights, so the same average: rank 0's
    checkpoint equals one process's (to DDP's reduction order) and resumes."""
    import json
    import sys

    from conftest import TINY, merged, run_cli, tiny_data
    from test_distributed import _losses, _only_run_dir

    tiny = ("task=kmnist", *TINY, *tiny_data("kmnist"), "model.dropout=0")
    args = merged(*tiny, "trainer.max_steps=24", "trainer.ema=0.9")
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    single.mkdir(), ddp.mkdir()
    done = run_cli(["dlrun", *args], single, cache_dir)
    assert done.returncode == 0, done.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    done = run_cli([*torchrun, "--nproc_per_node=2", "-m", "dlrun.train", *args], ddp, cache_dir)
    assert done.returncode == 0, done.stderr
    one, two = _only_run_dir(single), _only_run_dir(ddp)
    for (_, _, x), (_, _, y) in zip(_losses(one), _losses(two)):
        assert y == pytest.approx(x, rel=1e-4, abs=1e-5)  # evaluations of the average
    a, b = load(one / "checkpoints" / "last.pt"), load(two / "checkpoints" / "last.pt")
    assert a["ema"] == b["ema"] == {"decay": 0.9, "updates": 24}
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=1e-4)
    more = [*merged(*args, "trainer.max_steps=30"), f"resume={two}"]
    done = run_cli([*torchrun, "--nproc_per_node=2", "-m", "dlrun.train", *more], ddp, cache_dir)
    assert done.returncode == 0, done.stderr
    assert json.loads((two / "summary.json").read_text())["steps"] == 30
    assert load(two / "checkpoints" / "last.pt")["ema"]["updates"] == 30
