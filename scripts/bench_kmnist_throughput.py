"""KMNIST training throughput (images/s) on synthetic data, through the real `dlrun`.

    python scripts/bench_kmnist_throughput.py --steps 200 -- model=resnet device=cuda

Writes 60,000 + 10,000 random 28x28 images as IDX files into a temporary
folder (the real files cannot be fetched everywhere; throughput does not
depend on the pixels), runs `dlrun task=kmnist` on them for --steps steps
with the given overrides, and prints the training samples per second that
the run logged (the first logging window, which includes warm-up, is left out).
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes(), compresslevel=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("overrides", nargs="*", help="dlrun overrides, after --")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "KMNIST" / "raw"
        folder.mkdir(parents=True)
        for prefix, n in (("train", 60_000), ("t10k", 10_000)):
            write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
            write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
        log_every = max(1, args.steps // 10)
        cmd = [
            "dlrun",
            "task=kmnist",
            f"dataset.path={folder}",
            f"trainer.max_steps={args.steps}",
            "trainer.max_epochs=null",
            f"trainer.eval_every={args.steps}",
            f"trainer.log_every={log_every}",
            f"paths.output_dir={tmp}/outputs",
            *args.overrides,
        ]
        print(" ".join(c for c in cmd if not c.startswith("dataset.path=")), flush=True)
        subprocess.run(cmd, check=True, stdout=sys.stderr)
        metrics = next(Path(tmp, "outputs").rglob("metrics.jsonl"))
        train = [json.loads(line) for line in metrics.read_text().splitlines()]
        rates = [r["samples_per_sec"] for r in train if r["split"] == "train"][1:]
        summary = json.loads((metrics.parent / "summary.json").read_text())
    print(
        f"{summary['model']} on {summary['device']}, batch "
        f"{summary['samples'] // summary['steps']}: median {statistics.median(rates):,.0f} "
        f"images/s over {len(rates)} logging windows (torch {summary['torch']})"
    )


if __name__ == "__main__":
    main()
