"""Seed 001's Transformer on dates, its training steps and first evaluations timed apart
from dlrun's loop, each in a fresh process.

    python scripts/bench_transformer_steps.py RUN_DIR [--steps 120] [--flops]  (in the CPU lock)

RUN_DIR is a run of ``dlrun task=dates model=transformer_seq2seq device=cpu
trainer.max_steps=20`` (its model and data are loaded from it). Printed:

1. ``steps``: ``--steps`` training steps (AdamW, random batches of 128) in fp32 and
   under bf16 autocast, with the encoder packed (padding left out of its products, what
   ``models.transformer._packs`` allows) and forced padded: milliseconds per step over
   the last half and the process's RSS at the end, which shows memory that keeps growing.
2. ``eval``: the first evaluation of validation, then of test, as a run does them (inside
   ``inference_mode``, malloc set by ``engine.device.keep_freed_memory``): seconds and
   page faults.

``--flops`` prints instead the arithmetic of the 20-step smoke run: floating-point operations
of a training step (fp32, mean of 5 random batches) and of evaluating validation and test
(counted by ``torch.utils.flop_counter`` with the fused inference path of PyTorch's layers
off, which the counter cannot see into), and this CPU's fastest fp32 matrix products of
the model's shapes: what the smoke run's arithmetic alone takes at that rate.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path


def rss_mb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() >> 20


def loaded(run: str):
    import torch

    from dlrun.api import load_model
    from dlrun.engine.device import keep_freed_memory

    keep_freed_memory()
    task, model = load_model(run)
    task.prepare(Path(task.cfg.paths.cache_dir).expanduser())
    task.to(torch.device("cpu"))
    return task, model


def steps(run: str, n: int, precision: str, packed: bool) -> None:
    import torch

    from dlrun.models import transformer

    if not packed:
        transformer._packs = lambda x: False
    task, model = loaded(run)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    g = torch.Generator().manual_seed(0)
    start = 0.0
    for i in range(n):
        if i == n // 2:
            start = time.perf_counter()
        batch = task.batch("train", torch.randperm(task.size("train"), generator=g)[:128])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = task.loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
    ms = (time.perf_counter() - start) / (n - n // 2) * 1000
    name = "packed" if packed else "padded"
    print(f"| {precision} | {name} | {ms:.0f} | {rss_mb()} |", flush=True)


def evaluations(run: str) -> None:
    import torch

    from dlrun.engine.evaluate import evaluate

    task, model = loaded(run)
    for split in ("val", "test"):
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        with torch.inference_mode():
            evaluate(task, model, split, task.cfg.trainer.eval_batch_size)
        took = time.perf_counter() - start
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        print(f"| {split} | {task.size(split):,} | {took:.2f} | {faults:,} |", flush=True)


def flops(run: str) -> None:
    import torch
    from torch.nn import functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from dlrun.engine.evaluate import evaluate

    task, model = loaded(run)
    model.train()
    g = torch.Generator().manual_seed(0)
    step = []
    for _ in range(5):
        batch = task.batch("train", torch.randperm(task.size("train"), generator=g)[:128])
        with FlopCounterMode(display=False) as count:
            task.loss(model, batch).backward()
        step.append(count.get_total_flops())
    model.eval()
    evals = {}
    torch.backends.mha.set_fastpath_enabled(False)  # the counter sees only unfused products
    for split in ("val", "test"):
        with torch.inference_mode(), FlopCounterMode(display=False) as count:
            evaluate(task, model, split, task.cfg.trainer.eval_batch_size)
        evals[split] = count.get_total_flops()
    rates = []
    for m, k, n in ((4096, 256, 768), (4096, 256, 1024), (4096, 1024, 256)):
        x, w = torch.randn(m, k), torch.randn(n, k)
        for _ in range(3):
            F.linear(x, w)
        start = time.perf_counter()
        for _ in range(20):
            F.linear(x, w)
        rates.append(2 * m * k * n * 20 / (time.perf_counter() - start))
    mean_step = sum(step) / len(step)
    total = 20 * mean_step + sum(evals.values())
    best = max(rates)
    print("| part | GFLOP |\n|---|---:|")
    print(f"| training step (batch 128, forward and backward) | {mean_step / 1e9:.1f} |")
    for split, f in evals.items():
        print(f"| evaluating {split} ({task.size(split):,} examples) | {f / 1e9:.1f} |")
    print(f"| 20 steps + validation + test | {total / 1e9:.0f} |")
    shown = ", ".join(f"{r / 1e9:.0f}" for r in rates)
    print(
        f"\nfp32 matrix products of the model's shapes: {shown} GFLOP/s; the smoke run's "
        f"arithmetic at {best / 1e9:.0f} GFLOP/s: {total / best:.1f} s"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--flops", action="store_true", help="the smoke run's arithmetic")
    p.add_argument("--part", choices=["steps", "eval"], help=argparse.SUPPRESS)
    p.add_argument("--precision", choices=["fp32", "bf16"], help=argparse.SUPPRESS)
    p.add_argument("--padded", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.part == "steps":
        return steps(a.run, a.steps, a.precision, not a.padded)
    if a.part == "eval":
        return evaluations(a.run)
    if a.flops:
        return flops(a.run)
    me = [sys.executable, __file__, a.run, "--steps", str(a.steps)]
    print("| precision | encoder | ms per step | RSS MB at the end |\n|---|---|---:|---:|")
    for precision in ("fp32", "bf16"):
        for padded in ([], ["--padded"]):
            subprocess.run([*me, "--part", "steps", "--precision", precision, *padded], check=True)
    print("\n| first evaluation of | examples | seconds | page faults |\n|---|---:|---:|---:|")
    subprocess.run([*me, "--part", "eval"], check=True)


if __name__ == "__main__":
    main()
