"""What ``logger=mlflow`` adds to a short run: wall time of the same tiny dates run with
and without it, each ``--repeat`` times, in a fresh cache folder: the very first MLflow
run builds the empty store template there (once per MLflow version on a machine); a first
run in a new output folder copies it into its SQLite store; later runs reuse the store.

    python scripts/bench_trackers.py [--repeat 3]      (inside the CPU lock: about a minute)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = [
    "task=dates",
    "dataset.train_size=768",
    "dataset.val_size=128",
    "dataset.test_size=128",
    "dataset.batch_size=64",
    "device=cpu",
    "trainer.max_steps=60",
    "trainer.eval_every=20",
    "trainer.log_every=5",
    "model.hidden_size=32",
    "model.embedding_size=16",
]


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    dlrun = str(Path(sys.executable).parent / "dlrun")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DLRUN_CACHE_DIR": f"{tmp}/cache"}
        base = [dlrun, *RUN, f"paths.output_dir={tmp}/out"]
        mlflow = [*base, "logger=mlflow"]
        new = [dlrun, *RUN, "logger=mlflow"]
        very_first = timed(mlflow, env)  # builds the template and the store
        times: dict[str, list[float]] = {"none": [], "new": [], "later": []}
        for n in range(args.repeat):
            times["new"].append(timed([*new, f"paths.output_dir={tmp}/new{n}"], env))
            times["later"].append(timed(mlflow, env))
            times["none"].append(timed(base, env))
    plain = statistics.median(times["none"])
    print(f"without a tracker: median {plain:.2f} s of {args.repeat}")
    print(
        f"logger=mlflow, first run with this MLflow version (builds the template): "
        f"{very_first:.2f} s (+{very_first - plain:.2f} s)"
    )
    for key, what in (("new", "first run in a new output folder"), ("later", "later runs")):
        median = statistics.median(times[key])
        print(f"logger=mlflow, {what}: median {median:.2f} s (+{median - plain:.2f} s)")


if __name__ == "__main__":
    main()
