"""The colours and axis rules every figure shares: one colour per split in every task and
report, one per class, one per run of a report.

A split keeps its colour everywhere (train blue, validation orange, test green...), so
a reader who learned it once reads every figure; runs and groups use the rest of the
palette in order.
"""

from __future__ import annotations

from collections.abc import Iterable

# matplotlib's tab10, by name: the default cycle, readable on white and in print.
TAB10 = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
SPLITS = {
    "train": TAB10[0],
    "val": TAB10[1],
    "test": TAB10[2],
    "train_subset": TAB10[4],
    "extrapolate": TAB10[3],
}
# Figures are saved at 100 dpi: this many inches is 800 px, the least on a long side.
MIN_INCHES = 8.0


def split_colour(split: str) -> str:
    """The colour of ``split`` (``test_b``, ``extrapolate_x`` take their family's)."""
    for name in sorted(SPLITS, key=len, reverse=True):
        if split == name or split.startswith(name + "_"):
            return SPLITS[name]
    others = [c for c in TAB10 if c not in SPLITS.values()]
    return others[sum(map(ord, split)) % len(others)]  # stable across runs, unlike hash()


def series_colour(i: int) -> str:
    """The ``i``-th run's or group's colour in a figure of several."""
    return TAB10[i % len(TAB10)]


def class_colours(k: int) -> list[str]:
    """A colour per class of ``k``: tab10 for up to ten, then a continuous map's."""
    if k <= len(TAB10):
        return list(TAB10[:k])
    import matplotlib

    cmap = matplotlib.colormaps["turbo"]
    return [matplotlib.colors.to_hex(cmap(i / (k - 1))) for i in range(k)]


def log_scale(values: Iterable[float], decades: float = 2.0) -> bool:
    """Whether ``values`` want a log axis: all positive and spanning ``decades`` or more."""
    values = [float(v) for v in values]
    return bool(values) and min(values) > 0 and max(values) / min(values) >= 10**decades
