"""dlrun-report's plots over runs (``dlrun.report.runs`` reads and tabulates them):

- ``summary_<metric>_vs_<key>.png``: the metric against a swept key (log axis
  for keys that span decades), one line per split, or per value of the other keys
  when they take a few values each (a grid); the runs as points when they vary
  continuously (a search);
- ``summary_curves.png``: every run's training loss and validation metric
  against the step, overlaid;
- ``summary_bars.png``: a grouped bar chart when two keys vary over a few values each.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.data.table import number
from dlrun.report.runs import short_numbers
from dlrun.rundir.layout import RunDir, SweepDir

if TYPE_CHECKING:
    from dlrun.report.runs import Run, Table


def plot_runs(runs: list[Run], table: Table, out: Path, x: str | None) -> list[Path]:
    """The curves, the metric against a swept key and, when two keys vary, grouped bars;
    runs of several tasks: those of each task apart, its name in the files' names."""
    from dlrun.report.runs import by_task

    groups = by_task(runs)
    if len(groups) == 1:
        return _plot_group(runs, table.sort_metric, table.keys, out, x, "")
    files = []
    for task, group in groups.items():
        metric = next((r.summary["monitor"] for r in group if r.summary.get("monitor")), None)
        if table.sort_metric and all(table.sort_metric in r.metrics() for r in group):
            metric = table.sort_metric  # --metric, where this task has it
        keys = [k for k in table.keys if k != "task"]
        files += _plot_group(group, metric, keys, out, x if x in keys else None, f"_{task}")
    return files


def _plot_group(
    runs: list[Run], metric: str | None, keys: list[str], out: Path, x: str | None, suffix: str
) -> list[Path]:
    from dlrun.engine.palette import log_scale
    from dlrun.engine.plots import plot_grouped_bars, plot_metric_vs, plot_overlaid_curves

    files: list[Path] = []
    if not metric:
        return files  # no metric to plot
    base = metric.rpartition("/")[2]
    # Among the runs that finished: a key that varied only through failed runs is constant here.
    keys = [k for k in keys if len({r.value(k) for r in runs}) > 1]

    def describe(run: Run, keys: list[str]) -> str:
        return short_numbers(", ".join(f"{k.rpartition('.')[2]}={run.value(k)}" for k in keys))

    def is_numeric(key: str) -> bool:
        return all(number(r.value(key)) is not None for r in runs)

    def is_grid(key: str) -> bool:  # a few values, each shared by several runs
        distinct = len({r.value(key) for r in runs})
        return distinct <= 8 and distinct < len(runs)

    if base:
        curves = [(describe(r, keys) or r.path.name, RunDir(r.path).metrics) for r in runs]
        val_split = metric.partition("/")[0] if "/" in metric else "val"
        path = SweepDir(out).report_plot("curves" + suffix)
        plot_overlaid_curves(curves, val_split, base, path)
        files.append(path)
    if not (keys or x) or not base:
        return files
    x = x or next((k for k in keys if is_numeric(k)), keys[0])
    others = [k for k in keys if k != x]
    val = list(dict.fromkeys(k for r in runs for k in r.summary.get("best", {})))
    test = list(dict.fromkeys(k for r in runs for k in r.summary.get("test", {})))
    splits = [k for k in [*val, *test] if k.endswith("/" + base)]
    # The one number per run when lines or bars are grouped: the first test split's.
    headline = next((k for k in test if k.endswith("/" + base)), metric)
    is_num = is_numeric(x)
    xs = [r.value(x) for r in runs]
    values: list[Any] = [number(v) for v in xs] if is_num else xs  # numbers if is_num
    positive = is_num and all(v > 0 for v in values)
    logx = positive and (x.rpartition(".")[2] in ("lr", "weight_decay") or log_scale(values))
    grouped = all(is_grid(k) for k in others)  # else a search: every run is one point
    series: dict[str, list[tuple[Any, float]]] = {}
    for run, xv in zip(runs, values):
        group = describe(run, others) if grouped else ""
        for split in splits if not others else [headline]:
            y = run.metrics().get(split)
            if isinstance(y, (int, float)):
                name = f"{split} ({group})" if group else split
                series.setdefault(name, []).append((xv, y))
    path = SweepDir(out).report_plot(f"{base}_vs_{x.replace('/', '_')}{suffix}")
    plot_metric_vs(series, x, base, path, logx=logx, categorical=not is_num, points=not grouped)
    files.append(path)
    if others and is_grid(x) and is_grid(others[0]):
        group_key = others[0]
        bars = {}
        for run in runs:
            y = run.metrics().get(headline)
            if isinstance(y, (int, float)):
                bars[(run.value(x), run.value(group_key))] = y
        path = SweepDir(out).report_plot("bars" + suffix)
        plot_grouped_bars(bars, x, group_key, headline, path)
        files.append(path)
    return files
