#!/usr/bin/env python3
"""task=text against scikit-learn on multi-class real text, from the raw file.

    python scripts/bench_text.py --imdb ../shared/data/aclImdb_dev.tar.gz
        [--append BENCHMARKS.md] [--no-peer] [dlrun overrides, e.g. model=text_cnn]

1. Builds train.csv and test.csv (columns ``text``, ``label``) from the IMDB reviews:
   the official train and test reviews, labelled by the stars in their file names
   (``<id>_<stars>.txt``) binned into four classes: 1-2, 3-4, 7-8, 9-10 stars. Not timed.
2. ``dlrun task=text dataset.path=train.csv dataset.test_path=test.csv device=cpu`` with
   the default settings and an empty data cache: reading, tokenizing, counting,
   training, testing, every output file.
3. scikit-learn from the same files: ``TfidfVectorizer(ngram_range=(1, 2))`` +
   ``LogisticRegression(max_iter=1000)`` (``--tuned-peer``: bench_peers.py's tuned
   setting, ``min_df=2, sublinear_tf=True`` and ``C=10``, with lbfgs: liblinear is
   binary only now), trained on dlrun's training split (the validation texts,
   ``dataset.val_fraction`` per class, are left out), tested on test.csv.

Each runs as its own process (``bench_peers.measured``: wall time from command start
to exit, peak resident memory by GNU time). scikit-learn is a bench-only dependency.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_peers import ROOT, measured

STARS = {1: "1-2 stars", 2: "1-2 stars", 3: "3-4 stars", 4: "3-4 stars"}
STARS.update({7: "7-8 stars", 8: "7-8 stars", 9: "9-10 stars", 10: "9-10 stars"})

# (TfidfVectorizer's, LogisticRegression's) arguments: defaults, or bench_peers.py's tuned ones.
PEERS = {
    False: ({}, {"max_iter": 1000}),
    True: ({"min_df": 2, "sublinear_tf": True}, {"C": 10, "max_iter": 1000}),
}

PEER = r"""
import csv, json, sys
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from dlrun.data.image_files import stratified_split

train_path, test_path = sys.argv[1], sys.argv[2]
val_fraction, seed = float(sys.argv[3]), int(sys.argv[4])
vec_args, clf_args = json.loads(sys.argv[5]), json.loads(sys.argv[6])
csv.field_size_limit(sys.maxsize)

def read(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]

texts, labels = read(train_path)
classes = sorted(set(labels))
y = np.array([classes.index(label) for label in labels])
train = stratified_split(y, val_fraction, 0.0, seed)["train"]  # dlrun's training split
vec = TfidfVectorizer(ngram_range=(1, 2), **vec_args)
x = vec.fit_transform([texts[i] for i in train])
clf = LogisticRegression(**clf_args).fit(x, y[train])
test_texts, test_labels = read(test_path)
pred = clf.predict(vec.transform(test_texts))
acc = float(np.mean([classes[p] == t for p, t in zip(pred, test_labels)]))
print(json.dumps({"accuracy": acc, "train": len(train), "test": len(test_labels),
                  "features": x.shape[1], "iterations": int(np.max(clf.n_iter_))}))
"""


def write_csvs(imdb: Path, folder: Path) -> dict[str, Path]:
    """train.csv and test.csv of the reviews with their binned star ratings."""
    from dlrun.data.text import read_aclimdb

    paths = {}
    for split, rows in read_aclimdb(imdb).items():
        paths[split] = folder / f"{split}.csv"
        with paths[split].open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows((text, STARS[stars]) for text, _, stars in rows)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imdb", required=True, help="aclImdb folder or tarball")
    parser.add_argument("--append", type=Path, help="add the table to this Markdown file")
    parser.add_argument("--no-peer", action="store_true", help="time dlrun only")
    parser.add_argument("--tuned-peer", action="store_true", help="bench_peers.py's peer")
    parser.add_argument("overrides", nargs="*", help="more dlrun overrides")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = write_csvs(Path(args.imdb).expanduser().resolve(), work)
        counts = {s: sum(1 for _ in csv.reader(p.open(newline=""))) - 1 for s, p in paths.items()}
        overrides = [
            "task=text",
            f"dataset.path={paths['train']}",
            f"dataset.test_path={paths['test']}",
            "device=cpu",
            *args.overrides,
        ]
        dlrun_cmd = [
            str(Path(sys.executable).parent / "dlrun"),
            *overrides,
            f"paths.cache_dir={work / 'cache'}",  # empty: read, tokenize and count from raw text
            f"paths.output_dir={work / 'outputs'}",
        ]
        print("[bench_text] dlrun ...", file=sys.stderr, flush=True)
        run = measured(dlrun_cmd, work)
        run_dir = max((work / "outputs").glob("*/*"), key=lambda p: p.stat().st_mtime)
        summary = json.loads((run_dir / "summary.json").read_text())
        config = (run_dir / ".hydra" / "config.yaml").read_text()
        settings = yaml_dataset(config)
        rows.append(
            {
                "name": "dlrun " + " ".join(["task=text", *args.overrides]),
                "accuracy": summary["test"]["test/accuracy"],
                "wall_s": run["wall_s"],
                "peak_mb": run["peak_mb"],
                "detail": f"model {summary['model']}; data {summary['data_time_s']:.1f} s, "
                f"training {summary['train_time_s']:.1f} s ({summary['epochs']:.0f} epochs), "
                f"best val accuracy {summary['best']['val/accuracy']:.4f}",
            }
        )
        if not args.no_peer:
            print("[bench_text] scikit-learn ...", file=sys.stderr, flush=True)
            peer_cmd = [
                sys.executable,
                "-c",
                PEER,
                str(paths["train"]),
                str(paths["test"]),
                str(settings["val_fraction"]),
                str(settings["seed"]),
                *map(json.dumps, PEERS[args.tuned_peer]),
            ]
            peer = measured(peer_cmd, work)
            result = json.loads(peer["stdout"].strip().splitlines()[-1])
            rows.append(
                {
                    "name": peer_name(*PEERS[args.tuned_peer]),
                    "accuracy": result["accuracy"],
                    "wall_s": peer["wall_s"],
                    "peak_mb": peer["peak_mb"],
                    "detail": f"{result['train']} training, {result['test']} test reviews, "
                    f"{result['features']:,} features, {result['iterations']} iterations",
                }
            )
    report(args, rows, counts)


def peer_name(vec_args: dict, clf_args: dict) -> str:
    def call(name: str, args: dict) -> str:
        return f"{name}({', '.join(f'{k}={v!r}' for k, v in args.items())})"

    vec = call("TfidfVectorizer", {"ngram_range": (1, 2), **vec_args})
    return f"scikit-learn {vec} + {call('LogisticRegression', clf_args)}"


def yaml_dataset(config: str) -> dict:
    import yaml

    return yaml.safe_load(config)["dataset"]


def report(args: argparse.Namespace, rows: list[dict], counts: dict[str, int]) -> None:
    import torch

    import dlrun

    try:
        import sklearn

        peer_version = f", scikit-learn {sklearn.__version__}"
    except ImportError:
        peer_version = ""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line),
        platform.processor(),
    )
    amx = "amx_tile" in open("/proc/cpuinfo").read()
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
    command = "python scripts/bench_text.py " + shlex.join(sys.argv[1:])
    text = (
        f"\n#### Texts run {time.strftime('%Y-%m-%d %H:%M')}\n\n`{command}`\n\n"
        f"{counts['train']:,} training and {counts['test']:,} test reviews, four classes "
        f"(1-2, 3-4, 7-8, 9-10 stars). {cpu} ({'with' if amx else 'no'} amx_tile), "
        f"{torch.get_num_threads()} threads; torch {torch.__version__}{peer_version}, dlrun "
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
