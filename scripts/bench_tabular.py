"""Points like seed 004's: dlrun's task=tabular (its defaults) against scikit-learn's MLPClassifier.

    python scripts/bench_tabular.py [--out DIR] [--append BENCHMARKS.md] [OVERRIDES...]

Writes ``points.csv`` (labels, feature1, feature2: 1,200 points on five spiral
arms in [-1, 1]², like the seed's data: std about 0.41 per feature), runs
``dlrun task=tabular dataset.path=points.csv dataset.target=labels`` as a user
would, then fits ``MLPClassifier`` (the same 2-64-64-5 ReLU shape, Adam) on the
same train/validation/test split, standardized the same way. Prints one
Markdown table of test accuracy and times; scikit-learn is a bench-only
dependency (``pip install scikit-learn``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path


def write_points(path: Path, n: int = 1200, classes: int = 5, seed: int = 0) -> None:
    rng = random.Random(seed)
    lines = ["labels,feature1,feature2"]
    for i in range(n):
        k = i % classes
        r = rng.random()
        theta = 2 * math.pi * k / classes + 2.5 * r + rng.gauss(0, 0.15)
        lines.append(f"{k},{r * math.cos(theta):.6f},{r * math.sin(theta):.6f}")
    path.write_text("\n".join(lines) + "\n")


def run_dlrun(points: Path, out: Path, overrides: list[str]) -> dict:
    exe = Path(sys.executable).with_name("dlrun")  # the dlrun of this Python's environment
    cmd = [str(exe), "task=tabular", f"dataset.path={points}", "dataset.target=labels"]
    cmd += ["device=cpu", f"paths.output_dir={out / 'outputs'}", *overrides]
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
    wall = time.monotonic() - start
    if done.returncode:
        sys.exit(f"dlrun failed:\n{done.stderr[-2000:]}")
    run_dir = Path(done.stdout.split("run dir: ")[1].splitlines()[0])
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "accuracy": summary["test"]["test/accuracy"],
        "train_s": summary["train_time_s"],
        "wall_s": wall,
        "command": " ".join(["dlrun", *cmd[1:4], *overrides]),
    }


def run_sklearn(points: Path) -> dict:
    import numpy as np

    # The same split and standardization as dlrun's (the task's own code).
    from hydra import compose, initialize_config_dir
    from sklearn.neural_network import MLPClassifier

    from dlrun.plan.config import conf_dir, validate
    from dlrun.tasks.tabular import TabularTask

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["task=tabular", f"dataset.path={points}", "dataset.target=labels"],
        )
    task = TabularTask(validate(cfg))
    task.prepare(points.parent)
    x = {s: task.splits[s]["x"].numpy() for s in task.splits}
    y = {s: task.splits[s]["label"].numpy() for s in task.splits}
    clf = MLPClassifier(hidden_layer_sizes=(64, 64), random_state=0, max_iter=2000)
    start = time.monotonic()
    clf.fit(x["train"], y["train"])
    fit = time.monotonic() - start
    return {
        "accuracy": float(np.mean(clf.predict(x["test"]) == y["test"])),
        "train_s": fit,
        "iterations": clf.n_iter_,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_tabular"))
    parser.add_argument("--append", type=Path, help="append the table to this Markdown file")
    parser.add_argument("overrides", nargs="*", help="more dlrun overrides")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    points = (args.out / "points.csv").resolve()
    write_points(points)
    env_cache = os.environ.setdefault("DLRUN_CACHE_DIR", str((args.out / "cache").resolve()))
    ours = run_dlrun(points, args.out.resolve(), args.overrides)
    theirs = run_sklearn(points)
    lines = [
        f"Points like seed 004's (1,200 rows, five spiral arms), cache {env_cache}:",
        "",
        "| tool | test accuracy | training s | command-to-exit s |",
        "|---|---|---|---|",
        f"| dlrun (`{ours['command']}`) | {ours['accuracy']:.4f} | {ours['train_s']:.1f} "
        f"| {ours['wall_s']:.1f} |",
        f"| scikit-learn MLPClassifier((64, 64)), {theirs['iterations']} iterations "
        f"| {theirs['accuracy']:.4f} | {theirs['train_s']:.1f} | |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        with args.append.open("a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
