"""dlrun-report's plots over runs (``dlrun.report.runs`` reads and tabulates them):

- ``summary_<metric>_vs_<key>.png``: the metric against a swept key (log axis
  for learning rates and other keys spanning decades), one line per split;
- ``summary_curves.png``: every run's training loss and validation metric
  against the step, overlaid;
- ``summary_bars.png``: a grouped bar chart when two keys vary.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlrun.data.table import number
from dlrun.rundir.layout import RunDir, SweepDir

if TYPE_CHECKING:
    from dlrun.report.runs import Run, Table


def plot_runs(runs: list[Run], table: Table, out: Path, x: str | None) -> list[Path]:
    """The curves, the metric against a swept key and, when two keys vary, grouped bars."""
    from dlrun.engine.plots import plot_grouped_bars, plot_metric_vs, plot_overlaid_curves

    files = []
    metric = table.sort_metric
    base = metric.rpartition("/")[2] if metric else None
    # Among the runs that finished: a key that varied only through failed runs is constant here.
    keys = [k for k in table.keys if len({r.value(k) for r in runs}) > 1]

    def describe(run: Run, keys: list[str]) -> str:
        return ", ".join(f"{k.rpartition('.')[2]}={run.value(k)}" for k in keys)

    def is_numeric(key: str) -> bool:
        return all(number(r.value(key)) is not None for r in runs)

    if base:
        curves = [(describe(r, keys) or r.path.name, RunDir(r.path).metrics) for r in runs]
        val_split = (metric.partition("/")[0]) if "/" in metric else "val"
        path = SweepDir(out).report_plot("curves")
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
    values = [number(v) for v in xs] if is_num else xs
    positive = is_num and all(v > 0 for v in values)
    logx = positive and (
        x.rpartition(".")[2] in ("lr", "weight_decay") or max(values) / min(values) >= 100
    )
    series: dict[str, list[tuple[Any, float]]] = {}
    for run, xv in zip(runs, values):
        group = describe(run, others)
        for split in splits if not others else [headline]:
            y = run.metrics().get(split)
            if isinstance(y, (int, float)):
                name = f"{split} ({group})" if group else split
                series.setdefault(name, []).append((xv, y))
    path = SweepDir(out).report_plot(f"{base}_vs_{x.replace('/', '_')}")
    plot_metric_vs(series, x, base, path, logx=logx, categorical=not is_num)
    files.append(path)
    if others:
        group_key = others[0]
        bars = {}
        for run in runs:
            y = run.metrics().get(headline)
            if isinstance(y, (int, float)):
                bars[(run.value(x), run.value(group_key))] = y
        path = SweepDir(out).report_plot("bars")
        plot_grouped_bars(bars, x, group_key, headline, path)
        files.append(path)
    return files
