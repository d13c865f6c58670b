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
        "share; the current folder where that is a run directory, never written into)",
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
        if is_run_dir(out):  # a run's files are its own (a running one's, or a finished one's)
            out = Path.cwd()
    with one_line_errors("dlrun-report"):
        if is_run_dir(out.expanduser()):
            raise UserError(
                f"--out {out}: a run directory, whose files are the run's; choose another folder"
            )
        report = write_report(paths, out, args.metric, args.x, provenance=args.provenance)
    print(report.table.markdown(), end="")
    print(f"\nwrote {', '.join(f.name for f in report.files)} in {out}")


def is_run_dir(path: Path) -> bool:
    """A run's directory: its summary, config record or checkpoints are there (a folder of
    runs, or a sweep's, has none of its own)."""
    run = RunDir(path)
    return any(p.exists() for p in (run.summary, run.hydra_config, run.checkpoints))


if __name__ == "__main__":
    main()
