"""Models, registered by name in ``dlrun.registry.MODELS``."""

from __future__ import annotations

from typing import Any

from torch import nn

from dlrun.registry import model_entry


def build_model(model_cfg: Any, **task_args: Any) -> nn.Module:
    """Build the registered model named by ``model_cfg.name`` (its typed config).

    ``task_args`` are what the task knows and the config does not (vocabulary
    sizes, special token ids, number of classes).
    """
    return model_entry(model_cfg.name).obj(model_cfg, **task_args)
