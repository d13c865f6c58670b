"""debug=lr_find against the learning rates the task presets use, on real data.

    python scripts/bench_lr_find.py [--out DIR] [--cases digits kmnist] [--kmnist DIR]

For each case it runs ``dlrun ... debug=lr_find`` as a user would, reads the
suggestion (the smoothed loss's minimum / 10) and the steepest-descent rate from
its ``summary.json``, then trains the task's defaults three times, at the
preset's ``optimizer.lr``, at the suggestion and at the steepest rate, and
prints one Markdown table: the rates, the range test's steps and seconds, and
the test accuracy each rate reached (the task's defaults otherwise). Cases:
``digits`` (scikit-learn's bundled digits table as CSV, ``task=tabular``) and
``kmnist`` (``task=kmnist`` on the IDX files in ``--kmnist DIR``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def case_args(name: str, out: Path, kmnist: Path | None) -> tuple[list[str], str]:
    """The command line of a case and its monitored metric."""
    if name == "digits":
        sys.path.insert(0, str(HERE))
        from bench_tabular import write_table

        table = out / "digits.csv"
        if not table.exists():
            write_table("digits", table)
        return ["task=tabular", f"dataset.path={table}", "dataset.target=target"], "test/accuracy"
    if name == "kmnist":
        assert kmnist is not None  # main asks for it
        return ["task=kmnist", f"dataset.path={kmnist.resolve()}"], "test/accuracy"
    raise SystemExit(f"unknown case {name}; cases: digits, kmnist")


def dlrun(args: list[str], where: Path) -> tuple[dict, float]:
    """Run ``dlrun`` into ``where``; its summary and the command's seconds."""
    exe = str(Path(sys.executable).parent / "dlrun")
    started = time.monotonic()
    done = subprocess.run(
        [exe, *args, "device=cpu", f"hydra.run.dir={where}"], capture_output=True, text=True
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"dlrun {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return json.loads((where / "summary.json").read_text()), seconds


def preset_lr(args: list[str]) -> float:
    exe = str(Path(sys.executable).parent / "dlrun")
    shown = subprocess.run([exe, *args, "--cfg", "job"], capture_output=True, text=True).stdout
    import yaml

    return float(yaml.safe_load(shown)["optimizer"]["lr"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_lr_find"))
    parser.add_argument("--cases", nargs="+", default=["digits", "kmnist"])
    parser.add_argument("--kmnist", type=Path, help="KMNIST's IDX files (the kmnist case)")
    opts = parser.parse_args()
    if "kmnist" in opts.cases and opts.kmnist is None:
        parser.error("the kmnist case reads its IDX files from --kmnist DIR")
    rows = []
    for name in opts.cases:
        out = opts.out / name
        out.mkdir(parents=True, exist_ok=True)
        args, metric = case_args(name, out, opts.kmnist)
        summary, seconds = dlrun([*args, "debug=lr_find"], out / f"lr_find-{time.time_ns()}")
        found = summary["lr_find"]
        rates = {
            "preset": preset_lr(args),
            "suggested": found["suggested_lr"],
            "steepest": found["steepest_lr"],
        }
        reached = {}
        for label, lr in rates.items():
            trained, _ = dlrun([*args, f"optimizer.lr={lr:.3g}"], out / f"{label}-{time.time_ns()}")
            reached[label] = trained["test"][metric]
        rows.append(
            f"| {name} | {rates['preset']:.3g} | {rates['suggested']:.3g} | "
            f"{rates['steepest']:.3g} | {found['steps']}, {found['stopped']} | {seconds:.1f} | "
            + " / ".join(f"{reached[k]:.4f}" for k in rates)
            + " |"
        )
    print(
        "| case | preset lr | suggested (min / 10) | steepest | range test: steps, end | "
        "seconds | test accuracy at preset / suggested / steepest |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
