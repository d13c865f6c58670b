"""Data at real size: time to ready-to-train and peak memory at 10x steps of size.

    python scripts/bench_size.py KIND SIZE [SIZE...] [--data /tmp/dlrun-size] [--stream]
        [--device cpu|cuda] [--first-build]

KIND is ``table`` (SIZE rows x 20 numeric columns: 19 features and a 0/1 label, as
CSV), ``text`` (SIZE synthetic reviews in the aclImdb layout, half train, half test,
task=imdb), ``text-csv`` (SIZE synthetic texts of 100-300 words drawn from a Zipf law
over 200,000 words, three classes, as one ``text,label`` CSV: task=text with its
defaults, uni+bigrams with naive-Bayes weights) or ``images`` (SIZE 32x32 RGB PNGs in
two class folders, task=images). Data are generated once under ``--data`` (never in
the repository); ``--first-build`` gives each run an empty data cache (removed after),
so that it times reading, tokenizing and building the cache. Each size runs
``dlrun`` as a user would, for a few training steps (``trainer.max_steps=20``), in a
process of its own; printed per size, as one Markdown row: the file or folder size,
the seconds from launch to the first training step (ready to train: imports, Hydra,
reading, statistics, the data to the device), the task's own data time, the whole
run's wall time, and the process's peak RSS when the first step began (summary.json's
``ready_memory_mb``) and over the whole run. ``--stream`` adds device.data=stream.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = "good bad great awful plot actor film movie scene music boring fun slow sharp".split()


def write_table(path: Path, n: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 19)).round(6)
    columns = {f"f{i}": x[:, i] for i in range(19)}
    columns["label"] = (x[:, :3].sum(1) > 0).astype(np.int64)
    pacsv.write_csv(pa.table(columns), path, pacsv.WriteOptions(quoting_style="none"))


def write_reviews(root: Path, n: int) -> None:
    rng = random.Random(0)
    for i in range(n):
        split, label = ("train", "test")[i % 2], ("neg", "pos")[(i // 2) % 2]
        words = [rng.choice(WORDS) for _ in range(rng.randint(100, 300))]
        words += ["great" if label == "pos" else "awful"] * 3
        folder = root / split / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(" ".join(words))


def write_texts_csv(path: Path, n: int) -> None:
    """``n`` texts of 100-300 words: a Zipf law over 200,000 words (so that the distinct
    words and bigrams keep growing with the data, as in real text), plus a few words that
    tell the three classes apart."""
    import csv

    import numpy as np

    rng = np.random.default_rng(0)
    words = np.array([f"w{i}" for i in range(200_000)])
    zipf = 1 / np.arange(1, words.size + 1)  # the k-th most frequent word: frequency 1/k
    labels = ("neg", "mixed", "pos")
    signs = {"neg": "awful", "mixed": "uneven", "pos": "great"}
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["text", "label"])
        for start in range(0, n, 10_000):
            rows = min(10_000, n - start)
            lengths = rng.integers(100, 301, rows)
            chosen = words[rng.choice(words.size, int(lengths.sum()), p=zipf / zipf.sum())]
            at = 0
            for i, length in enumerate(lengths.tolist()):
                label = labels[(start + i) % 3]
                text = " ".join(chosen[at : at + length].tolist())
                out.writerow([f"{text} {signs[label]} {signs[label]}.", label])
                at += length


def write_images(root: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        label = ("dark", "light")[i % 2]
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        base = 60 if label == "dark" else 180
        pixels = rng.integers(0, 70, (32, 32, 3), dtype=np.uint8) + base
        Image.fromarray(pixels).save(folder / f"{i}.png")


def data(kind: str, n: int, root: Path) -> tuple[Path, list[str]]:
    """The data set (made once) and the dlrun arguments that train on it."""
    if kind == "table":
        path = root / f"table_{n}.csv"
        if not path.exists():
            write_table(path, n)
        return path, ["task=tabular", f"dataset.path={path}", "dataset.target=label"]
    if kind == "text-csv":
        path = root / f"texts_{n}.csv"
        if not path.exists():
            tmp = root / f".texts_{n}.csv.tmp"
            write_texts_csv(tmp, n)
            tmp.rename(path)
        return path, ["task=text", f"dataset.path={path}"]
    path = root / f"{kind}_{n}"
    if not path.exists():
        tmp = root / f".{kind}_{n}.tmp"
        (write_reviews if kind == "text" else write_images)(tmp, n)
        tmp.rename(path)
    if kind == "text":  # validation: n // 10 of the n / 2 training reviews
        return path, ["task=imdb", f"dataset.path={path}", "dataset.val_fraction=0.2"]
    return path, ["task=images", f"dataset.path={path}", "dataset.image_size=32"]


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(kind: str, n: int, root: Path, stream: bool, device: str, first: bool) -> dict:
    path, args = data(kind, n, root)
    out = root / "runs"
    cache = Path(tempfile.mkdtemp(prefix="cache.", dir=root)) if first else root / "cache"
    cmd = [
        sys.executable,
        "-m",
        "dlrun.train",
        *args,
        f"device={device}",
        "trainer.max_steps=20",
        "trainer.eval_every=null",
    ]
    cmd += [f"paths.output_dir={out}", f"paths.cache_dir={cache}"]
    cmd += ["device.data=stream"] if stream else []
    start = time.time()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = child.communicate()
    if first:
        shutil.rmtree(cache, ignore_errors=True)
    if child.returncode:
        sys.exit(f"dlrun failed:\n{stderr[-2000:]}")
    run_dir = Path(stdout.split("run dir: ")[1].splitlines()[0])
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "kind": kind,
        "size": n,
        "mb": size_of(path) / 2**20,
        "ready_s": summary["first_step_at"] - start,
        "data_s": summary["data_time_s"],
        "wall_s": time.time() - start,
        "peak_mb": summary["peak_memory_mb"],
        "ready_mb": summary.get("ready_memory_mb") or float("nan"),
        "stream": stream,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["table", "text", "text-csv", "images"])
    parser.add_argument("sizes", nargs="+", type=lambda s: int(float(s)))
    parser.add_argument("--data", type=Path, default=Path("/tmp/dlrun-size"))
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--device", default="cpu", help="device= of the runs (cpu, cuda)")
    parser.add_argument(
        "--first-build", action="store_true", help="each run builds its data cache anew"
    )
    a = parser.parse_args()
    a.data.mkdir(parents=True, exist_ok=True)
    peak = "peak GPU MB allocated" if a.device.startswith("cuda") else "peak RSS MB"
    print(
        f"| data | size | on disk MB | ready to train s | data s | run wall s | {peak} when "
        f"ready | {peak} |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for n in a.sizes:
        r = measure(a.kind, n, a.data, a.stream, a.device, a.first_build)
        kind = r["kind"] + (" (streamed)" if r["stream"] else "")
        kind += ", first build" if a.first_build else ""
        print(
            f"| {kind} | {n:,} | {r['mb']:.1f} | {r['ready_s']:.1f} | {r['data_s']:.1f} | "
            f"{r['wall_s']:.1f} | {r['ready_mb']:.0f} | {r['peak_mb']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
