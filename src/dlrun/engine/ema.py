"""``trainer.ema``: an exponential moving average of the weights, evaluated and kept.

After each optimizer step ``EMA.update`` moves the average towards the trained
weights: ``average = d * average + (1 - d) * weights`` for every parameter and
every floating-point buffer (BatchNorm's running statistics are averaged too, as
timm's ``ModelEmaV3`` and ``AveragedModel(use_buffers=True)`` do); integer
buffers (``num_batches_tracked``) are copied. The decay warms up as timm's does
(``warmup_gamma=1``, ``warmup_power=2/3``): the n-th update (from 0) uses
``d = min(decay, 1 - (1 + n) ** -2/3)``, so the first copies the weights and an
early average is not dominated by the untrained ones.

``torch.optim.swa_utils.AveragedModel`` does the same arithmetic, but its update
reads its step count from a device tensor (a host sync per step on a GPU) and
averages integer buffers through a float product; this holds its count in Python.
"""

from __future__ import annotations

import copy

import torch

WARMUP_POWER = 2 / 3  # timm ModelEmaV3's default


class EMA:
    """The averaged copy (``module``) of a model, in eval mode, with no gradients."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0  # the number of updates so far: the warm-up's step
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs: tuple[list, list, list] | None = None  # (averaged, trained, copied)

    def decay_at(self, n: int) -> float:
        """The decay of the ``n``-th update (from 0)."""
        return min(self.decay, 1.0 - (1.0 + n) ** -WARMUP_POWER)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One step of the average towards ``model``'s weights (the module it copied)."""
        if self._pairs is None:  # listed once: loading weights copies into these tensors
            mine = [*self.module.parameters(), *self.module.buffers()]
            pairs = list(zip(mine, [*model.parameters(), *model.buffers()], strict=True))
            floats = [(a, b) for a, b in pairs if a.is_floating_point()]
            others = [(a, b) for a, b in pairs if not a.is_floating_point()]
            self._pairs = ([a for a, _ in floats], [b for _, b in floats], others)
        averaged, trained, others = self._pairs
        if averaged:
            torch._foreach_lerp_(averaged, trained, 1.0 - self.decay_at(self.updates))
        for a, b in others:
            a.copy_(b)
        self.updates += 1

    # A checkpoint part, as a model or an optimizer is (its weights are saved as the model's).
    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"])
