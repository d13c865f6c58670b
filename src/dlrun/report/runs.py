"""dlrun-report: one table and a few plots over runs and sweeps.

``dlrun-report PATH... [--metric NAME] [--x KEY] [--out DIR]`` finds every
run under the given paths (a sweep directory, run directories, any folder of
them; also runs made separately) and writes into ``DIR``:

- ``summary.csv`` and ``summary.md``: one row per run with the keys that differ
  between runs, status (ok / failed: first line of the error), the monitored
  validation metric at the best checkpoint, the test metrics and the wall time,
  best first; a cross-validation run (``trainer.folds``) shows each metric's mean
  and its standard deviation (``<metric> std``), with a row per fold under it;
- with ``--provenance``, the columns commit (``+dirty``), python, torch and data (the
  digests of the data files read), from each run's ``summary.json``;
- ``summary_<metric>_vs_<key>.png``: the metric against a swept key (log axis
  for learning rates and other keys spanning decades), one line per split;
- ``summary_curves.png``: every run's training loss and validation metric
  against the step, overlaid;
- ``summary_bars.png``: a grouped bar chart when two keys vary over a few values.

Runs of several tasks are grouped by task (``by_task``): the keys shown are those
that vary within a task's runs, ``summary.md`` holds a table per task, and each
task's plots are named ``summary_<plot>_<task>.png``. Long numbers are rounded
where a person reads them (``short_numbers``), not in ``summary.csv``.

The plots are drawn in ``dlrun.report.plots``; a search directory's
``best.yaml`` and the study's plots come from ``dlrun.search.results``.

A sweep (``dlrun -m ...``) does the same by itself: Hydra's callbacks get no
job results, so each job writes its own ``summary.json`` and ``SweepSummary``
rescans the sweep directory when a job ends (tables) and when the sweep ends
(tables, plots, and the table printed).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from dlrun.errors import UserError
from dlrun.rundir.layout import RunDir, SweepDir, run_dirs_under
from dlrun.rundir.read import read_json, read_jsonl, read_yaml, select
from dlrun.rundir.write import remove_abandoned, write_text_atomic

LOWER_IS_BETTER = {"loss", "cer", "perplexity"}
STD = "std"  # the column of a metric's standard deviation over a cross-validation's folds
PLAIN_FORMAT = {"epochs": "{:.2f}", "wall_time_s": "{:.1f}"}  # not metrics: fewer digits
# Overrides that say where things are, not what was run.
# tune.*: which study and trial a search's job reported to.
IGNORED_KEYS = ("hydra.", "resume", "paths.", "dataset.path", "tune.")


@dataclass
class Run:
    path: Path
    summary: dict
    overrides: dict[str, str]  # key -> value, as given on the command line
    config: dict | None = None  # the composed config (.hydra/config.yaml) as plain data
    choices: dict[str, str] = field(default_factory=dict)  # config group -> option

    @property
    def status(self) -> str:
        return self.summary.get("status", "incomplete")

    def value(self, key: str) -> str:
        """What ``key`` was in this run: its override, its group choice, or its config value."""
        if key in self.overrides:
            return self.overrides[key]
        if key in self.choices:
            return str(self.choices[key])
        if self.config is not None:
            node = select(self.config, key)
            if node is not None:
                return json.dumps(node) if isinstance(node, (list, dict)) else str(node)
        return ""

    def metrics(self) -> dict[str, float]:
        """Validation metrics at the best checkpoint and the test metrics, by full name
        (a cross-validation run's: their means over its folds)."""
        return _metrics(self.summary)

    def folds(self) -> list[dict]:
        """A cross-validation run's folds (``trainer.folds``): their summaries' results."""
        return self.summary.get("fold_results", [])

    @property
    def maximize(self) -> bool:
        return self.summary.get("mode", "max") == "max"


def _metrics(summary: dict) -> dict[str, float]:
    best = {k: v for k, v in (summary.get("best") or {}).items() if k != "step"}
    return {**best, **(summary.get("test") or {})}


LONG_NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d{5,}(?:[eE][-+]?\d+)?(?![\w.])")


def short_numbers(text: str, digits: int = 4) -> str:
    """``text`` with every number of many decimals rounded to ``digits`` significant ones
    (``model.dropout=0.34430192534364906`` -> ``model.dropout=0.3443``): for names and
    tables a person reads; the config keeps the full value."""
    return LONG_NUMBER.sub(lambda m: f"{float(m.group()):.{digits}g}", text)


def _natural(text: str) -> list:
    """Sort key: '2_lr' before '10_lr'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories at or under ``paths``: those with ``summary.json`` or ``.hydra/``."""
    found: list[Path] = []
    for path in paths:
        path = Path(path).expanduser().resolve()  # absolute: runs given both ways compare
        if not path.is_dir():
            raise UserError(f"{path}: no such directory; pass run or sweep directories")
        found += sorted(run_dirs_under(path), key=lambda d: _natural(str(d)))
    return list(dict.fromkeys(found))


def load_run(path: Path) -> Run:
    """A run's files read as data (``dlrun.rundir.read``): a damaged one is one clear line."""
    run = RunDir(path)
    summary_file = run.summary
    summary = read_json(summary_file) if summary_file.is_file() else {}
    overrides: dict[str, str] = {}
    if run.hydra_overrides.is_file():
        for text in read_yaml(run.hydra_overrides, list):
            key, _, value = str(text).partition("=")
            key = key.lstrip("+~")
            if not key.startswith(IGNORED_KEYS):
                overrides[key] = value
    config = None
    if run.hydra_config.is_file():
        config = read_yaml(run.hydra_config)
        if "mode" not in summary and select(config, "task.mode") in ("max", "min"):
            summary["mode"] = select(config, "task.mode")
    choices = {}
    if run.hydra_runtime.is_file():
        runtime = select(read_yaml(run.hydra_runtime), "hydra.runtime.choices") or {}
        if isinstance(runtime, dict):
            choices = {k: v for k, v in runtime.items() if not str(k).startswith("hydra/")}
    return Run(path, _plain_summary(summary_file, summary), overrides, config, choices)


def _plain_summary(path: Path, summary: dict) -> dict:
    """``summary`` with its sections checked: what the table reads has the right shape."""
    for key in ("best", "test", "std"):
        if not isinstance(summary.get(key, {}), dict):
            raise UserError(f"{path}: '{key}' should be a JSON object of metrics")
    folds = summary.get("fold_results", [])
    if not isinstance(folds, list) or not all(isinstance(f, dict) for f in folds):
        raise UserError(f"{path}: 'fold_results' should be a list of JSON objects")
    for fold in folds:
        for key in ("best", "test"):
            if not isinstance(fold.get(key) or {}, dict):
                raise UserError(f"{path}: a fold's '{key}' should be a JSON object of metrics")
    return summary


def by_task(runs: list[Run]) -> dict[str, list[Run]]:
    """``runs`` grouped by their task, in order of first appearance."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.summary.get("task") or r.value("task.name"), []).append(r)
    return groups


def varying_keys(runs: list[Run]) -> list[str]:
    """The override keys whose value is not the same in every run of a task, in
    command-line order (runs of several tasks: ``task`` first, then the keys that vary
    within a task's runs, not those that differ only because the tasks do)."""
    groups = by_task(runs)
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides if k != "task"))
    varying = [
        k for k in keys if any(len({r.value(k) for r in group}) > 1 for group in groups.values())
    ]
    return (["task"] if len(groups) > 1 else []) + varying


@dataclass
class Table:
    columns: list[str]
    rows: list[dict[str, Any]]
    keys: list[str]  # the varying keys among the columns
    sort_metric: str | None

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return buf.getvalue()

    def markdown(self) -> str:
        """The table in Markdown; runs of several tasks (a ``task`` column): one table per
        task, each with only the columns its runs fill."""
        if "task" not in self.keys:
            return self._markdown(self.columns, self.rows)
        parts = []
        for task in dict.fromkeys(r["task"] for r in self.rows):
            rows = [r for r in self.rows if r["task"] == task]
            columns = [
                c
                for c in self.columns
                if c in ("run", "status") or (c != "task" and any(r.get(c, "") != "" for r in rows))
            ]
            parts.append(f"task={task}\n\n" + self._markdown(columns, rows))
        return "\n".join(parts)

    def _markdown(self, columns: list[str], rows: list[dict[str, Any]]) -> str:
        def cell(column: str, value: Any) -> str:
            if column in PLAIN_FORMAT and isinstance(value, (int, float)):
                return PLAIN_FORMAT[column].format(value)
            if isinstance(value, float):
                return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
            return short_numbers(str(value)).replace("|", "\\|").replace("\n", " ")

        lines = [
            "| " + " | ".join(columns) + " |",
            "|" + "---|" * len(columns),
        ]
        lines += ["| " + " | ".join(cell(c, r.get(c, "")) for c in columns) + " |" for r in rows]
        return "\n".join(lines) + "\n"


def resolve_metric(runs: list[Run], metric: str | None) -> str | None:
    """The full name (``val/accuracy``) to sort by: ``--metric``, else the monitored metric."""
    ok = [r for r in runs if r.status == "ok"]
    available = list(dict.fromkeys(k for r in ok for k in r.metrics()))
    if metric is None:
        return next((r.summary["monitor"] for r in ok if r.summary.get("monitor")), None)
    if metric in available:
        return metric
    by_base = [k for k in available if k.rpartition("/")[2] == metric]
    if by_base:
        # Validation before test: picking the best run by its test score would be cheating.
        return next((k for k in by_base if k.startswith("val")), by_base[0])
    raise UserError(
        f"--metric {metric}: no run has it; available: {', '.join(available) or 'none'}"
    )


def build_table(runs: list[Run], metric: str | None = None, provenance: bool = False) -> Table:
    """The table of ``runs``, best first; with ``provenance``, each run's code commit,
    Python and torch versions and data digests (``summary.json``'s provenance) too."""
    from dlrun.engine.provenance import short

    keys = varying_keys(runs)
    sort_metric = resolve_metric(runs, metric)
    ok = [r for r in runs if r.status == "ok"]
    monitors = list(dict.fromkeys(r.summary["monitor"] for r in ok if r.summary.get("monitor")))
    tests = list(dict.fromkeys(k for r in ok for k in r.summary.get("test", {})))
    shown = list(dict.fromkeys([*monitors, *([sort_metric] if sort_metric else []), *tests]))
    # Cross-validation runs: each metric's standard deviation over the folds beside its mean.
    spread = {m for r in ok for m in r.summary.get("std", {}) if m in shown}
    metric_columns = [c for m in shown for c in (m, *([f"{m} {STD}"] if m in spread else []))]
    origin = ["commit", "python", "torch", "data"] if provenance else []
    columns = ["run", *keys, "status", *metric_columns, "epochs", "wall_time_s", *origin]
    common = os.path.commonpath([str(r.path) for r in runs]) if len(runs) > 1 else None
    rows = []
    for r in runs:
        name = str(r.path.relative_to(common)) if common else r.path.name
        status = r.status
        if status != "ok" and r.summary.get("error"):
            status = f"{status}: {r.summary['error']}"
        row: dict[str, Any] = {"run": name, **{k: r.value(k) for k in keys}, "status": status}
        row.update({k: v for k, v in r.metrics().items() if k in shown})
        row.update({f"{k} {STD}": v for k, v in r.summary.get("std", {}).items() if k in spread})
        if r.status in ("ok", "pruned"):
            row["epochs"] = round(r.summary.get("epochs", float("nan")), 2)
            row["wall_time_s"] = r.summary.get("wall_time_s", "")
        if provenance:
            source = r.summary.get("provenance")
            row.update(short(source if isinstance(source, dict) else {}))
        rows.append(row)

    tasks = list(by_task(runs))

    def order(item: tuple[Run, dict]) -> tuple:
        run, row = item
        task = tasks.index(run.summary.get("task") or run.value("task.name"))
        by = sort_metric
        if metric is None and len(tasks) > 1:  # each task by its own monitored metric
            by = run.summary.get("monitor") or sort_metric
        value = row.get(by) if by else None
        if (
            by is None
            or run.status != "ok"
            or not isinstance(value, (int, float))
            or math.isnan(value)
        ):
            return (task, 1, 0.0)
        base = by.rpartition("/")[2]
        maximize = run.maximize if any(m.endswith("/" + base) for m in monitors) else None
        if maximize is None:
            maximize = base not in LOWER_IS_BETTER
        return (task, 0, -value if maximize else value)

    ordered = []
    for run, row in sorted(zip(runs, rows), key=order):  # stable: ties keep run order
        ordered.append(row)
        ordered += _fold_rows(run, row, shown)  # under their run, in fold order
    return Table(columns, ordered, keys, sort_metric)


def _fold_rows(run: Run, row: dict[str, Any], shown: list[str]) -> list[dict[str, Any]]:
    """A cross-validation run's folds as rows (``RUN/fold_<k>``) with their own metrics."""
    out = []
    for i, fold in enumerate(run.folds()):
        name = RunDir(row["run"]).fold(fold.get("fold", i)).path
        metrics = _metrics(fold)
        epochs = fold.get("epochs")
        out.append(
            {
                **{k: v for k, v in row.items() if k not in ("run", "wall_time_s")},
                "run": str(name),
                **{k: v for k, v in metrics.items() if k in shown},
                **{k: "" for k in row if k.endswith(f" {STD}")},
                "epochs": round(epochs, 2) if isinstance(epochs, (int, float)) else "",
            }
        )
    return out


@dataclass
class Report:
    out: Path
    table: Table
    files: list[Path]
    failed: int
    total: int


def write_report(
    paths: list[Path],
    out: Path,
    metric: str | None = None,
    x: str | None = None,
    plots: bool = True,
    provenance: bool = False,
) -> Report:
    """Tables (and plots) for the runs under ``paths``, written into ``out``."""
    run_dirs = find_runs(paths)
    if not run_dirs:
        raise UserError(
            f"no dlrun runs under {', '.join(map(str, paths))} (looked for directories with "
            "summary.json or .hydra/config.yaml)"
        )
    runs = [load_run(d) for d in run_dirs]
    for r in runs:  # damaged metrics are one error before anything is written
        if plots and r.status == "ok" and RunDir(r.path).metrics.is_file():
            read_jsonl(RunDir(r.path).metrics)
    table = build_table(runs, metric, provenance)
    if x is not None and x not in table.keys:
        hint = ", ".join(table.keys) or "none: every run has the same settings"
        raise UserError(f"--x {x}: not a key that varies between these runs; those are: {hint}")
    out.mkdir(parents=True, exist_ok=True)
    remove_abandoned(out)  # what a report or sweep killed while writing here left
    where = SweepDir(out)
    write_text_atomic(where.summary_csv, table.csv())
    write_text_atomic(where.summary_md, table.markdown())
    files = [where.summary_csv, where.summary_md]
    ok = [r for r in runs if r.status == "ok"]
    if plots and ok:
        from dlrun.report.plots import plot_runs

        files += plot_runs(ok, table, out, x)
    from dlrun.search.results import search_outputs

    files += search_outputs(paths, out, plots)
    failed = sum(r.status not in ("ok", "pruned", "lr_find") for r in runs)  # lr_find: a probe
    return Report(out, table, files, failed, len(runs))


# -- the sweep hook ---------------------------------------------------------------------


def _is_multirun(config) -> bool:
    from hydra.types import RunMode

    return OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN


class SweepSummary(Callback):
    """Keeps ``summary.csv``/``summary.md`` of a sweep current; prints them at the end."""

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if _is_multirun(config):
            sweep = Path(config.hydra.sweep.dir)
            write_report([sweep], sweep, plots=False)

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        if not find_runs([sweep]):
            return
        report = write_report([sweep], sweep)
        print(f"\nsweep summary ({report.total} jobs, {report.failed} failed): {sweep}")
        print(report.table.markdown(), flush=True)
        if report.failed:
            # The sweep's last word: Hydra returns nothing from a multirun, and SystemExit
            # passes through its error reporting, so ``dlrun -m`` exits 1 here.
            print(
                f"dlrun: {report.failed} of {report.total} jobs did not finish; see "
                f"{SweepDir(report.out).summary_md}",
                file=sys.stderr,
            )
            sys.exit(1)
