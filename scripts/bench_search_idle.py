#!/usr/bin/env python3
"""How long a search's workers sit idle when its trials differ in length.

    python scripts/bench_search_idle.py [--trials 6] [--jobs 2] [--out DIR]

Runs a grid search over ``trainer.max_steps`` (short and long trials alternating)
with the ``submitit_local`` launcher and ``n_jobs`` workers on the dates task's
small data, then reads each trial's busy span from its run directory (process
start, from ``dlrun.log``'s first line, to ``summary.json``'s last write) and
reports the search's wall time and the workers' idle time: ``jobs`` times the span
from the first trial's start to the last trial's end, less the trials' busy time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

# The dlrun beside this Python (a virtual environment's), else the one on PATH.
DLRUN = next((p for p in [Path(sys.executable).parent / "dlrun"] if p.exists()), "dlrun")


def busy_span(run_dir: Path) -> tuple[float, float]:
    first = (run_dir / "dlrun.log").read_text().splitlines()[0]
    start = datetime.strptime(first[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return start, (run_dir / "summary.json").stat().st_mtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--short", type=int, default=20, help="steps of a short trial")
    parser.add_argument("--long", type=int, default=200, help="steps of a long trial")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_idle_"))
    sweep = out / "search"
    cmd = [
        str(DLRUN),
        "-m",
        "hydra/sweeper=optuna",
        "hydra/launcher=submitit_local",
        "hydra.sweeper.sampler=grid",
        "hydra.sweeper.seed=0",
        f"hydra.sweeper.n_jobs={args.jobs}",
        f"hydra.sweeper.n_trials={args.trials}",
        "hydra.sweeper.pruner=none",
        f"hydra.sweep.dir={sweep}",
        "device=cpu",
        "device.threads=1",
        "dataset.train_size=2000",
        "dataset.val_size=200",
        "dataset.test_size=200",
        "trainer.max_epochs=null",
        "trainer.eval_every=1000",
        "trainer.stop_at=null",
        f"trainer.max_steps=choice({args.short},{args.long})",
        # Distinct seeds make the grid as large as the trials asked for.
        f"trainer.seed=range(0,{args.trials // 2})",
    ]
    start = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - start
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    spans = [busy_span(d) for d in sweep.iterdir() if (d / "summary.json").is_file()]
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    busy = sum(e - s for s, e in spans)
    idle = args.jobs * (last - first) - busy
    print(
        json.dumps(
            {
                "trials": len(spans),
                "jobs": args.jobs,
                "wall_s": round(wall, 1),
                "span_s": round(last - first, 1),
                "busy_s": round(busy, 1),
                "idle_s": round(idle, 1),
                "idle_share": round(idle / (args.jobs * (last - first)), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
