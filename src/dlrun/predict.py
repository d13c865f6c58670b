"""dlrun-predict RUN_DIR [TEXT ...]: answer new inputs with a trained run's best checkpoint.

With no TEXT it reads one input per line from stdin and writes one prediction
per line, in batches. The task and model are rebuilt from the run's own config
and vocabularies; inputs are normalized exactly as in training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlrun.errors import UserError


def load_run(run_dir: Path, device: str = "cpu"):
    """(task, model) rebuilt from a run directory, model in eval mode on ``device``."""
    import torch
    from omegaconf import OmegaConf

    from dlrun.config import validate
    from dlrun.engine import checkpoint
    from dlrun.registry import task_entry

    config = run_dir / ".hydra" / "config.yaml"
    ckpt = next(
        (p for p in (run_dir / "checkpoints" / n for n in ("best.pt", "last.pt")) if p.is_file()),
        None,
    )
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    if not config.is_file() or ckpt is None:
        raise UserError(
            f"{run_dir}: not a complete dlrun run directory (needs .hydra/config.yaml "
            "and checkpoints/best.pt); pass the directory a finished `dlrun` printed"
        )
    data = validate(OmegaConf.load(config), check_data=False)
    task = task_entry(data["task"]["name"]).obj(data)
    try:
        task.load(run_dir)
    except FileNotFoundError as exc:
        raise UserError(
            f"{run_dir}: incomplete run directory, missing {Path(exc.filename).name}"
        ) from None
    model = task.build_model()
    # map_location: a model trained on a GPU loads on a CPU-only machine.
    model.load_state_dict(checkpoint.load(ckpt, map_location=device)["model"])
    model.to(torch.device(device)).eval()
    return task, model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dlrun-predict", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory written by dlrun")
    parser.add_argument("inputs", nargs="*", help="inputs; none: read one per line from stdin")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or mps")
    parser.add_argument("--batch-size", type=int, default=1024)
    args = parser.parse_args(argv)
    try:
        import torch

        task, model = load_run(args.run_dir, args.device)
        inputs = args.inputs or [line.rstrip("\n") for line in sys.stdin]
        with torch.inference_mode():
            for start in range(0, len(inputs), args.batch_size):
                chunk = inputs[start : start + args.batch_size]
                for prediction in task.predict(model, chunk, args.batch_size):
                    print(prediction)
    except UserError as exc:
        print(f"dlrun-predict: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
