"""Every file dlrun writes in a run or sweep directory is written here: atomically.

A temporary file beside the target is renamed into place, so a crash mid-write leaves
the previous file (a reader, a sweep's other job, a person, sees the old file or the
new one, never a torn one).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlrun import walk
from dlrun.rundir import lock

# Fault injection, as SQLite's tests do it: with DLRUN_KILL_WRITING=<file name> (e.g.
# summary.csv, last.pt), the process kills itself with SIGKILL when that file's temporary
# is written and not yet renamed into place: the worst moment for a kill -9 or a power
# cut, which the next command must recover from (tests/test_faults.py).
KILL_ENV = "DLRUN_KILL_WRITING"


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` a temporary file beside ``path``, then rename it into place.

    A crash mid-write leaves the previous file intact, never a torn one; readers
    (a sweep's other jobs, a person) see the old file or the new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        if os.environ.get(KILL_ENV) == path.name:  # fault injection: kill -9 right here
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace(tmp, path)
    except OSError as exc:  # named by the file meant (a full disk...), not the temporary
        raise named(exc, tmp, path) from exc
    finally:
        tmp.unlink(missing_ok=True)


def named(exc: OSError, tmp: Path, path: Path) -> OSError:
    """``exc``, raised while writing the temporary ``tmp`` (a file or a folder) of
    ``path``, as the error of ``path``: the file meant, which its one line names. A
    failed ``write()`` names no file at all (a full disk): it was the temporary's."""
    where = os.fsdecode(exc.filename) if exc.filename is not None else str(tmp)
    if where != str(tmp) and not where.startswith(f"{tmp}{os.sep}"):
        return exc  # another file's: e.g. a folder that cannot be made
    return OSError(exc.errno, exc.strerror, str(path))


def remove_abandoned(folder: Path) -> list[Path]:
    """Remove the temporary files that writers killed mid-write (kill -9, power loss) left
    in ``folder`` and its subfolders: those named after a process that is gone (symlinks
    are not followed out of ``folder``). Returns what it removed."""
    removed = []
    for tmp in walk.files(folder, _is_temporary, links=False):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _is_temporary(path: Path) -> bool:
    """``atomic_write``'s temporary file (``.<name>.tmp<pid>``) of a process that is gone."""
    stem, _, pid = path.name.rpartition(".tmp")
    if not (stem.startswith(".") and pid.isdigit()):
        return False
    return int(pid) != os.getpid() and not lock.alive(int(pid))


def write_json(path: Path, data: Any, indent: int | None = 2) -> None:
    """A JSON file of a run or sweep (summary, stats, a task's vocabulary...), atomically."""
    write_text_atomic(path, json.dumps(data, indent=indent) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def samples_text(rows: list[dict], of: int | None = None, metrics: dict | None = None) -> str:
    """samples.txt: test examples with their target and prediction, wrong ones first.

    The header says how many are shown of the split's ``of`` examples, how many of
    those are wrong, and the whole split's ``metrics`` (``test/accuracy``...), so a page
    of wrong answers is not read as the model's accuracy. Rows with an ``error`` (a
    regression's prediction minus target) instead of ``correct`` are listed by that
    error, largest first: a number is not right or wrong.
    """
    shown = f"{len(rows)} of {of}" if of is not None else f"{len(rows)}"
    if rows and "error" in rows[0]:
        lines = [
            f"# {shown} test examples, largest errors first (error = prediction - target)",
        ]
        head, mark = "error", [r["error"] for r in rows]
    else:
        wrong = sum(not r["correct"] for r in rows)
        lines = [f"# {shown} test examples, the wrong ones first: {wrong} of these {len(rows)}"]
        head, mark = "ok", ["✓" if r["correct"] else "✗" for r in rows]
    if metrics:
        values = ", ".join(f"{k.partition('/')[2]} {v:.4g}" for k, v in metrics.items())
        lines[0] += f"; the whole test split: {values}"
    lines.append(f"{head}\tsource\ttarget\tprediction")
    lines += [f"{m}\t{r['source']}\t{r['target']}\t{r['prediction']}" for m, r in zip(mark, rows)]
    return "\n".join(lines) + "\n"


def save_figure(fig: Any, path: Path, dpi: int = 100) -> None:
    """A matplotlib figure as an image file (its format from ``path``'s suffix), atomically."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".")))
