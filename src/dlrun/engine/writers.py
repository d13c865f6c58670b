"""Metric writers: ``log(metrics, step)`` and ``close()``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class JsonlWriter:
    """One JSON object per line, flushed on every write so a crash loses nothing."""

    def __init__(self, path: Path, keep_until_step: int | None = None):
        self.path = path
        if keep_until_step is not None and path.exists():
            # On resume, drop records written after the checkpoint we continue from.
            kept = [line for line in read_jsonl(path) if line["step"] <= keep_until_step]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._file = path.open("a")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        record = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf; write them as strings rather than producing invalid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
