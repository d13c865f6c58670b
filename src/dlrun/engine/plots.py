"""Figures written into the run directory."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from dlrun.engine.writers import read_jsonl  # noqa: E402

SKIP = {"step", "epoch", "split", "lr", "samples_per_sec", "elapsed", "loss"}


def plot_curves(metrics_path: Path, out: Path) -> None:
    """Loss (train and val) and every other metric against the optimizer step."""
    records = read_jsonl(metrics_path)
    metric_names = sorted({k for r in records if r["split"] != "train" for k in r} - SKIP)
    fig, axes = plt.subplots(1, 1 + len(metric_names), figsize=(5 * (1 + len(metric_names)), 4))
    axes = list(axes) if len(metric_names) else [axes]
    for split in ("train", "val"):
        pts = [
            (r["step"], r["loss"])
            for r in records
            if r["split"] == split and isinstance(r.get("loss"), float)
        ]
        if pts:
            axes[0].plot(*zip(*pts), label=split, marker="." if split == "val" else None)
    axes[0].set(title="loss", xlabel="step", yscale="log")
    for ax, name in zip(axes[1:], metric_names):
        pts = [(r["step"], r[name]) for r in records if r["split"] == "val" and name in r]
        if pts:
            ax.plot(*zip(*pts), marker=".", label="val")
        ax.set(title=name, xlabel="step")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
