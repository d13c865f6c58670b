"""Resume: continue a run from its own saved config, read as data.

The config comes from the run's ``checkpoints/last.pt`` (resolved when it was
written and loaded with ``weights_only=True``), never from its saved
overrides: nothing in a run directory can choose a Hydra callback, a launcher,
a ``_target_`` or where files are written, and no interpolation in it is
resolved again. A resume command may change only what continues a run.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.errors import UserError
from dlrun.rundir.layout import RunDir
from dlrun.rundir.read import select

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override

# How long, how often, where, and what is logged: all a resume may change.
CONTINUE = (
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.max_time",
    "trainer.patience",
    "trainer.stop_at",
    "trainer.eval_every",
    "trainer.log_every",
    "trainer.eval_batch_size",
    "trainer.num_samples",
    "trainer.also_eval",
    "trainer.eval_at_start",
    "trainer.checkpoint_every",
    "dataset.download",
    "device",
    "paths",
    "logger",
)
# Hydra keys a resume sets itself: it continues in the run's own directory and
# leaves the run's .hydra/ record as it was.
OWN_HYDRA_KEYS = ("hydra.run.dir", "hydra.output_subdir", "hydra.sweep.dir")
REFUSED = (
    "{key} cannot change when a run is resumed (only how long, how often, where and what is "
    "logged can: trainer.max_steps/max_epochs/max_time/patience/stop_at, "
    "trainer.eval_every/log_every, device, paths, logger); start a new run to change it"
)


def continues(key: str) -> bool:
    """Whether the config key (or group) ``key`` may change on resume."""
    return any(key == k or key.startswith(k + ".") for k in CONTINUE)


def check_unfinished(run: RunDir, state: Any, cfg) -> None:
    """Refuse to resume a finished run whose limits are already reached: it would only
    test again. One stopped after training (in its test, say) resumes to finish."""
    run_dir = run.path
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise UserError(f"{run.last}: no training state inside")
    if not run.finished():  # no summary, or a damaged one: the run did not finish
        return
    t = cfg.trainer
    reached = None
    if t.max_steps and state["step"] >= t.max_steps:
        reached = f"step {state['step']} of trainer.max_steps={t.max_steps}"
    elif t.max_epochs and state.get("epoch", 0) >= t.max_epochs:
        reached = f"epoch {state['epoch']} of trainer.max_epochs={t.max_epochs}"
    elif t.max_time and state.get("train_time", 0) >= t.max_time:
        reached = f"{state['train_time']:.0f}s of trainer.max_time={t.max_time}"
    if reached:
        raise UserError(
            f"resume={run_dir}: the run has already finished ({reached}); raise "
            "trainer.max_steps, trainer.max_epochs or trainer.max_time to train further"
        )
    if state.get("halt") not in (None, "pruned"):  # a pruned trial may train on
        raise UserError(
            f"resume={run_dir}: the run already stopped by {state['halt']} at step "
            f"{state['step']}; start a new run to train further"
        )


def check_same_data(run: RunDir, state: dict, cfg) -> None:
    """Refuse to resume on data that changed since the run began: its steps so far (and a
    cross-validation's finished folds) would mix with steps on other data."""
    from dlrun.engine.provenance import data_changes, data_fingerprints

    then = state.get("data")
    if not then:  # a run from before dlrun recorded it, or of generated data
        return
    change = data_changes(then, data_fingerprints(cfg.dataset))
    if change:
        raise UserError(
            f"resume={run.path}: {change} since the run began; resuming would train on "
            "other data: put the original back, or start a new run"
        )


def check_not_a_fold(run: RunDir, config: dict) -> None:
    """Refuse to resume one fold of a cross-validation run alone: its run continues it."""
    folds = select(config, "trainer.folds")
    if folds and not run.folds():
        raise UserError(
            f"resume={run.path}: one fold of a cross-validation run (trainer.folds={folds}); "
            f"resume the run it belongs to: {resume_command(run.path.parent)}"
        )


def assign(data: dict, key: str, value: Any) -> None:
    """``data['a']['b'] = value`` for ``'a.b'`` in plain nested dicts (made as needed)."""
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def check_overrides(
    run_dir: Path, parsed: list[Override], saved: dict, groups: set[str]
) -> list[Override]:
    """The overrides (as parsed by Hydra) that a resume passes on; refuses the rest.

    A key that would not continue the run is refused unless its value is the
    one the run already has (so pasting the original command still works).
    """
    keep = []
    for o in parsed:
        key = o.key_or_group
        if key == "resume" or continues(key):
            keep.append(o)
        elif key.startswith(OWN_HYDRA_KEYS):
            raise UserError(f"resume={run_dir}: {key} is set by resume itself; leave it out")
        elif key.startswith(("hydra.", "hydra/")):
            keep.append(o)  # the user's own Hydra settings for this command (logging...)
        elif not _unchanged(o, saved, groups):
            raise UserError(f"resume={run_dir}: " + REFUSED.format(key=key))
    return keep


def _unchanged(o, saved: dict, groups: set[str]) -> bool:
    if o.is_delete() or o.key_or_group == "experiment":
        return False
    key, value = o.key_or_group, o.value()
    if key in groups:  # task=imdb: the section the group chose
        return select(saved, f"{key}.name") == value
    return select(saved, key, default=object()) == value


def resumed_config(saved: dict, run_dir: Path, composed: dict, keys: list[str]) -> dict:
    """The run's ``saved`` config with this command's continuation ``keys`` from ``composed``.

    ``paths`` and ``logger`` always come from this command: they say where things are
    and where results go on this machine now, and a run directory someone hands you
    must not choose where files go or which tracking store is written (a resume logs
    to MLflow or W&B when its own command says so).
    """
    data = copy.deepcopy(saved)
    for key in keys:
        if continues(key) and not key.startswith(("paths", "logger")):
            assign(data, key, copy.deepcopy(select(composed, key)))
    data["logger"] = copy.deepcopy(composed["logger"])
    if "dataset.download" not in keys and isinstance(data.get("dataset"), dict):
        if "download" in data["dataset"]:
            data["dataset"]["download"] = False  # fetch only when this command says so
    data["paths"] = copy.deepcopy(composed["paths"])
    data["resume"] = str(run_dir)
    data.pop("tune", None)  # a search's trial continues as a plain run: its study moved on
    return data


_PLAIN = re.compile(r"[\w/.\-~+@: ]+")


def hydra_value(text: str) -> str:
    """``text`` as a value Hydra's override parser reads back unchanged."""
    if _PLAIN.fullmatch(text) and text == text.strip():
        return text
    escaped = text.replace("'", "\\'").replace("${", "\\${")
    return f"'{escaped}'"


def resume_command(run_dir: Path) -> str:
    """The command that continues ``run_dir``, safe to paste into a shell."""
    return "dlrun " + shlex.quote(f"resume={hydra_value(str(run_dir))}")
