"""Does ``trainer.ema`` help here? The same runs, same steps, with and without the average.

    python scripts/bench_ema.py [--out DIR] [--kmnist DIR] [--tasks kmnist digits]
                                [--seeds 0 1 2] [--decays 0 0.99 0.999]

For each task, seed and decay it runs ``dlrun`` as a user would and reads the test
metric of ``summary.json``:

- ``kmnist``: ``task=kmnist dataset.path=DIR`` (the development IDX files) with its
  defaults (kmnist_cnn, 10 epochs, best validation accuracy kept); ``trainer.seed`` varies.
- ``digits``: ``task=tabular`` on scikit-learn's digits table (written by
  ``bench_tabular.write_table``), 100 epochs without early stopping
  (``trainer.patience=null``: every run trains the same steps; a classifier keeps its
  last weights); ``dataset.seed`` and ``trainer.seed`` vary.

Decay 0 is ``trainer.ema=null``. Each run's result is kept under ``--out``/results and
reused by a later call with the same options, so the whole goes in several short calls.
Prints a Markdown table: test accuracy per decay, mean (sd) over the seeds, each seed's
difference from no average, and the training seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_tabular import cached, mean, sd, write_table  # noqa: E402

TASKS = {
    "kmnist": lambda data, seed: [
        "task=kmnist",
        f"dataset.path={data}",
        f"trainer.seed={seed}",
    ],
    "digits": lambda data, seed: [
        "task=tabular",
        f"dataset.path={data}",
        "dataset.target=target",
        f"dataset.seed={seed}",
        f"trainer.seed={seed}",
        "trainer.patience=null",
        "trainer.max_epochs=100",
    ],
}


def run_dlrun(args: list[str], out: Path) -> dict:
    exe = Path(sys.executable).with_name("dlrun")  # the dlrun of this Python's environment
    cmd = [str(exe), *args, "device=cpu", f"paths.output_dir={out / 'outputs'}"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
    if done.returncode:
        sys.exit(f"dlrun failed:\n{done.stderr[-2000:]}")
    run_dir = Path(done.stdout.split("run dir: ")[1].splitlines()[0])
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "accuracy": summary["test"]["test/accuracy"],
        "steps": summary["steps"],
        "train_s": summary["train_time_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_ema"))
    parser.add_argument("--kmnist", type=Path, help="KMNIST's IDX files (task kmnist)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--decays", nargs="+", type=float, default=[0.0, 0.99, 0.999])
    args = parser.parse_args()
    if "kmnist" in args.tasks and args.kmnist is None:
        parser.error("task kmnist reads its IDX files from --kmnist DIR")
    out = args.out.resolve()
    (out / "results").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DLRUN_CACHE_DIR", str(out / "cache"))
    lines = [
        f"Test accuracy over seeds {args.seeds}: mean (sd); the difference from no average "
        "per seed; training seconds (mean).",
        "",
        "| task | trainer.ema | steps | test accuracy | minus no average, per seed | training s |",
        "|---|---|---|---|---|---|",
    ]
    for task in args.tasks:
        if task == "digits":
            data = out / "digits.csv"
            write_table("digits", data)
        else:
            data = args.kmnist.resolve()
        results: dict[float, list[dict]] = {}
        for decay in args.decays:
            ema = f"trainer.ema={decay}" if decay else "trainer.ema=null"
            for seed in args.seeds:
                key = out / "results" / f"{task}-{decay}-{seed}.json"
                cmd = [*TASKS[task](data, seed), ema]
                results.setdefault(decay, []).append(cached(key, run_dlrun, cmd, out))
                print(task, decay, seed, results[decay][-1], file=sys.stderr, flush=True)
        base = [r["accuracy"] for r in results[args.decays[0]]]
        for decay, rs in results.items():
            acc = [r["accuracy"] for r in rs]
            diff = " ".join(f"{a - b:+.4f}" for a, b in zip(acc, base))
            lines.append(
                f"| {task} | {decay or 'null'} | {rs[0]['steps']} | {mean(acc):.4f} "
                f"({sd(acc):.4f}) | {diff} | {mean([r['train_s'] for r in rs]):.1f} |"
            )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
