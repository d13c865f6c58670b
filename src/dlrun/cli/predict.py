"""dlrun-predict RUN_DIR [TEXT ...]: answer new inputs with a trained run's best checkpoint.

With no TEXT it reads one input per line from stdin and writes one prediction
per line, in batches. The task and model are rebuilt from the config saved in
the run's checkpoint and its vocabularies, read as data; inputs are normalized
exactly as in training.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dlrun.errors import OneLineParser, UserError, first_line, one_line_errors, printable


def load_run(run_dir: Path, device: str = "cpu"):
    """(task, model) rebuilt from a run directory, model in eval mode on ``device``."""
    import torch

    from dlrun.errors import ConfigError
    from dlrun.plan.config import validate
    from dlrun.registry import task_entry
    from dlrun.rundir.layout import RunDir
    from dlrun.rundir.read import read_checkpoint

    run = RunDir(run_dir)
    path = run.find_checkpoint()
    # map_location: a model trained on a GPU loads on a CPU-only machine.
    ckpt = read_checkpoint(path, map_location=device)
    try:
        data = validate(ckpt["config"], check_data=False)
    except ConfigError as exc:
        raise UserError(f"{path}: the run's saved config is not valid here ({exc})") from None
    task = task_entry(data.task.name).obj(data)
    task.load(run)
    model = task.build_model()
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise UserError(
            f"{path}: its weights do not fit the model the run's config and vocabularies "
            f"describe ({first_line(exc, 120)}); the files of this run "
            "directory do not belong together"
        ) from None
    model.to(torch.device(device)).eval()
    return task, model


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="dlrun-predict", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory written by dlrun")
    parser.add_argument("inputs", nargs="*", help="inputs; none: read one per line from stdin")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    parser.add_argument("--batch-size", type=int, default=1024, help="inputs per batch (>= 1)")
    args = parser.parse_intermixed_args(argv)  # options may follow the inputs
    with one_line_errors("dlrun-predict"):
        if args.batch_size < 1:
            raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
        import torch

        from dlrun.engine.device import pick

        task, model = load_run(args.run_dir, pick(args.device))
        inputs = args.inputs or [line.rstrip("\n") for line in sys.stdin]
        with torch.inference_mode():  # one call: the task batches, and sees every input
            for prediction in task.predict(model, inputs, args.batch_size):
                # Fields stay TAB-separated; control characters inside a field are escaped.
                print("\t".join(printable(f, 10_000) for f in prediction.split("\t")))


if __name__ == "__main__":
    main()
