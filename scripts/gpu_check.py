"""Helpers of scripts/gpu_check.sh: tiny data sets, and checks of a finished run.

python scripts/gpu_check.py data DIR [--small]          # aclImdb/, KMNIST/raw/, pairs.tsv
python scripts/gpu_check.py verify RUN_DIR --device cuda --amp bf16 --steps 300 [--scaler]
python scripts/gpu_check.py step RUN_DIR                 # the step checkpoints/last.pt holds

``verify`` exits 1 with one line per problem: the run did not end ``ok`` after
exactly ``--steps`` steps on ``--device`` with autocast ``--amp``, a logged loss or
test metric is not finite, or (``--scaler``) fp16's GradScaler left no scale in
the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def write_data(folder: Path, small: bool) -> None:
    """The tests' tiny corpora (dlrun.testing.fake); ``small``: ten times more of each."""
    from dlrun.testing.fake import (
        write_aclimdb,
        write_image_folder,
        write_kmnist,
        write_points,
        write_text_pairs,
        write_texts,
    )

    scale = 10 if small else 1
    folder.mkdir(parents=True, exist_ok=True)
    write_aclimdb(folder, n_train=200 * scale, n_test=100 * scale)
    write_kmnist(folder / "KMNIST" / "raw", n_train=600 * scale, n_test=200 * scale)
    write_text_pairs(folder, n=400 * scale)
    write_texts(folder, n=240 * scale)
    write_points(folder, n=300 * scale)
    write_image_folder(folder / "images", per_class=30 * scale)
    print(f"wrote {folder}: aclImdb, KMNIST/raw, pairs.tsv, texts.csv, points.csv, images/")


def last_step(run_dir: Path) -> int:
    import torch

    path = run_dir / "checkpoints" / "last.pt"
    return torch.load(path, map_location="cpu", weights_only=True)["state"]["step"]


def verify(run_dir: Path, device: str, amp: str, steps: int, scaler: bool, world: int) -> list:
    problems = []
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        return [f"{summary_path}: missing"]
    summary = json.loads(summary_path.read_text())
    if summary.get("status") != "ok":
        return [f"status {summary.get('status')!r}: {summary.get('error')}"]
    described = summary["device"]
    print(f"device: {described}; steps {summary['steps']}; stop {summary['stop_reason']}")
    print(f"peak memory {summary['peak_memory_mb']} MB; first step {summary['first_step_s']} s")
    print("test: " + "  ".join(f"{k}={v:.4f}" for k, v in summary["test"].items()))
    if not described.startswith(device):
        problems.append(f"device {described!r}, expected {device}")
    if f"amp {amp}" not in described:
        problems.append(f"device {described!r}, expected amp {amp}")
    if summary["steps"] != steps:
        problems.append(f"{summary['steps']} steps ({summary['stop_reason']}), expected {steps}")
    if summary["world_size"] != world:
        problems.append(f"world_size {summary['world_size']}, expected {world}")
    bad = [k for k, v in summary["test"].items() if not math.isfinite(v)]
    if bad:
        problems.append(f"test metrics not finite: {bad}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    if not losses or not all(math.isfinite(x) for x in losses):
        problems.append(f"training losses {losses[:3]}...: none logged or not finite")
    else:
        print(f"training loss {losses[0]:.4f} -> {losses[-1]:.4f} ({len(losses)} logged)")
    if scaler:
        import torch

        ckpt = torch.load(
            run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True
        )
        state = ckpt["scaler"]
        if "scale" not in state:
            problems.append("the checkpoint holds no GradScaler scale: the scaler was off")
        else:
            print(f"GradScaler scale {state['scale']} (growth tracker {state['_growth_tracker']})")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data")
    data.add_argument("folder", type=Path)
    data.add_argument("--small", action="store_true")
    check = sub.add_parser("verify")
    check.add_argument("run_dir", type=Path)
    check.add_argument("--device", required=True)
    check.add_argument("--amp", required=True)
    check.add_argument("--steps", type=int, required=True)
    check.add_argument("--scaler", action="store_true")
    check.add_argument("--world", type=int, default=1)
    step = sub.add_parser("step")
    step.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    if args.command == "data":
        write_data(args.folder, args.small)
    elif args.command == "step":
        print(last_step(args.run_dir))
    else:
        problems = verify(args.run_dir, args.device, args.amp, args.steps, args.scaler, args.world)
        for problem in problems:
            print(f"verify: {problem}", file=sys.stderr)
        sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
