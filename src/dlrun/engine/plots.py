"""Figures written into the run directory."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from dlrun.engine.writers import read_jsonl  # noqa: E402

SKIP = {"step", "epoch", "split", "lr", "samples_per_sec", "elapsed", "loss"}


def plot_curves(metrics_path: Path, out: Path) -> None:
    """Loss and every metric against the optimizer step, one line per evaluated split.

    Training loss comes from the logging intervals; the other lines from the
    evaluations (validation, and ``train_subset`` or ``test`` when evaluated
    during training). Final test results of the best checkpoint are not curves.
    """
    records = [r for r in read_jsonl(metrics_path) if "checkpoint" not in r]
    splits = list(dict.fromkeys(r["split"] for r in records))
    metric_names = sorted({k for r in records if r["split"] != "train" for k in r} - SKIP)
    fig, axes = plt.subplots(1, 1 + len(metric_names), figsize=(5 * (1 + len(metric_names)), 4))
    axes = list(axes) if metric_names else [axes]
    for ax, name in zip(axes, ["loss", *metric_names]):
        for split in splits:
            pts = [
                (r["step"], r[name])
                for r in records
                if r["split"] == split and isinstance(r.get(name), (int, float))
            ]
            if pts:
                ax.plot(
                    *zip(*pts),
                    label=split,
                    color=f"C{splits.index(split)}",
                    marker=None if split == "train" else ".",
                )
        ax.set(title=name, xlabel="step")
        if name == "loss":
            ax.set_yscale("log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
