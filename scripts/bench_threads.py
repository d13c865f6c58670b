"""Wall time of the default ``dlrun`` job by ``device.threads``, alone and beside a busy
neighbour: what ``device.threads=null`` (the default) must never be much worse than.

    python scripts/bench_threads.py [--loads none spin torch] [--threads null 1 2]
                                    [--timeout 150]        (inside the CPU lock)

Loads: ``none``; ``spin``, one Python process spinning on one core; ``torch``, a torch
process multiplying matrices on as many threads as there are cores. A run past
``--timeout`` seconds is killed and shown as ``>TIMEOUT``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOADS = {
    "none": None,
    "spin": "while True: pass",
    "torch": (
        "import torch\na = torch.randn(512, 512)\nwhile True:\n    a = torch.tanh(a @ a / 30)\n"
    ),
}


def timed(args: list[str], timeout: float) -> tuple[str, str]:
    start = time.perf_counter()
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f">{timeout:.0f}", ""
    if done.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr}")
    chosen = re.search(r"(\d+) CPU thread", done.stderr + done.stdout)
    return f"{time.perf_counter() - start:.1f}", chosen.group(1) if chosen else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", nargs="+", default=list(LOADS), choices=list(LOADS))
    parser.add_argument("--threads", nargs="+", default=["null", "1", "2"])
    parser.add_argument("--timeout", type=float, default=150)
    args = parser.parse_args()
    dlrun = str(Path(sys.executable).parent / "dlrun")
    print(f"{os.cpu_count()} CPUs; the default job (`dlrun`), wall seconds\n")
    print("| neighbour | " + " | ".join(f"threads={t}" for t in args.threads) + " |")
    print("|---|" + "---|" * len(args.threads))
    for load in args.loads:
        neighbour = LOADS[load] and subprocess.Popen([sys.executable, "-c", LOADS[load]])
        try:
            time.sleep(2 if neighbour else 0)
            cells = []
            for threads in args.threads:
                with tempfile.TemporaryDirectory() as out:
                    command = [dlrun, f"device.threads={threads}", f"paths.output_dir={out}"]
                    seconds, chosen = timed(command, args.timeout)
                cells.append(f"{seconds} ({chosen} chosen)" if chosen else seconds)
            print(f"| {load} | " + " | ".join(cells) + " |", flush=True)
        finally:
            if neighbour:
                neighbour.kill()
                neighbour.wait()


if __name__ == "__main__":
    main()
