"""scripts/bench.py: dlrun and its naive baseline measured side by side, table appended."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


@pytest.mark.slow  # the default suite's time; CI runs it with the slow ones
def test_bench_appends_a_table_with_both_rates(tmp_path, cache_dir):
    out = tmp_path / "BENCH.md"
    out.write_text("# earlier figures\n")
    args = ["--tasks", "kmnist", "--device", "cpu", "--steps", "2", "--no-target"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--append", str(out), "dataset.batch_size=16"],
        cwd=tmp_path,
        env={**os.environ, "DLRUN_CACHE_DIR": str(cache_dir)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text.startswith("# earlier figures\n")  # appended, nothing lost
    assert "`python scripts/bench.py --tasks kmnist" in text
    assert re.search(r"torch \S+, dlrun \S+, Python \S+; commit \S+", text)
    row = next(line for line in text.splitlines() if line.startswith("| kmnist |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["kmnist", "kmnist_cnn", "16"]
    dlrun_rate, base_rate = (float(c.replace(",", "")) for c in cells[3:5])
    assert dlrun_rate > 0 and base_rate > 0
    assert float(cells[5].rstrip("x")) == pytest.approx(dlrun_rate / base_rate, abs=0.06)


def test_bench_refuses_an_unknown_task(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--tasks", "mnist"], capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "tasks are dates, imdb, algebra, kmnist" in done.stderr
