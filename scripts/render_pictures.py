"""Render every picture dlrun writes, on tiny data, to look at each one.

    python scripts/render_pictures.py [OUT] [--only REGEX]      (default OUT: /tmp/dlrun-pictures)

Trains every built-in task for seconds (``dlrun.testing.tiny``; tabular twice, a
classification on two features for the decision boundary and a regression), runs a 2x2
sweep, an eight-trial search and ``dlrun-report`` over a folder of mixed runs, then lists
every PNG with its size in pixels. It fails when a command fails or prints a warning
(matplotlib's or any other) on stderr. Run it inside the CPU lock: a few minutes.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from dlrun.testing import tiny

BIN = Path(sys.executable).parent
SHORT = ["device=cpu", "trainer.max_steps=60", "trainer.eval_every=20", "trainer.log_every=5"]
RUNS: dict[str, list[str]] = {
    "dates": [],
    "algebra": [],
    "text_pairs": [],
    "imdb": [],
    "text": [],
    "kmnist": [],
    "images": [],
    "tabular": ["dataset.features=[feature1,feature2]"],
    "tabular_regression": [
        "task=tabular",
        "task.problem=regression",
        "dataset.target=feature2",
        "dataset.features=[feature1,shape]",
        "dataset.categorical=[shape]",
    ],
}


def run(command: list[str], log: Path) -> None:
    """``command``; its stderr kept in ``log``; fails on a non-zero exit or a warning."""
    done = subprocess.run(command, capture_output=True, text=True)
    log.write_text(done.stdout + done.stderr)
    warned = [line for line in done.stderr.splitlines() if re.search(r"[Ww]arning", line)]
    if done.returncode != 0 or warned:
        sys.exit(
            f"{' '.join(command)}\nexit {done.returncode}\n"
            + "\n".join(warned or done.stderr.splitlines()[-20:])
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("/tmp/dlrun-pictures"))
    parser.add_argument("--only", default="", help="a regex: render only the matching parts")
    args = parser.parse_args()
    out, data = args.out, args.out / "data"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    mixed = out / "mixed"
    dlrun = [str(BIN / "dlrun")]
    for name, extra in RUNS.items():
        if not re.search(args.only, name):
            continue
        task = name.partition("_regression")[0]
        settings = tiny(task, data)
        if name == "tabular_regression":
            settings = [s for s in settings if not s.startswith("dataset.target=")]
        else:
            extra = [f"task={task}", *extra]
        print(name, flush=True)
        command = [*dlrun, *extra, *settings, *SHORT, f"hydra.run.dir={mixed / name}"]
        run(command, out / f"{name}.log")
    dates = [*tiny("dates", data), *SHORT, "model=gru_seq2seq", "model.hidden_size=32"]
    dates += ["model.embedding_size=16"]
    if re.search(args.only, "sweep"):
        print("sweep", flush=True)
        sweep = [*dlrun, "-m", *dates, "optimizer.lr=3e-3,1e-2", "trainer.grad_clip=0.5,1.0"]
        run([*sweep, f"hydra.sweep.dir={out / 'sweep'}"], out / "sweep.log")
    if re.search(args.only, "search"):
        print("search", flush=True)
        table = ["task=tabular", *tiny("tabular", data), *SHORT, "hydra/sweeper=optuna"]
        search = [*dlrun, "-m", *table, "hydra.sweeper.n_trials=8"]
        search += ["optimizer.lr=tag(log, interval(1e-4, 3e-2))", "model.dropout=interval(0, 0.5)"]
        run([*search, f"hydra.sweep.dir={out / 'search'}"], out / "search.log")
    if mixed.is_dir() and re.search(args.only, "report"):
        print("report", flush=True)
        report = [str(BIN / "dlrun-report"), *map(str, sorted(mixed.iterdir()))]
        run([*report, "--out", str(out / "report")], out / "report.log")
    from PIL import Image

    for png in sorted(p for p in out.rglob("*.png") if data not in p.parents):
        with Image.open(png) as image:
            print(f"{image.width:5d} x {image.height:<5d} {png.relative_to(out)}")


if __name__ == "__main__":
    main()
