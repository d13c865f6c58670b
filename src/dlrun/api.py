"""dlrun's Python API: a finished run directory as an object, for notebooks and scripts.

    import dlrun
    run = dlrun.load_run("outputs/2026-12-04/10-00-00")
    run.config["optimizer"]["lr"], run.summary["test"], run.metrics[-1]
    run.predict(["I loved it", "dull"])  # [Prediction("pos", 0.93), ...]

The run directory is read as data, exactly as ``dlrun-predict`` and ``dlrun-report``
read it (``dlrun.rundir.read``): the checkpoint loads with ``weights_only=True``,
JSON and YAML as plain data, and nothing in the folder can run code. A damaged or
foreign file raises ``dlrun.errors.UserError`` with one line naming it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from dlrun.errors import UserError, first_line


class Prediction(NamedTuple):
    """One input's answer: the label, text or value ``dlrun-predict`` prints, and the
    model's probability of it where the task has one (classification), else None."""

    prediction: str
    probability: float | None = None


def load_model(run_dir: Path | str, device: str = "cpu", checkpoint: dict | None = None):
    """(task, model) rebuilt from a run directory, model in eval mode on ``device``.

    The task and model come from the config saved in the run's best checkpoint (or its
    last) and the vocabularies the task saved; ``checkpoint``: that file, already read.
    """
    import torch

    from dlrun.errors import ConfigError
    from dlrun.plan.config import validate
    from dlrun.registry import task_entry
    from dlrun.rundir.layout import RunDir
    from dlrun.rundir.read import read_checkpoint

    run = RunDir(Path(run_dir).expanduser())
    path = run.find_checkpoint()
    # map_location: a model trained on a GPU loads on a CPU-only machine.
    ckpt = checkpoint if checkpoint is not None else read_checkpoint(path, map_location=device)
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


@dataclass
class Run:
    """A trained run: its config, summary and metrics as plain data, and its model.

    Attributes:
        path: the run directory.
        config: the resolved config the model was trained with (from its checkpoint).
        summary: ``summary.json`` (empty while the run has not finished).
        overrides: the command line's overrides, ``{"optimizer.lr": "0.1"}``.
        checkpoint: the checkpoint the model was loaded from (``best.pt``, else ``last.pt``).
        task, model: the task (with its vocabularies) and the model, in eval mode.
    """

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    overrides: dict[str, str]
    checkpoint: Path
    task: Any = field(repr=False)
    model: Any = field(repr=False)

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """Every record of ``metrics.jsonl`` in order: ``{"split": "val", "step": 100,
        "loss": ..., "accuracy": ...}`` (``pandas.DataFrame(run.metrics)`` makes a table)."""
        from dlrun.rundir.layout import RunDir
        from dlrun.rundir.read import read_jsonl

        path = RunDir(self.path).metrics
        return read_jsonl(path) if path.is_file() else []

    def predict(self, inputs: list[str], batch_size: int = 1024) -> list[Prediction]:
        """The model's answer to each input, in order.

        An input is what ``dlrun-predict`` takes on its command line: a text, an image
        file's path, a table's row as ``value,value,...`` in the run's feature order.
        """
        import torch

        if isinstance(inputs, str):
            raise UserError("predict takes a list of inputs, e.g. run.predict([text])")
        if batch_size < 1:
            raise UserError(f"batch_size={batch_size}: must be >= 1")
        inputs = [str(i) for i in inputs]
        if not inputs:
            return []
        with torch.inference_mode():
            answers = self.task.predict(self.model, inputs, batch_size)
        if len(answers) != len(inputs):  # a task's bug, not the user's
            raise RuntimeError(f"{len(inputs)} inputs gave {len(answers)} predictions")
        return [_prediction(a) for a in answers]


def _prediction(answer: str) -> Prediction:
    text, _, probability = answer.partition("\t")
    return Prediction(text, float(probability) if probability else None)


def load_run(path: Path | str, device: str = "cpu") -> Run:
    """The run directory at ``path`` (one that ``dlrun`` printed) with its model on
    ``device`` (``cpu``, ``cuda``, ``mps``, ``auto``). Raises ``UserError`` for a folder
    that is not a finished run or whose files are damaged."""
    from dlrun.engine.device import pick
    from dlrun.report.runs import load_run as read_run
    from dlrun.rundir.layout import RunDir
    from dlrun.rundir.read import read_checkpoint

    device = pick(device)  # auto: the best there is; a missing GPU is one line
    path = Path(path).expanduser()
    checkpoint = RunDir(path).find_checkpoint()
    ckpt = read_checkpoint(checkpoint, map_location=device)
    task, model = load_model(path, device, ckpt)
    files = read_run(path)  # summary.json and .hydra/, as dlrun-report reads them
    return Run(path, ckpt["config"], files.summary, files.overrides, checkpoint, task, model)
