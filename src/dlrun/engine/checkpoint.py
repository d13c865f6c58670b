"""Checkpoints: written atomically, loaded with ``weights_only=True``.

A checkpoint's ``model`` is always the weights the run evaluates, keeps and tests:
every reader of a trained model (predict, ``load_run``, export, ``init_from``) loads
it. With ``trainer.ema`` those are the weights' average, and the optimizer's own
weights, which only a resume needs, are ``train_model`` (``Trainer._parts``).
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlrun.rundir.write import atomic_write

FULL_BELOW = 1 << 20  # bytes free under which a failed torch.save was a full disk


def save_atomic(obj: Any, path: Path) -> None:
    """Write to a temporary file beside ``path`` and rename it into place.

    A crash mid-write leaves the previous checkpoint intact, never a torn one.
    """
    atomic_write(path, lambda tmp: save(obj, tmp))


def save(obj: Any, path: Path) -> None:
    """``torch.save``, whose failed write (a full disk) is the ``OSError`` it is: torch
    reports one as a RuntimeError ("unexpected pos", "failed writing"), with no errno."""
    try:
        torch.save(obj, path)
    except RuntimeError as exc:
        # A write that failed for want of space has used up what there was.
        if shutil.disk_usage(path.parent).free < FULL_BELOW:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise


def load(path: Path, map_location: str | torch.device = "cpu") -> dict:
    # weights_only: a checkpoint someone hands you cannot execute code when loaded.
    return torch.load(path, map_location=map_location, weights_only=True)


def of(parts: dict[str, Any], state: dict, config: dict) -> dict:
    """A training checkpoint: the state dict of each part (None stays None), the
    progress ``state``, every RNG and the run's config, all plain data."""
    ckpt = {name: p.state_dict() if p is not None else None for name, p in parts.items()}
    return ckpt | {"state": state, "rng": rng_states(), "config": config}


def restore(ckpt: dict[str, Any], parts: dict[str, Any]) -> dict:
    """Load a checkpoint already read into ``parts`` (each moves what it loads onto its own
    device) and the RNGs; returns the saved progress state."""
    for name, part in parts.items():
        if part is not None and ckpt.get(name) is not None:
            part.load_state_dict(ckpt[name])
    set_rng_states(ckpt["rng"])
    return ckpt["state"]


def rng_states() -> dict:
    """Every RNG the run draws from, in a form ``weights_only`` loading accepts."""
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)  # legacy=True gives the tuple; numpy's stub allows a dict
    states = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(_as_tuple(states["python"]))
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    # RNG states are CPU byte tensors; a checkpoint loaded onto a GPU moved them there.
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
