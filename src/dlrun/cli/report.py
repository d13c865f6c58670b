"""dlrun-report PATH...: one table and a few plots over runs and sweeps (``dlrun.report``)."""

from __future__ import annotations

import os
from pathlib import Path

from dlrun.errors import OneLineParser, UserError, one_line_errors
from dlrun.report.runs import write_report
from dlrun.rundir.layout import RunDir


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(
        prog="dlrun-report",
        description="Summary table and plots over dlrun runs and sweeps.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="sweep or run directories")
    parser.add_argument(
        "--metric", help="metric to sort and plot (accuracy, val/accuracy, test/cer...)"
    )
    parser.add_argument("--x", help="swept key for the x axis (default: the first numeric one)")
    parser.add_argument(
        "--out",
        type=Path,
        help="where to write (default: the one PATH given, else the folder the paths "
        "share; for a run directory, which is never written into, RUN_report beside it)",
    )
    parser.add_argument(
        "--provenance",
        action="store_true",
        help="add each run's git commit, Python and torch versions and data digests",
    )
    args = parser.parse_args(argv)
    paths = [p.expanduser() for p in args.paths]
    out = args.out
    if out is None:
        out = (
            paths[0] if len(paths) == 1 else Path(os.path.commonpath([p.resolve() for p in paths]))
        )
        if inside_a_run(out):  # a run's files are its own (a running one's, a finished one's)
            run = out.resolve()
            out = run.parent / f"{run.name}_report"
    with one_line_errors("dlrun-report"):
        if inside_a_run(out):
            raise UserError(
                f"--out {out}: inside a run directory, whose files are the run's; choose "
                "another folder"
            )
        report = write_report(paths, out, args.metric, args.x, provenance=args.provenance)
    print(report.table.markdown(), end="")
    print(f"\nwrote {', '.join(f.name for f in report.files)} in {out}")


def inside_a_run(path: Path) -> bool:
    """``path`` is a run's directory or lies in one: a run's summary or config record is
    there (a folder of runs, or a sweep's, has neither of its own)."""
    path = path.expanduser().resolve()
    for folder in (path, *path.parents):
        run = RunDir(folder)
        if run.summary.is_file() or run.hydra_config.is_file():
            return True
    return False


if __name__ == "__main__":
    main()
