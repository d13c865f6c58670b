#!/usr/bin/env python3
"""Time a dlrun command to a target metric, data generation included (empty cache).

    scripts/bench_time_to_target.py [--keep DIR] SPLIT/METRIC TARGET -- DLRUN OVERRIDES...

e.g. ``test/exact_match 0.95 -- task=algebra trainer.also_eval=[test]
trainer.max_time=600``. Reads the run's metrics.jsonl and prints the first
evaluation that reached the target: training seconds, step, and the estimated
seconds since the command started (start-up and data generation included).
``--keep DIR`` runs in DIR (which must not exist) and keeps the run directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    args = sys.argv[1:]
    keep = None
    if args[0] == "--keep":
        keep, args = Path(args[1]), args[2:]
        keep.mkdir(parents=True)
    metric, target = args[0], float(args[1])
    overrides = args[args.index("--") + 1 :]
    split, _, name = metric.partition("/")
    context = contextlib.nullcontext(str(keep)) if keep else tempfile.TemporaryDirectory()
    with context as work:
        env = {**os.environ, "DLRUN_CACHE_DIR": f"{work}/cache"}
        start = time.time()
        done = subprocess.run(
            ["dlrun", *overrides], cwd=work, env=env, capture_output=True, text=True
        )
        wall = time.time() - start
        if done.returncode:
            sys.exit(done.stderr)
        run_dir = next(Path(work, "outputs").glob("*/*"))
        summary = json.loads((run_dir / "summary.json").read_text())
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    # metrics.jsonl's "elapsed" counts training only: add start-up and data time.
    before = wall - summary["wall_time_s"] + summary["data_time_s"]
    evals = [r for r in records if r["split"] == split and name in r and "checkpoint" not in r]
    hit = next((r for r in evals if r[name] >= target), None)
    import torch

    import dlrun

    print(f"command: dlrun {' '.join(overrides)}")
    print(f"device: {summary['device']}, torch {torch.__version__}, dlrun {dlrun.__version__}")
    print(
        f"start-up + data {before:.1f} s (data {summary['data_time_s']} s), training "
        f"{summary['train_time_s']} s, {summary['steps']} steps, total wall {wall:.1f} s"
    )
    if hit:
        print(
            f"{metric} >= {target}: step {hit['step']}, {hit['elapsed']:.1f} s of training, "
            f"{before + hit['elapsed']:.0f} s from the command"
        )
    else:
        print(f"{metric} never reached {target}")
    print(
        "final (best checkpoint): " + ", ".join(f"{k}={v:.4f}" for k, v in summary["test"].items())
    )
    print(
        "curve (step, training s, value): "
        + " ".join(f"({r['step']}, {r['elapsed']:.0f}, {r[name]:.4f})" for r in evals)
    )


if __name__ == "__main__":
    main()
