"""init_from: a new run that starts from another run's weights, under this command's config.

``init_from=RUN_DIR`` starts from that run's ``checkpoints/best.pt`` (its ``last.pt``
if it kept no best), ``init_from=RUN_DIR/checkpoints/last.pt`` from its last weights.
The new run has its own directory, a fresh optimizer and schedule, and step 0; only
the model's weights come over. The handed directory is read as data, as a resume's is
(``dlrun.rundir.read``: the checkpoint with ``weights_only=True``, its config as plain
data); nothing in it chooses what this command reads or writes.

What must agree, checked before anything is written: the task and model, every key
that shapes the weights (found by building the model both ways, never listed by
hand: ``model.width`` does, ``model.activation`` does not), and, once the data is read,
the vocabularies (``Task.vocabularies``): a changed one is refused, never remapped.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrun.errors import ConfigError, UserError, first_line, printable
from dlrun.plan.config import RunConfig, to_dict, validate
from dlrun.plan.resume import assign
from dlrun.rundir.layout import CHECKPOINTS, RunDir
from dlrun.rundir.read import read_checkpoint, select


@dataclass
class InitFrom:
    """The checkpoint a new run starts from, read once (by the plan, or by a sweep's job)."""

    given: str  # init_from as the command gave it, shown printable in messages
    run: RunDir  # the run it came from
    checkpoint: Path  # checkpoints/best.pt or last.pt
    config: RunConfig  # that run's config, as it trained
    step: int | None  # the step those weights were saved at
    weights: dict  # the model's state dict (each fold of a cross-validation starts from it)

    def record(self) -> dict[str, Any]:
        """What ``summary.json`` says of where the run started."""
        return {
            "path": str(self.run.path.resolve()),
            "checkpoint": self.checkpoint.name,
            "step": self.step,
        }


def read(given: str) -> InitFrom:
    """The run and checkpoint ``init_from=given`` names, read as data."""
    where = Path(given).expanduser()
    given = printable(given, 100)
    if where.suffix == ".pt":
        run = RunDir(where.parent.parent)
        names = [run.best.name, run.last.name]
        if where.parent.name != CHECKPOINTS or where.name not in names:
            raise UserError(
                f"init_from={given}: give a run directory (its best weights) or its "
                f"{CHECKPOINTS}/best.pt or {CHECKPOINTS}/last.pt"
            )
        if not where.is_file():
            raise UserError(f"init_from={given}: no such checkpoint")
        path = where
    else:
        run = RunDir(where)
        try:
            path = run.find_checkpoint()
        except UserError as exc:
            raise UserError(f"init_from={exc}") from None
    import torch  # here: planning a run without init_from imports no torch

    ckpt = read_checkpoint(path)
    if not all(isinstance(v, torch.Tensor) for v in ckpt["model"].values()):
        raise UserError(f"{path}: not a dlrun checkpoint (its model weights are not tensors)")
    try:
        config = validate(ckpt["config"], check_data=False)
    except ConfigError as exc:
        raise UserError(f"init_from={given}: the run's saved config is not valid ({exc})") from None
    state = ckpt.get("state")
    step = state.get("step") if isinstance(state, dict) else None
    return InitFrom(
        given, run, path, config, step if isinstance(step, int) else None, ckpt["model"]
    )


def check(cfg: RunConfig, init: InitFrom) -> None:
    """Refuse, in one line naming the key, a config whose model the weights do not fit."""
    src = init.config
    for key in ("task", "model"):
        old, new = getattr(src, key).name, getattr(cfg, key).name
        if old != new:
            raise UserError(
                f"init_from={init.given}: {key}={new} here, {key}={old} in that run; its "
                f"weights fit {key}={old} only"
            )
    shapes = {k: tuple(v.shape) for k, v in init.weights.items()}
    if _fits(cfg, init, shapes) is None:
        return
    # Which key: each that differs, alone on the run's own config.
    saved, wanted = to_dict(src), to_dict(cfg)
    for key in _differing(saved, wanted, ("dataset", "model")):
        trial = copy.deepcopy(saved)
        assign(trial, key, select(wanted, key))
        try:
            trial_cfg = validate(trial, check_data=False)
        except ConfigError:
            continue  # valid only with another key changed too
        if _fits(trial_cfg, init, shapes) is not None:
            raise UserError(
                f"init_from={init.given}: {key}={select(wanted, key)} here, "
                f"{select(saved, key)} in that run; it changes the model's weights (their "
                f"names or shapes), which fit {key}={select(saved, key)} only"
            )
    raise UserError(f"init_from={init.given}: {_fits(cfg, init, shapes)}")


def load_weights(model, init: InitFrom) -> None:
    """``init``'s weights into ``model``; one line if the data made a model they do not fit
    (a size the data decides, which the plan's check could not see)."""
    differs = _mismatch(model, init.weights)
    if differs:
        raise UserError(f"init_from={init.given}: {differs} (with this data)")
    model.load_state_dict(init.weights)


def _fits(cfg: RunConfig, init: InitFrom, shapes: dict[str, tuple]) -> str | None:
    """Why the weights do not fit the model ``cfg`` builds (with the run's vocabularies),
    or None if they do. Built on the meta device: no memory, no random numbers drawn."""
    import torch

    from dlrun.registry import task_entry

    task = task_entry(cfg.task.name).obj(cfg)
    try:
        task.load(init.run)
        with torch.device("meta"):
            model = task.build_model()
    except (UserError, ValueError) as exc:
        return f"its files do not fit this config ({first_line(exc, 120)})"
    return _mismatch(model, shapes)


def _mismatch(model, weights: dict) -> str | None:
    """The first weight (a tensor or its shape, by name) that ``model`` lacks or has in
    another shape, said in words; None if they all fit."""
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v) if isinstance(v, tuple) else tuple(v.shape) for k, v in weights.items()}
    for name in sorted(mine.keys() | theirs.keys()):
        if mine.get(name) != theirs.get(name):
            return (
                f"its weight {name} is {_shape(theirs.get(name))}, this config's model has "
                f"{_shape(mine.get(name))}"
            )
    return None


def _shape(shape: tuple | None) -> str:
    return "absent" if shape is None else "x".join(map(str, shape)) or "a scalar"


def _differing(a: dict, b: dict, sections: tuple[str, ...]) -> list[str]:
    """The dotted keys under ``sections`` whose values differ between ``a`` and ``b``."""

    def leaves(node: Any, prefix: str) -> dict[str, Any]:
        if not isinstance(node, dict) or not node:
            return {prefix: node}
        return {
            k: v for key, sub in node.items() for k, v in leaves(sub, f"{prefix}.{key}").items()
        }

    out = []
    for section in sections:
        left, right = leaves(a.get(section), section), leaves(b.get(section), section)
        out += [k for k in dict.fromkeys([*left, *right]) if left.get(k) != right.get(k)]
    return out


def check_vocabularies(task, init: InitFrom) -> None:
    """Refuse data whose vocabularies differ from the run's (``task`` prepared)."""
    from dlrun.registry import task_entry

    theirs = task_entry(init.config.task.name).obj(init.config)
    theirs.load(init.run)
    old, new = theirs.vocabularies(), task.vocabularies()
    for name in dict.fromkeys([*old, *new]):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if a is None or b is None:
            where = "this data" if a is None else "that run"
            differs = f"only {where} has {name}"
        elif len(a) != len(b):
            differs = f"{len(b)} entries here, {len(a)} in that run"
        else:
            i = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
            differs = (
                f"entry {i} is {printable(repr(b[i]), 40)} here, {printable(repr(a[i]), 40)} there"
            )
        raise UserError(
            f"init_from={init.given}: the data's {name} are not that run's ({differs}); its "
            "weights stand for that run's and are never remapped: train on data with the "
            f"same {name}, or without init_from"
        )
