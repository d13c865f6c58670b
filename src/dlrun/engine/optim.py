"""The optimizer and learning-rate schedule a config names."""

from __future__ import annotations

import math

import torch


def build_optimizer(params, cfg, device: torch.device) -> torch.optim.Optimizer:
    name, lr, wd = cfg.name, cfg.lr, cfg.weight_decay
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=wd
        )
    fused = cfg.fused if cfg.fused is not None else device.type == "cuda"
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return cls(params, lr=lr, betas=tuple(cfg.betas), weight_decay=wd, fused=fused or None)


def build_scheduler(opt, cfg, total_steps: int | None):
    """Cosine decay with linear warmup, as a multiplier of the base learning rate."""
    if cfg.name == "none":
        return None
    warmup, floor = cfg.warmup_steps, cfg.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
