"""What ``logger=mlflow`` adds to a short run: wall time of the same tiny dates run with
and without it, each ``--repeat`` times, in a fresh output folder (the first MLflow run
creates its SQLite store; the later ones reuse it).

    python scripts/bench_trackers.py [--repeat 3]      (inside the CPU lock: about a minute)
"""

from __future__ import annotations

import argparse
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


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    dlrun = str(Path(sys.executable).parent / "dlrun")
    with tempfile.TemporaryDirectory() as out:
        base = [dlrun, *RUN, f"paths.output_dir={out}"]
        times: dict[str, list[float]] = {"none": [], "mlflow": []}
        for _ in range(args.repeat):
            times["mlflow"].append(timed([*base, "logger=mlflow"]))
            times["none"].append(timed(base))
    first = times["mlflow"][0]
    later = statistics.median(times["mlflow"][1:] or times["mlflow"])
    plain = statistics.median(times["none"])
    print(f"without a tracker: median {plain:.2f} s of {args.repeat}")
    print(f"logger=mlflow, first run (creates the store): {first:.2f} s (+{first - plain:.2f} s)")
    print(f"logger=mlflow, later runs: median {later:.2f} s (+{later - plain:.2f} s)")


if __name__ == "__main__":
    main()
