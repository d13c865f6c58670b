#!/usr/bin/env python
"""A pruned Optuna search against a grid of full runs over the same learning rates.

    python scripts/bench_search.py --imdb PATH [--trials 10] [--out DIR] [--append BENCHMARKS.md]

Runs ``experiment=imdb_seed`` with ``optimizer.lr=tag(log, interval(1e-4, 1))``
as a search (``hydra/sweeper=optuna``, median pruning), then the same learning
rates as a plain ``dlrun -m`` grid of full runs, and prints both wall times, the
number of pruned trials and the best trial's test accuracy. The data cache is
filled by a one-step run first, so neither side pays for tokenizing.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path


def dlrun(args: list[str]) -> float:
    exe = Path(sys.executable).parent / "dlrun"
    start = time.monotonic()
    done = subprocess.run([str(exe), *args], capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if done.returncode not in (0, 1):  # 1: some job failed (a diverging lr), reported below
        sys.exit(f"dlrun {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imdb", required=True, help="aclImdb folder or tarball")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--startup", type=int, default=3, help="trials before pruning starts")
    parser.add_argument("--out", type=Path, default=Path("bench_search"))
    parser.add_argument("--append", type=Path, help="append the Markdown result to this file")
    args = parser.parse_args()

    import optuna
    import torch

    from dlrun.search import study as tune

    base = ["experiment=imdb_seed", f"dataset.path={args.imdb}", "device=cpu"]
    out = args.out.resolve()
    dlrun([*base, "trainer.max_steps=1", f"hydra.run.dir={out / 'warmup'}"])
    search_dir, grid_dir = out / "search", out / "grid"
    search = [
        "-m",
        *base,
        "hydra/sweeper=optuna",
        "hydra.sweeper.seed=0",
        f"hydra.sweeper.n_trials={args.trials}",
        "hydra.sweeper.pruner=median",
        f"hydra.sweeper.n_startup_trials={args.startup}",
        "optimizer.lr=tag(log, interval(1e-4, 1))",
        f"hydra.sweep.dir={search_dir}",
    ]
    search_s = dlrun(search)
    study = tune.find_study(search_dir)
    trials = study.trials
    lrs = [t.params["optimizer.lr"] for t in trials]
    grid_s = dlrun(
        ["-m", *base, "optimizer.lr=" + ",".join(map(repr, lrs)), f"hydra.sweep.dir={grid_dir}"]
    )
    states = [t.state.name for t in trials]
    best = study.best_trial
    summary = json.loads((Path(best.user_attrs["run_dir"]) / "summary.json").read_text())
    grid_best = max(
        (json.loads(p.read_text()) for p in grid_dir.glob("*/summary.json")),
        key=lambda s: s.get("best", {}).get("val/accuracy", -1),
    )
    lines = [
        f"### Search vs grid: imdb_seed, lr log-uniform 1e-4..1, {args.trials} trials",
        "",
        "```",
        f"python scripts/bench_search.py --imdb {args.imdb} --trials {args.trials}",
        "```",
        "",
        f"Device: {platform.machine()} CPU, torch {torch.__version__}, optuna "
        f"{optuna.__version__}, Python {platform.python_version()}; TPE (seed 0), median "
        f"pruning after {args.startup} trials, one evaluation per epoch (5 epochs).",
        "",
        "| | wall time (s) | complete | pruned | failed | best val/accuracy | its test/accuracy |",
        "|---|---|---|---|---|---|---|",
        f"| search | {search_s:.1f} | {states.count('COMPLETE')} | {states.count('PRUNED')} | "
        f"{states.count('FAIL')} | {best.value:.4f} | {summary['test']['test/accuracy']:.4f} |",
        f"| grid of the same lrs | {grid_s:.1f} | | | | "
        f"{grid_best['best']['val/accuracy']:.4f} | {grid_best['test']['test/accuracy']:.4f} |",
        "",
        "Learning rates (trial order, state): "
        + ", ".join(f"{lr:.3g} ({s.lower()})" for lr, s in zip(lrs, states))
        + f"; best trial lr {best.params['optimizer.lr']:.4g}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.append:
        with args.append.open("a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
