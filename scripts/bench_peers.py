#!/usr/bin/env python3
"""dlrun against scikit-learn on IMDB, back to back, from raw text with an empty cache.

    python scripts/bench_peers.py --imdb ../shared/data/aclImdb_dev.tar.gz
        [--preset experiment=imdb_ngram] [--append BENCHMARKS.md] [dlrun overrides...]

1. ``dlrun <preset> dataset.path=PATH device=cpu`` with a fresh, empty data cache:
   reading, tokenizing, counting, training, testing, every output file.
2. scikit-learn on the same reviews and the same split (dlrun's: the training
   reviews shuffled by ``dataset.seed``, the first ``dataset.val_fraction`` held out
   and not used; the test reviews for accuracy): TfidfVectorizer(ngram_range=(1, 2),
   min_df=2, sublinear_tf=True) + LogisticRegression(C=10, solver="liblinear").

Each runs as its own process; the table gives test accuracy, wall time from
command start to exit, and peak resident memory (GNU time's maximum RSS).
scikit-learn is a bench-only dependency: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PEER = r"""
import json, random, sys
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from dlrun.data.text import read_aclimdb

path, seed, val_fraction = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
reviews = read_aclimdb(path)
train = list(reviews["train"])
random.Random(seed).shuffle(train)  # dlrun's split: the first val_fraction are validation
train = train[round(val_fraction * len(train)):]
test = reviews["test"]
vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
x = vec.fit_transform([t for t, _, _ in train])
clf = LogisticRegression(C=10, solver="liblinear").fit(x, [y for _, y, _ in train])
pred = clf.predict(vec.transform([t for t, _, _ in test]))
acc = sum(int(p == y) for p, (_, y, _) in zip(pred, test)) / len(test)
print(json.dumps({"accuracy": acc, "train": len(train), "test": len(test)}))
"""


def measured(cmd: list[str], cwd: Path) -> dict:
    """Run ``cmd`` as a child; its wall time, peak RSS (MB, GNU time's %M) and output."""
    peak_file = cwd / "peak_kb"
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", str(peak_file), *cmd],
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{shlex.join(cmd)} failed:\n{done.stderr[-3000:]}")
    peak = int(peak_file.read_text().split()[-1])
    return {"wall_s": wall, "peak_mb": peak / 1024, "stdout": done.stdout, "stderr": done.stderr}


def dataset_settings(overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir

    from dlrun.plan.config import conf_dir

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return {"seed": cfg.dataset.seed, "val_fraction": cfg.dataset.val_fraction}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imdb", required=True, help="aclImdb folder or tarball")
    parser.add_argument("--preset", default="experiment=imdb_ngram")
    parser.add_argument("--append", type=Path, help="add the table to this Markdown file")
    parser.add_argument("overrides", nargs="*", help="more dlrun overrides")
    args = parser.parse_args()
    imdb = str(Path(args.imdb).expanduser().resolve())
    overrides = [args.preset, f"dataset.path={imdb}", "device=cpu", *args.overrides]
    split = dataset_settings(overrides)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dlrun_cmd = [
            str(Path(sys.executable).parent / "dlrun"),
            *overrides,
            f"paths.cache_dir={work / 'cache'}",  # empty: read, tokenize and count from raw text
            f"paths.output_dir={work / 'outputs'}",
        ]
        print("[bench_peers] dlrun ...", file=sys.stderr, flush=True)
        run = measured(dlrun_cmd, work)
        run_dir = max((work / "outputs").glob("*/*"), key=lambda p: p.stat().st_mtime)
        summary = json.loads((run_dir / "summary.json").read_text())
        rows.append(
            {
                "name": f"dlrun {args.preset}",
                "accuracy": summary["test"]["test/accuracy"],
                "wall_s": run["wall_s"],
                "peak_mb": run["peak_mb"],
                "detail": f"data {summary['data_time_s']:.1f} s, training "
                f"{summary['train_time_s']:.1f} s ({summary['epochs']:.0f} epochs)",
            }
        )
        print("[bench_peers] scikit-learn ...", file=sys.stderr, flush=True)
        peer_cmd = [
            sys.executable,
            "-c",
            PEER,
            imdb,
            str(split["seed"]),
            str(split["val_fraction"]),
        ]
        peer = measured(peer_cmd, work)
        result = json.loads(peer["stdout"].strip().splitlines()[-1])
        rows.append(
            {
                "name": "scikit-learn TF-IDF 1-2 grams + LogisticRegression(C=10, liblinear)",
                "accuracy": result["accuracy"],
                "wall_s": peer["wall_s"],
                "peak_mb": peer["peak_mb"],
                "detail": f"{result['train']} training, {result['test']} test reviews",
            }
        )
    import sklearn
    import torch

    import dlrun

    head = "| system | test accuracy | wall s (command to exit) | peak RSS MB | notes |"
    lines = [head, "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['accuracy']:.4f} | {r['wall_s']:.1f} | {r['peak_mb']:,.0f} "
            f"| {r['detail']} |"
        )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    command = "python scripts/bench_peers.py " + shlex.join(sys.argv[1:])
    text = (
        f"\n### Peers run {time.strftime('%Y-%m-%d')}\n\n`{command}`\n\n"
        f"torch {torch.__version__}, scikit-learn {sklearn.__version__}, dlrun "
        f"{dlrun.__version__}, Python {platform.python_version()}; commit {commit}\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print(text)
    if args.append:
        with args.append.open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
