"""dlrun-export RUN_DIR --format safetensors|onnx|torch.export: a trained model outside dlrun.

``--out DIR`` (default ``RUN_DIR/export``) gets the model and, beside it, the run's
resolved config (``config.json``) and what the task needs to encode inputs and read
outputs (its vocabularies, classes, a table's columns: the files ``dlrun-predict``
reads). ``safetensors`` is the weights (``model.safetensors``, no pickle). ``onnx``
(``model.onnx``) and ``torch.export`` (``model.pt2``) are programs of the model's
forward pass, traced on ``--example`` inputs (as ``dlrun-predict`` takes them: a
text, an image file, a row ``value,value,...``) with every dimension left dynamic.
A sequence model's prediction is a decoding loop, not one forward pass: it exports
as safetensors only (README, "Export").
"""

from __future__ import annotations

import json
from pathlib import Path

from dlrun.errors import OneLineParser, UserError, first_line, one_line_errors

FORMATS = {"safetensors": "model.safetensors", "onnx": "model.onnx", "torch.export": "model.pt2"}
CONFIG = "config.json"


def forward_inputs(task, model, inputs: list[str]) -> tuple[tuple, dict]:
    """The arguments ``task.predict`` calls ``model`` with for ``inputs``: what an
    exported forward pass takes. One line when prediction does not call the model's
    forward (a sequence model decodes step by step)."""
    import torch

    calls = []

    def record(module, args, kwargs):
        calls.append((args, kwargs))

    hook = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.inference_mode():
            task.predict(model, inputs, len(inputs))
    finally:
        hook.remove()
    if not calls:
        raise UserError(
            f"task={task.cfg.task.name}: its prediction decodes step by step and does not call "
            "the model's forward pass once; export it with --format safetensors"
        )
    args, kwargs = calls[0]
    return tuple(_clone(a) for a in args), {k: _clone(v) for k, v in kwargs.items()}


def _clone(value):
    import torch

    return value.clone() if isinstance(value, torch.Tensor) else value


def _dynamic(model, args: tuple, kwargs: dict) -> dict:
    """Every dimension of every tensor argument, by parameter name, left for the exporter
    to decide (``Dim.AUTO``): the program takes any batch size and length the model can."""
    import inspect

    import torch
    from torch.export import Dim

    bound = inspect.signature(model.forward).bind(*args, **kwargs).arguments
    return {
        name: {i: Dim.AUTO for i in range(v.dim())} if isinstance(v, torch.Tensor) else None
        for name, v in bound.items()
    }


def export(
    run_dir: Path, fmt: str, out: Path | None = None, examples: list[str] | None = None
) -> Path:
    """Export ``run_dir``'s model as ``fmt`` into ``out`` (default ``RUN_DIR/export``);
    returns the model file's path."""
    import torch

    from dlrun.api import load_model
    from dlrun.rundir.layout import RunDir
    from dlrun.rundir.read import read_checkpoint
    from dlrun.rundir.write import atomic_write, write_text_atomic

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    run = RunDir(Path(run_dir).expanduser())
    ckpt = read_checkpoint(run.find_checkpoint())
    task, model = load_model(run.path, "cpu", ckpt)
    model.float()  # a portable program: fp32 weights, whatever the run trained in
    if fmt != "safetensors":
        if not examples:
            raise UserError(
                f"--format {fmt} traces the model on an input: give one as dlrun-predict "
                "takes it, e.g. --example 'a short text' (or an image file, or a table's row)"
            )
        inputs = task.inputs_from_lines(examples)
        # Two at least: a dimension of size 1 is taken for a constant by the exporter.
        args, kwargs = forward_inputs(task, model, inputs * (2 if len(inputs) == 1 else 1))
    out = Path(out).expanduser() if out is not None else run.export
    if RunDir(out).summary.is_file() or RunDir(out).checkpoints.is_dir():
        raise UserError(
            f"--out {out}: a run directory; its files would be replaced: name a new folder"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot make the folder ({first_line(exc, 80)})") from None
    target = out / FORMATS[fmt]
    if fmt == "safetensors":
        try:
            from safetensors.torch import save_file
        except ImportError:
            raise UserError(
                "--format safetensors needs the safetensors package: pip install 'dlrun[export]'"
            ) from None

        # Contiguous copies: tied weights are stored under each name, as the state dict has them.
        tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        meta = {"task": task.cfg.task.name, "model": task.cfg.model.name, "format": "pt"}
        atomic_write(target, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    else:
        dynamic = _dynamic(model, args, kwargs)
        try:
            with torch.no_grad():
                program = torch.export.export(
                    model, args, kwargs, dynamic_shapes=dynamic, strict=False
                )
                if fmt == "onnx":
                    onnx = torch.onnx.export(program, args, kwargs=kwargs, dynamo=True)
        except ImportError as exc:
            raise UserError(
                f"--format onnx needs onnx and onnxscript ({first_line(exc, 80)}): "
                "pip install 'dlrun[export]'"
            ) from None
        if fmt == "onnx":
            assert onnx is not None  # dynamo=True returns the program
            atomic_write(target, lambda tmp: onnx.save(str(tmp)))
        else:
            atomic_write(target, lambda tmp: torch.export.save(program, str(tmp)))
    write_text_atomic(out / CONFIG, json.dumps(ckpt["config"], indent=2) + "\n")
    task.save(RunDir(out))  # vocabularies, classes, columns: what encoding inputs needs
    return target


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="dlrun-export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory written by dlrun")
    parser.add_argument("--format", required=True, choices=list(FORMATS), dest="fmt")
    parser.add_argument("--out", type=Path, help="the folder to write (default: RUN_DIR/export)")
    parser.add_argument(
        "--example",
        action="append",
        default=[],
        help="an input to trace onnx and torch.export on, as dlrun-predict takes it (repeatable)",
    )
    args = parser.parse_args(argv)
    with one_line_errors("dlrun-export"):
        target = export(args.run_dir, args.fmt, args.out, args.example)
    print(f"wrote {target} (with {CONFIG} and the task's files beside it)")


if __name__ == "__main__":
    main()
