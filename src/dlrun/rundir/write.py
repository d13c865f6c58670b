"""What a run leaves beside its checkpoints: summary.json and samples.txt."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from dlrun.engine.writers import write_text_atomic


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


def write_failure(run_dir: Path, status: str, error: str) -> None:
    """summary.json of a run that did not finish, with the first line of the reason.

    A finished run's summary is never replaced: a failed or interrupted resume
    of it is recorded in the log only.
    """
    summary_file = run_dir / "summary.json"
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if json.loads(summary_file.read_text()).get("status") == "ok":
            return
    if not run_dir.is_dir():
        return
    first = next((line for line in error.splitlines() if line.strip()), error)
    write_summary(run_dir, {"status": status, "error": first.strip()})


def write_samples(path: Path, rows: list[dict]) -> None:
    """samples.txt: test examples with their target and prediction, wrong ones first."""
    wrong = sum(not r["correct"] for r in rows)
    lines = [
        f"# {len(rows)} test examples, {wrong} wrong, wrong ones first",
        "ok\tsource\ttarget\tprediction",
    ]
    lines += [
        f"{'✓' if r['correct'] else '✗'}\t{r['source']}\t{r['target']}\t{r['prediction']}"
        for r in rows
    ]
    path.write_text("\n".join(lines) + "\n")
