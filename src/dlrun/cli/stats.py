"""dlrun-stats: dataset statistics for a config, without training.

Takes the same overrides as ``dlrun`` (``dlrun-stats task=algebra
dataset.modules=[comparison__sort]``), prepares the data (generated and cached
as a run would) and prints, per split and module, the number of examples and
characters and the mean question and answer lengths, plus the vocabulary
sizes. Every training run writes the same numbers to ``stats.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def format_stats(stats: dict) -> str:
    """A Markdown table of ``Task.stats()``."""
    rows = {k: v for k, v in stats.items() if isinstance(v, dict) and "examples" in v}
    columns = sorted(
        {c for v in rows.values() for c in v}, key=list(next(iter(rows.values()))).index
    )
    lines = [
        "| split | " + " | ".join(map(_cell, columns)) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name, values in rows.items():
        cells = [
            f"{values[c]:.2f}" if isinstance(values[c], float) else str(values[c]) for c in columns
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    extra = {k: v for k, v in stats.items() if k not in rows}
    for key, value in extra.items():
        lines.append("")
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            lines += [f"{key}:", "", *_table(value)]  # e.g. per-column statistics
        else:
            lines.append(f"{key}: {json.dumps(value)}")
    return "\n".join(lines)


def _table(rows: dict[str, dict]) -> list[str]:
    """A Markdown table: one row per key, one column per inner key."""
    columns = list(dict.fromkeys(c for v in rows.values() for c in v))
    out = ["| | " + " | ".join(map(_cell, columns)) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, values in rows.items():
        cells = [_cell(values.get(c, "")) for c in columns]
        out.append(f"| {_cell(name)} | " + " | ".join(cells) + " |")
    return out


def _cell(value) -> str:
    """A table cell; a '|' in a name (a class "a|b") would start another column."""
    return f"{value:.4g}" if isinstance(value, float) else str(value).replace("|", "\\|")


def main(argv: list[str] | None = None) -> None:
    from dlrun.errors import UserError, one_line_errors
    from dlrun.plan.command import plan_command
    from dlrun.plan.config import conf_dir
    from dlrun.registry import task_entry

    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        return
    with one_line_errors("dlrun-stats"):
        flags = [a for a in args if a.startswith("-")]
        if flags:
            raise UserError(
                f"{flags[0]}: dlrun-stats takes overrides only (key=value), no flags; it prints "
                "the statistics of one config (no sweeps: -m, nor --cfg: use dlrun --cfg job)"
            )
        data = plan_command(args, conf_dir()).config
        if data is None:  # hydra.mode=MULTIRUN, or a preset's
            raise UserError("dlrun-stats prints the statistics of one config, not of a sweep")
        task = task_entry(data.task.name).obj(data)
        task.prepare(Path(data.paths.cache_dir).expanduser())
    print(format_stats(task.stats()))


if __name__ == "__main__":
    main()
