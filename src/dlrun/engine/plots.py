"""Figures written into the run directory."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from dlrun.rundir.read import read_jsonl  # noqa: E402
from dlrun.rundir.write import save_figure  # noqa: E402

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
    save_figure(fig, out)
    plt.close(fig)


def plot_confusion(confusion, classes: tuple[str, ...], out: Path, title: str) -> None:
    """A confusion matrix (rows: true class, columns: predicted), row-normalized colours."""
    counts = confusion.double()
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k, 0.8 + 0.6 * k))
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            color = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set(xlabel="predicted", ylabel="true", title=f"{title}: accuracy {rates.diag().mean():.4f}")
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)


def plot_activation_maps(image, maps, out: Path, title: str) -> None:
    """One input image beside the activation maps of a layer (seed 002, 2.5)."""
    n = maps.shape[0]
    cols = min(n, 8)
    rows = 1 + (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0][0].imshow(image.numpy(), cmap="gray")
    axes[0][0].set_title("input", fontsize=8)
    for c in range(n):
        ax = axes[1 + c // cols][c % cols]
        ax.imshow(maps[c].numpy(), cmap="viridis")
        ax.set_title(f"channel {c}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)


def plot_overlaid_curves(
    curves: list[tuple[str, Path]], val_split: str, metric: str, out: Path
) -> None:
    """Training loss and the validation metric of several runs against the step, overlaid.

    ``curves`` holds (label, metrics.jsonl) pairs; a run without a metrics file is skipped.
    """
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (label, path) in enumerate(curves):
        if not path.is_file():
            continue
        records = [r for r in read_jsonl(path) if "checkpoint" not in r]
        for ax, split, name in ((loss_ax, "train", "loss"), (metric_ax, val_split, metric)):
            pts = [
                (r["step"], r[name])
                for r in records
                if r["split"] == split and isinstance(r.get(name), (int, float))
            ]
            if pts:
                ax.plot(*zip(*pts), label=label, color=f"C{i % 10}")
    loss_ax.set(title="training loss", xlabel="step", yscale="log")
    metric_ax.set(title=f"{val_split}/{metric}", xlabel="step")
    for ax in (loss_ax, metric_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)


def plot_metric_vs(
    series: dict[str, list[tuple]],
    xlabel: str,
    ylabel: str,
    out: Path,
    logx: bool = False,
    categorical: bool = False,
) -> None:
    """One line per series of (x, y) points: e.g. accuracy against the learning rate."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ticks = list(dict.fromkeys(x for pts in series.values() for x, _ in pts))
    for i, (name, pts) in enumerate(series.items()):
        if categorical:
            pts = [(ticks.index(x), y) for x, y in pts]
        pts = sorted(pts)
        ax.plot(*zip(*pts), marker="o", label=name, color=f"C{i % 10}")
    if categorical:
        ax.set_xticks(range(len(ticks)), ticks, rotation=20, ha="right")
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{ylabel} vs {xlabel}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)


def plot_grouped_bars(
    values: dict[tuple[str, str], float], xkey: str, group_key: str, ylabel: str, out: Path
) -> None:
    """Bars of ``values[(x, group)]``: one cluster per x value, one colour per group value."""
    xs = list(dict.fromkeys(x for x, _ in values))
    groups = list(dict.fromkeys(g for _, g in values))
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(xs) * len(groups) ** 0.5), 4.5))
    for j, group in enumerate(groups):
        pos = [
            i + (j - (len(groups) - 1) / 2) * width
            for i, x in enumerate(xs)
            if (x, group) in values
        ]
        ys = [values[(x, group)] for x in xs if (x, group) in values]
        ax.bar(pos, ys, width, label=f"{group_key}={group}", color=f"C{j % 10}")
    ax.set_xticks(range(len(xs)), xs)
    ax.set(xlabel=xkey, ylabel=ylabel, title=f"{ylabel} by {xkey} and {group_key}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)


def plot_image_grid(images, labels: list[tuple[str, str]], out: Path, title: str) -> None:
    """uint8 (N, H, W, C) images in a grid, each titled true/predicted (red when wrong)."""
    n = len(images)
    cols = min(8, max(1, n))
    rows = max(1, (n + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.75 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, (true, pred)) in enumerate(zip(images, labels, strict=True)):
        ax = axes[i // cols][i % cols]
        pixels = image.numpy()
        if pixels.shape[-1] == 1:
            ax.imshow(pixels[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(pixels)
        color = "black" if true == pred else "red"
        shown = [s[:14].replace("$", r"\$") for s in (true, pred)]  # no mathtext
        ax.set_title(f"true {shown[0]}\npred {shown[1]}", fontsize=7, color=color)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)


def plot_table(names: list[str], values, labels, classes: tuple[str, ...], out: Path) -> None:
    """A histogram per column of ``values`` (N, len(names), NaN = missing) and a scatter of
    the first two, coloured by ``labels`` (class indices) when there are classes."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    panels = len(names) + (1 if len(names) >= 2 else 0)
    cols = min(panels, 4)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    flat = axes.ravel()
    for i, name in enumerate(names):
        column = values[:, i]
        flat[i].hist(column[np.isfinite(column)], bins=20, color=f"C{i % 10}", alpha=0.8)
        flat[i].set(title=name, xlabel=name, ylabel="rows")
    if len(names) >= 2:
        ax = flat[len(names)]
        both = np.isfinite(values[:, 0]) & np.isfinite(values[:, 1])
        # A colour map only with colours: matplotlib warns about a map it would ignore.
        colour = {} if labels is None else {"c": np.asarray(labels)[both], "cmap": "tab10"}
        if colour:
            colour.update(vmin=0, vmax=9)
        points = ax.scatter(values[both, 0], values[both, 1], s=8, **colour)
        if labels is not None and classes:
            handles = points.legend_elements()[0]
            ax.legend(handles, classes[: len(handles)], fontsize=7, title="label")
        ax.set(xlabel=names[0], ylabel=names[1], title=f"{names[1]} vs {names[0]}")
    for ax in flat[panels:]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)


def plot_predicted_vs_true(
    true, predicted, name: str, out: Path, title: str, max_points: int = 5000
) -> None:
    """A regression's predictions against the true values (one point per row, at most
    ``max_points``), with the diagonal where they would be equal."""
    import numpy as np

    true, predicted = np.asarray(true, dtype=float)[:max_points], np.asarray(predicted)[:max_points]
    lo = float(min(true.min(), predicted.min()))
    hi = float(max(true.max(), predicted.max()))
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1, label="predicted = true")
    ax.scatter(true, predicted, s=10, alpha=0.7, color="C0")
    ax.set(xlabel=f"true {name}", ylabel=f"predicted {name}", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)


def plot_decision_boundary(
    classify, points, labels, predictions, classes, names, out: Path, title: str, steps: int = 200
) -> None:
    """The class ``classify`` gives each point of a grid spanning ``points`` (N, 2), with
    the points on top coloured by their label and the misclassified ones marked."""
    import torch

    lo, hi = points.min(0).values, points.max(0).values
    pad = 0.05 * (hi - lo).clamp(min=1e-6)
    xs = torch.linspace(float(lo[0] - pad[0]), float(hi[0] + pad[0]), steps)
    ys = torch.linspace(float(lo[1] - pad[1]), float(hi[1] + pad[1]), steps)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    regions = classify(torch.stack([gx.ravel(), gy.ravel()], 1)).view(steps, steps)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.contourf(
        gx, gy, regions, levels=torch.arange(k + 1) - 0.5, cmap="tab10", vmin=0, vmax=9, alpha=0.35
    )
    ax.scatter(
        points[:, 0],
        points[:, 1],
        c=labels,
        cmap="tab10",
        vmin=0,
        vmax=9,
        s=14,
        edgecolors="k",
        linewidths=0.3,
    )
    wrong = predictions != labels
    if wrong.any():
        ax.scatter(
            points[wrong, 0],
            points[wrong, 1],
            marker="x",
            c="red",
            s=60,
            label=f"{int(wrong.sum())} misclassified",
        )
        ax.legend(fontsize=8)
    ax.set(xlabel=names[0], ylabel=names[1], title=title)
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)
