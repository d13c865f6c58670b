"""Small real tables: dlrun's task=tabular (its defaults) against scikit-learn on the same split.

    python scripts/bench_tabular.py [--out DIR] [--sets NAME ...] [--seeds 0 1 ... 9]
                                    [--append BENCHMARKS.md] [OVERRIDES...]

Writes each table as a CSV file (column ``target`` is the label or value):
scikit-learn's bundled ``breast_cancer``, ``wine`` and ``digits``
(classification) and ``diabetes`` (regression), and ``points`` (1,200 points
on five spiral arms in [-1, 1]², like seed 004's). For each table and split
seed it runs ``dlrun task=tabular dataset.path=FILE dataset.target=target``
as a user would, then fits scikit-learn's ``MLPClassifier``/``MLPRegressor``
(its default (100,) and (64, 64) hidden layers, ``StandardScaler`` first,
``max_iter=2000``) and ``HistGradientBoostingClassifier``/``Regressor`` on
every row of dlrun's split but its test rows (dlrun's training and validation
rows: scikit-learn needs no validation split, dlrun uses it to stop and pick
its checkpoint; ``--sklearn-rows train`` fits on the training rows alone).
Prints one Markdown table: test accuracy (R² and RMSE for regression) and
seconds, the mean over the seeds with the standard deviation and the worst
seed. The test splits are small (18 to 180 rows): use ten seeds or more.
Each (table, seed, tool) result is kept under ``--out``/results and reused by
a later call with the same options, so a long run can go in several calls
(delete the folder after changing dlrun). scikit-learn is a bench-only dependency.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import random
import subprocess
import sys
import time
import warnings
from pathlib import Path

CLASSIFICATION = ("points", "breast_cancer", "wine", "digits")
REGRESSION = ("diabetes",)


def write_points(path: Path, n: int = 1200, classes: int = 5, seed: int = 0) -> None:
    rng = random.Random(seed)
    lines = ["target,feature1,feature2"]
    for i in range(n):
        k = i % classes
        r = rng.random()
        theta = 2 * math.pi * k / classes + 2.5 * r + rng.gauss(0, 0.15)
        lines.append(f"{k},{r * math.cos(theta):.6f},{r * math.sin(theta):.6f}")
    path.write_text("\n".join(lines) + "\n")


def write_table(name: str, path: Path) -> None:
    """``name``'s table as CSV: its feature columns, then ``target``."""
    if name == "points":
        return write_points(path)
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, f"load_{name}")()
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*bunch.feature_names, "target"])
        for x, y in zip(bunch.data, bunch.target):
            out.writerow([*(f"{v:.6g}" for v in x), f"{y:.6g}"])


def run_dlrun(path: Path, out: Path, args: list[str]) -> dict:
    exe = Path(sys.executable).with_name("dlrun")  # the dlrun of this Python's environment
    cmd = [str(exe), "task=tabular", f"dataset.path={path}", "dataset.target=target", *args]
    cmd += ["device=cpu", f"paths.output_dir={out / 'outputs'}"]
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
    wall = time.monotonic() - start
    if done.returncode:
        sys.exit(f"dlrun failed:\n{done.stderr[-2000:]}")
    if "Warning" in done.stderr:
        sys.exit(f"dlrun printed a warning:\n{done.stderr[-2000:]}")
    run_dir = Path(done.stdout.split("run dir: ")[1].splitlines()[0])
    summary = json.loads((run_dir / "summary.json").read_text())
    test = summary["test"]
    return {
        "score": test.get("test/accuracy", test.get("test/r2")),
        "rmse": test.get("test/rmse"),
        "train_s": summary["train_time_s"],
        "wall_s": wall,
        "best_step": summary["best"]["step"],
    }


def split(path: Path, args: list[str]) -> dict:
    """dlrun's own train/test split of ``path``: standardized features, labels."""
    from hydra import compose, initialize_config_dir

    from dlrun.plan.config import conf_dir, validate
    from dlrun.tasks.tabular import TabularTask

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["task=tabular", f"dataset.path={path}", "dataset.target=target", *args],
        )
    task = TabularTask(validate(cfg))
    task.prepare(path.parent)
    return {s: (task.splits[s]["x"].numpy(), task.splits[s]["label"].numpy()) for s in task.splits}


def run_sklearn(path: Path, args: list[str], regression: bool, rows: str) -> dict[str, dict]:
    """scikit-learn's models fitted on dlrun's split of ``path`` (``rows``: train+val or
    train), scored on its test rows."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mlp = MLPRegressor if regression else MLPClassifier
    hgb = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
    models = {
        "MLP (100,)": make_pipeline(StandardScaler(), mlp(max_iter=2000, random_state=0)),
        "MLP (64, 64)": make_pipeline(
            StandardScaler(), mlp(hidden_layer_sizes=(64, 64), max_iter=2000, random_state=0)
        ),
        "HistGradientBoosting": hgb(random_state=0),
    }
    data = split(path, args)
    (x, y), (xt, yt) = data["train"], data["test"]
    if rows == "train+val":
        x, y = np.concatenate([x, data["val"][0]]), np.concatenate([y, data["val"][1]])
    out = {}
    for name, model in models.items():
        start = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a ConvergenceWarning at max_iter
            model.fit(x, y)
        fit = time.monotonic() - start
        pred = model.predict(xt)
        if regression:
            rmse = float(np.sqrt(np.mean((pred - yt) ** 2)))
            score = 1 - float(np.sum((pred - yt) ** 2) / np.sum((yt - yt.mean()) ** 2))
        else:
            rmse, score = None, float(np.mean(pred == yt))
        out[name] = {"score": score, "rmse": rmse, "train_s": fit, "wall_s": None}
    return out


def mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def sd(values: list) -> float:
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def cached(path: Path, compute, *args) -> dict:
    """``compute(*args)``'s result, kept as JSON in ``path`` for a later call."""
    if path.exists():
        return json.loads(path.read_text())
    result = compute(*args)
    path.write_text(json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_tabular"))
    parser.add_argument("--sets", nargs="+", default=[*CLASSIFICATION, *REGRESSION])
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=list(range(10)), help="dataset.seed values"
    )
    parser.add_argument(
        "--sklearn-rows",
        choices=["train+val", "train"],
        default="train+val",
        help="the rows scikit-learn fits on (default: all but the test rows)",
    )
    parser.add_argument("--append", type=Path, help="append the table to this Markdown file")
    parser.add_argument("overrides", nargs="*", help="more dlrun overrides")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out.resolve()
    os.environ.setdefault("DLRUN_CACHE_DIR", str(out / "cache"))
    (out / "results").mkdir(exist_ok=True)
    options = hashlib.sha1(f"{args.overrides}{args.sklearn_rows}".encode()).hexdigest()[:8]
    lines = [
        f"Test accuracy (R² and RMSE for diabetes) over dataset.seed in {args.seeds}: mean, "
        "standard deviation, worst seed; scikit-learn fitted on the "
        f"{args.sklearn_rows} rows; seconds: training (dlrun: command to exit in brackets).",
        "",
        "| table (rows) | tool | test accuracy / R² (sd; worst) | RMSE | training s (wall) |",
        "|---|---|---|---|---|",
    ]
    for name in args.sets:
        path = out / f"{name}.csv"
        write_table(name, path)
        rows = sum(1 for _ in path.open()) - 1
        regression = name in REGRESSION
        extra = ["task.problem=regression"] if regression else []
        results: dict[str, list[dict]] = {}
        for seed in args.seeds:
            seeded = [*extra, f"dataset.seed={seed}"]
            stem = out / "results" / f"{name}-{seed}-{options}"
            dl = cached(
                stem.with_suffix(".dlrun.json"), run_dlrun, path, out, [*seeded, *args.overrides]
            )
            results.setdefault("dlrun", []).append(dl)
            sk = cached(
                stem.with_suffix(".sklearn.json"),
                run_sklearn,
                path,
                seeded,
                regression,
                args.sklearn_rows,
            )
            for tool, r in sk.items():
                results.setdefault(tool, []).append(r)
        for tool, rs in results.items():
            scores = [r["score"] for r in rs]
            score, rmse = mean(scores), mean([r["rmse"] for r in rs])
            worst = min(scores)
            train, wall = mean([r["train_s"] for r in rs]), mean([r["wall_s"] for r in rs])
            label = f"dlrun {' '.join(args.overrides)}".strip() if tool == "dlrun" else tool
            lines.append(
                f"| {name} ({rows}) | {label} | {score:.4f} ({sd(scores):.4f}; {worst:.4f}) | "
                + (f"{rmse:.2f}" if rmse is not None else "")
                + f" | {train:.1f}"
                + (f" ({wall:.1f})" if wall is not None else "")
                + " |"
            )
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        with args.append.open("a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
