"""Cross-validation on a real table: ``dlrun task=tabular trainer.folds=5`` against
scikit-learn's 5-fold cross-validation of ``MLPClassifier`` (with ``StandardScaler``).

    python scripts/bench_folds.py [--out DIR] [--folds K] [OVERRIDES...]

Writes scikit-learn's bundled breast-cancer table (569 rows, 30 features, 2 classes)
as ``breast_cancer.csv``, runs dlrun on it as a user would (its defaults plus
``trainer.folds=K``), and cross-validates scikit-learn's model on the same rows
(dlrun's training + validation split; its own K folds of them). Prints one Markdown
table: each fold's validation accuracy, their mean and standard deviation (n - 1),
the test accuracy and the wall time. scikit-learn is a bench-only dependency.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def write_table(path: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    header = ["label", *(f"f{i}" for i in range(data.data.shape[1]))]
    lines = [",".join(header)]
    lines += [f"{y}," + ",".join(f"{v:.6g}" for v in x) for x, y in zip(data.data, data.target)]
    path.write_text("\n".join(lines) + "\n")


def run_dlrun(table: Path, out: Path, folds: int, overrides: list[str]) -> tuple[dict, float]:
    exe = Path(sys.executable).with_name("dlrun")  # the dlrun of this Python's environment
    cmd = [str(exe), "task=tabular", f"dataset.path={table}", "dataset.target=label"]
    cmd += ["device=cpu", f"trainer.folds={folds}", f"hydra.run.dir={out}", *overrides]
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text()), time.monotonic() - start


def run_sklearn(table: Path, folds: int) -> tuple[list[float], float, float]:
    """Validation accuracy of each of scikit-learn's folds of dlrun's train + val rows,
    the test accuracy of the model fitted on all of them, and the seconds taken."""
    from types import SimpleNamespace

    import numpy as np
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from dlrun.data.table import read_table, split_indices

    t = read_table(table, None, "utf-8")
    d = SimpleNamespace(seed=0, test_path=None, test_fraction=0.1, val_fraction=0.1)
    parts = split_indices(len(t), d)  # dlrun's split: the test rows stay out, as in its folds

    def arrays(rows: np.ndarray):
        x = np.stack([c.numbers[rows] for c in t.columns[1:]], axis=1)
        return x, t.columns[0].numbers[rows].astype(int)

    x, y = arrays(np.concatenate([parts["train"], parts["val"]]))
    x_test, y_test = arrays(parts["test"])
    model = make_pipeline(StandardScaler(), MLPClassifier((64, 64), max_iter=500, random_state=0))
    start = time.monotonic()
    scores = cross_val_score(model, x, y, cv=KFold(folds, shuffle=True, random_state=0))
    test = model.fit(x, y).score(x_test, y_test)
    return [float(s) for s in scores], float(test), time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_folds"))
    parser.add_argument("--folds", type=int, default=5)
    args, overrides = parser.parse_known_args()
    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / "breast_cancer.csv"
    write_table(table)
    summary, wall = run_dlrun(table, args.out / "cv", args.folds, overrides)
    ours = [f["best"]["val/accuracy"] for f in summary["fold_results"]]
    theirs, their_test, their_s = run_sklearn(table, args.folds)
    print("| tool | fold val accuracy | mean ± std | test accuracy | wall s |")
    print("|---|---|---|---|---|")
    rows = [
        (
            f"dlrun trainer.folds={args.folds}",
            ours,
            f"{summary['test']['test/accuracy']:.4f} ± {summary['std']['test/accuracy']:.4f} "
            "(the folds' models)",
            wall,
        ),
        (
            f"scikit-learn MLPClassifier, KFold({args.folds})",
            theirs,
            f"{their_test:.4f} (one model fitted on all folds)",
            their_s,
        ),
    ]
    for tool, accs, test, seconds in rows:
        shown = ", ".join(f"{a:.4f}" for a in accs)
        spread = f"{statistics.fmean(accs):.4f} ± {statistics.stdev(accs):.4f}"
        print(f"| {tool} | {shown} | {spread} | {test} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
