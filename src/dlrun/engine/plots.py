"""Figures written into the run directory."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from dlrun.engine.palette import (  # noqa: E402
    MIN_INCHES,
    class_colours,
    log_scale,
    series_colour,
    split_colour,
)
from dlrun.rundir.read import read_jsonl  # noqa: E402
from dlrun.rundir.write import save_figure  # noqa: E402

SKIP = {"step", "epoch", "split", "lr", "samples_per_sec", "elapsed", "loss"}


def train_loss_windows(records: list[dict]) -> list[tuple[int, float]]:
    """The training loss as (step, mean) over equal windows of steps.

    The trainer logs every ``log_every`` steps and also at each evaluation, so an epoch
    end leaves a short window whose mean is noisier than the rest. The records are
    re-averaged, weighted by the steps each covers, over windows of the usual width
    (the commonest distance between records), each plotted at its end; a last window
    shorter than the others is left out.
    """
    pts = [
        (r["step"], r["loss"])
        for r in records
        if r["split"] == "train" and isinstance(r.get("loss"), (int, float))
    ]
    if len(pts) < 3:
        return pts
    gaps = [b - a for (a, _), (b, _) in zip(pts, pts[1:]) if b > a]
    if not gaps:
        return pts
    width = max(set(gaps), key=lambda g: (gaps.count(g), g))
    sums: dict[int, list[float]] = {}  # window -> [weighted sum, steps covered]
    prev = None
    for step, loss in pts:
        span = step - prev if prev is not None and step > prev else width
        prev = step
        window = sums.setdefault(-(-step // width), [0.0, 0])
        window[0] += loss * span
        window[1] += span
    out = [(k * width, total / steps) for k, (total, steps) in sorted(sums.items())]
    last = sorted(sums)[-1]
    if len(out) > 1 and sums[last][1] < width:
        out.pop()
    return out


def _points(records: list[dict], split: str, name: str) -> list[tuple[int, float]]:
    if split == "train" and name == "loss":
        return train_loss_windows(records)
    return [
        (r["step"], r[name])
        for r in records
        if r["split"] == split and isinstance(r.get(name), (int, float))
    ]


def plot_curves(metrics_path: Path, out: Path) -> None:
    """Loss and every metric against the optimizer step, one line per evaluated split.

    Training loss comes from the logging intervals (re-averaged over equal windows:
    ``train_loss_windows``); the other lines from the evaluations (validation, and
    ``train_subset`` or ``test`` when evaluated during training). Final test results of
    the best checkpoint are not curves. Each split has its colour in every figure
    (``dlrun.engine.palette``); the loss axis is logarithmic only when it spans decades.
    """
    records = [r for r in read_jsonl(metrics_path) if "checkpoint" not in r]
    splits = sorted(
        dict.fromkeys(r["split"] for r in records),
        key=lambda s: (s != "train", s != "val", s),
    )
    metric_names = sorted({k for r in records if r["split"] != "train" for k in r} - SKIP)
    panels = 1 + len(metric_names)
    width = max(MIN_INCHES, 4.2 * panels)
    fig, axes = plt.subplots(1, panels, figsize=(width, 4.2), squeeze=False, layout="constrained")
    for ax, name in zip(axes[0], ["loss", *metric_names]):
        values = []
        for split in splits:
            pts = _points(records, split, name)
            if pts:
                values += [y for _, y in pts]
                ax.plot(
                    *zip(*pts),
                    label=split,
                    color=split_colour(split),
                    marker=None if split == "train" else ".",
                )
        ax.set(title=name, xlabel="step")
        if log_scale(values):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    save_figure(fig, out)
    plt.close(fig)


def plot_confusion(confusion, classes: tuple[str, ...], out: Path, title: str) -> None:
    """A confusion matrix (rows: true class, columns: predicted), row-normalized colours;
    the title gives the accuracy over all examples and the mean of the per-class ones."""
    counts = confusion.double()
    rates = counts / counts.sum(1, keepdim=True).clamp(min=1)
    k = len(classes)
    side = max(MIN_INCHES, 1.5 + 0.45 * k)
    fontsize = max(5.0, min(14.0, 160 / max(k, 1)))
    fig, ax = plt.subplots(figsize=(side + 1.2, side), layout="constrained")
    image = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class", shrink=0.8)
    for i in range(k):
        for j in range(k):
            color = "white" if rates[i, j] > 0.5 else "black"
            count = str(int(counts[i, j]))
            ax.text(j, i, count, ha="center", va="center", fontsize=fontsize, color=color)
    labels = [str(c)[:20] for c in classes]
    ax.set_xticks(range(k), labels, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), labels)
    total = float(counts.sum())
    accuracy = float(counts.diag().sum()) / max(total, 1)
    ax.set(
        xlabel="predicted",
        ylabel="true",
        title=f"{title}: accuracy {accuracy:.4f} of {int(total)} examples, "
        f"per-class mean {float(rates.diag().mean()):.4f}",
    )
    save_figure(fig, out)
    plt.close(fig)


def plot_activation_maps(image, maps, out: Path, title: str) -> None:
    """One input image beside the activation maps of a layer (seed 002, 2.5)."""
    n = maps.shape[0]
    cols = min(n, 8)
    rows = 1 + (n + cols - 1) // cols
    size = (max(MIN_INCHES, 1.6 * cols), 1.7 * rows * max(1.0, MIN_INCHES / (1.6 * cols)))
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    axes[0][0].imshow(image.numpy(), cmap="gray")
    axes[0][0].set_title("input", fontsize=8)
    # One colour scale for every channel, so that channels compare, and its bar as legend.
    low, high = float(maps.min()), float(maps.max())
    for c in range(n):
        ax = axes[1 + c // cols][c % cols]
        shown = ax.imshow(maps[c].numpy(), cmap="viridis", vmin=low, vmax=high)
        ax.set_title(f"channel {c}", fontsize=8)
    if n:
        fig.colorbar(shown, ax=axes[1:, :].ravel().tolist(), shrink=0.9, label="activation")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, out)
    plt.close(fig)


def _legend_below(fig, ax, ncol: int = 3) -> None:
    """``ax``'s legend under the figure, never over the data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=8)


def plot_overlaid_curves(
    curves: list[tuple[str, Path]], val_split: str, metric: str, out: Path
) -> None:
    """Training loss and the validation metric of several runs against the step, overlaid.

    ``curves`` holds (label, metrics.jsonl) pairs; a run without a metrics file is skipped.
    The legend (one colour per run) sits under the plots.
    """
    fig, (loss_ax, metric_ax) = plt.subplots(
        1, 2, figsize=(12, 4.5 + 0.2 * ((len(curves) + 2) // 3)), layout="constrained"
    )
    losses = []
    for i, (label, path) in enumerate(curves):
        if not path.is_file():
            continue
        records = [r for r in read_jsonl(path) if "checkpoint" not in r]
        for ax, split, name in ((loss_ax, "train", "loss"), (metric_ax, val_split, metric)):
            pts = _points(records, split, name)
            if pts:
                ax.plot(*zip(*pts), label=label, color=series_colour(i))
                if ax is loss_ax:
                    losses += [y for _, y in pts]
    loss_ax.set(title="training loss", xlabel="step")
    if log_scale(losses):
        loss_ax.set_yscale("log")
    metric_ax.set(title=f"{val_split}/{metric}", xlabel="step")
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
    _legend_below(fig, loss_ax)
    save_figure(fig, out)
    plt.close(fig)


def plot_metric_vs(
    series: dict[str, list[tuple]],
    xlabel: str,
    ylabel: str,
    out: Path,
    logx: bool = False,
    categorical: bool = False,
    points: bool = False,
) -> None:
    """One line per series of (x, y) points: e.g. accuracy against the learning rate;
    ``points``: markers alone (runs that vary in more than x, as a search's trials).

    Categorical x values are placed in sorted order (numbers by value)."""
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    ticks = sorted({x for pts in series.values() for x, _ in pts}, key=_order)
    for i, (name, pts) in enumerate(series.items()):
        if categorical:
            pts = [(ticks.index(x), y) for x, y in pts]
        pts = sorted(pts)
        line = "none" if points else "-"
        ax.plot(*zip(*pts), marker="o", linestyle=line, label=name, color=series_colour(i))
    if categorical:
        ax.set_xticks(range(len(ticks)), [str(t) for t in ticks], rotation=20, ha="right")
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{ylabel} vs {xlabel}")
    ax.grid(alpha=0.3)
    _legend_below(fig, ax, ncol=2)
    save_figure(fig, out)
    plt.close(fig)


def _order(value) -> tuple:
    """A sort key putting numbers (also as text) by value, before other values."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def plot_grouped_bars(
    values: dict[tuple[str, str], float], xkey: str, group_key: str, ylabel: str, out: Path
) -> None:
    """Bars of ``values[(x, group)]``: one cluster per x value, one colour per group value,
    both in sorted order."""
    xs = sorted({x for x, _ in values}, key=_order)
    groups = sorted({g for _, g in values}, key=_order)
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(
        figsize=(min(16.0, max(9.0, 0.5 * len(xs) * len(groups))), 5.5), layout="constrained"
    )
    for j, group in enumerate(groups):
        pos = [
            i + (j - (len(groups) - 1) / 2) * width
            for i, x in enumerate(xs)
            if (x, group) in values
        ]
        ys = [values[(x, group)] for x in xs if (x, group) in values]
        bars = ax.bar(pos, ys, width, label=f"{group_key}={group}", color=series_colour(j))
        # Each bar's value on it: a bar of 0 (no run of a sweep learnt yet) is still read.
        ax.bar_label(bars, fmt="%.4g", fontsize=8, padding=2)
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set(xlabel=xkey, ylabel=ylabel, title=f"{ylabel} by {xkey} and {group_key}")
    ax.grid(alpha=0.3, axis="y")
    _legend_below(fig, ax, ncol=min(4, len(groups)))
    save_figure(fig, out)
    plt.close(fig)


def plot_image_grid(images, labels: list[tuple[str, str]], out: Path, title: str) -> None:
    """uint8 (N, H, W, C) images in a grid, each titled true/predicted (red when wrong)."""
    n = len(images)
    cols = min(8, max(1, n))
    rows = max(1, (n + cols - 1) // cols)
    scale = max(1.0, MIN_INCHES / (1.5 * cols))
    size = (1.5 * cols * scale, 1.75 * rows * scale + 0.4)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False, layout="constrained")
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
    fig.suptitle(title, fontsize=10)
    save_figure(fig, out)
    plt.close(fig)


def plot_table(
    names: list[str],
    values,
    labels,
    classes: tuple[str, ...],
    out: Path,
    target: tuple[str, object] | None = None,
) -> None:
    """A histogram per column of ``values`` (N, len(names), NaN = missing) and a scatter:
    of the first two columns coloured by ``labels`` (class indices) when there are
    classes, or by a regression's ``target`` (its name and N values) with a colour bar;
    of the one column against the target when there is one column."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    goal = None if target is None else np.asarray(target[1], dtype=float)
    goal_name = "" if target is None else target[0]
    scatter = len(names) >= 2 or goal is not None
    panels = len(names) + scatter
    cols = min(panels, 4)
    rows = -(-panels // cols)
    size = (max(MIN_INCHES, 3.6 * cols), max(3.4, 3.2 * rows))
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False, layout="constrained")
    flat = axes.ravel()
    for i, name in enumerate(names):
        column = values[:, i]
        flat[i].hist(column[np.isfinite(column)], bins=20, color=series_colour(i), alpha=0.8)
        flat[i].set(title=name, xlabel=name, ylabel="rows")
    if scatter:
        ax = flat[len(names)]
        if len(names) >= 2:
            x, y, xname, yname = values[:, 0], values[:, 1], names[0], names[1]
        else:
            x, y, xname, yname = values[:, 0], goal, names[0], goal_name
        both = np.isfinite(x) & np.isfinite(y)
        if labels is not None and classes:
            codes = np.asarray(labels)[both]
            palette = class_colours(len(classes))
            for k, name in enumerate(classes):
                mine = codes == k
                if mine.any():
                    ax.scatter(x[both][mine], y[both][mine], s=8, color=palette[k], label=name)
            ax.legend(fontsize=7, title="label", markerscale=2)
        elif goal is not None and len(names) >= 2:
            points = ax.scatter(x[both], y[both], s=8, c=goal[both], cmap="viridis")
            fig.colorbar(points, ax=ax, label=goal_name)
        else:
            ax.scatter(x[both], y[both], s=8, color=series_colour(0))
        ax.set(xlabel=xname, ylabel=yname, title=f"{yname} vs {xname}")
    for ax in flat[panels:]:
        ax.axis("off")
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
    fig, ax = plt.subplots(figsize=(MIN_INCHES, 7.0), layout="constrained")
    ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1, label="predicted = true")
    ax.scatter(true, predicted, s=10, alpha=0.7, color=split_colour("test"), label="rows")
    ax.set(xlabel=f"true {name}", ylabel=f"predicted {name}", title=title)
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, out)
    plt.close(fig)


def plot_decision_boundary(
    classify, points, labels, predictions, classes, names, out: Path, title: str, steps: int = 200
) -> None:
    """The class ``classify`` gives each point of a grid spanning ``points`` (N, 2), with
    the points on top coloured by their label and the misclassified ones marked; the
    legend names each class's colour."""
    import torch
    from matplotlib.artist import Artist
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D

    lo, hi = points.min(0).values, points.max(0).values
    pad = 0.05 * (hi - lo).clamp(min=1e-6)
    xs = torch.linspace(float(lo[0] - pad[0]), float(hi[0] + pad[0]), steps)
    ys = torch.linspace(float(lo[1] - pad[1]), float(hi[1] + pad[1]), steps)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    regions = classify(torch.stack([gx.ravel(), gy.ravel()], 1)).view(steps, steps)
    k = len(classes)
    palette = class_colours(k)
    cmap = ListedColormap(palette)
    fig, ax = plt.subplots(figsize=(9.0, 7.0), layout="constrained")
    ax.contourf(gx, gy, regions, levels=torch.arange(k + 1) - 0.5, cmap=cmap, alpha=0.3)
    ax.scatter(
        points[:, 0],
        points[:, 1],
        c=[palette[i] for i in labels.tolist()],
        s=18,
        edgecolors="k",
        linewidths=0.3,
    )
    handles: list[Artist] = [
        Line2D([], [], marker="o", linestyle="", color=palette[i], label=str(c))
        for i, c in enumerate(classes)
    ]
    wrong = predictions != labels
    if wrong.any():
        handles.append(
            ax.scatter(
                points[wrong, 0],
                points[wrong, 1],
                marker="x",
                c="red",
                s=60,
                label=f"{int(wrong.sum())} misclassified",
            )
        )
    ax.legend(handles=handles, fontsize=8, title="class (point: label, area: prediction)")
    ax.set(xlabel=names[0], ylabel=names[1], title=title)
    save_figure(fig, out)
    plt.close(fig)


def plot_lr_find(rates: list[float], losses: list[float], smoothed: list[float], marks, out: Path):
    """debug=lr_find: the training loss against the learning rate (a log axis), each step's
    and smoothed, with ``marks`` (label -> rate: the suggestion and what it came from) as
    vertical lines. Steps past the divergence are clipped off the top."""
    fig, ax = plt.subplots(figsize=(MIN_INCHES, 5), layout="constrained")
    finite = [(r, v) for r, v in zip(rates, losses) if v == v and abs(v) != float("inf")]
    if finite:
        ax.plot(*zip(*finite), color=split_colour("train"), alpha=0.3, label="loss (each step)")
    ax.plot(rates[: len(smoothed)], smoothed, color=split_colour("train"), label="smoothed")
    for i, (label, rate) in enumerate(marks.items()):
        ax.axvline(rate, color=series_colour(i + 2), linestyle="--", label=f"{label}: {rate:.3g}")
    ax.set_xscale("log")
    shown = [v for _, v in finite] + smoothed
    low, high = (min(shown), max(smoothed[0], min(smoothed) * 4)) if smoothed else (0, 0)
    if high > low:  # the range the test watched: from its best to where it stops
        ax.set_ylim(low - 0.05 * (high - low), high + 0.1 * (high - low))
    ax.set(title="learning-rate range test", xlabel="learning rate", ylabel="training loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, out)
    plt.close(fig)
