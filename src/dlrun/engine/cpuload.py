"""How many of this process's CPUs other processes keep busy: ``device.threads=null``'s guide.

On a 2-core machine with another torch process busy, torch's default of one thread per
core made the default run 5x slower than one thread (132 s against 27 s, BENCHMARKS.md):
its threads wait for each other while the neighbour holds a core. ``others_busy()`` is
the CPU time the machine spent outside this process (and the children it waited for) per
second of wall time since ``mark()``, from Linux's ``/proc/stat`` over the CPUs this
process may run on. Elsewhere it returns None and torch's default stands.

Torch-free, so that ``dlrun`` marks the start before its heavy imports: the window is
then the whole start-up (a second or more), not a sample to wait for.
"""

from __future__ import annotations

import os
import time

MIN_WINDOW_S = 0.2  # a shorter window is topped up by sleeping: a busy core shows in it

_mark: tuple[float, float, float] | None = None


def cpus() -> list[int]:
    """The CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def _busy_seconds(which: list[int]) -> float | None:
    """CPU-seconds the CPUs ``which`` have spent busy since boot (None: no /proc/stat)."""
    wanted = {f"cpu{n}" for n in which}
    ticks = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name in wanted:
                    # user nice system idle iowait irq softirq steal ...: all but idle, iowait
                    values = [int(v) for v in fields[:8]]
                    ticks += sum(values) - values[3] - values[4]
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _now() -> tuple[float, float, float] | None:
    busy = _busy_seconds(cpus())
    return None if busy is None else (time.monotonic(), busy, _own_seconds())


def mark() -> None:
    """Start a window here; ``others_busy`` measures from the latest mark."""
    global _mark
    _mark = _now()


def others_busy() -> float | None:
    """Cores' worth of CPU other processes used since the last ``mark()`` (starting a new
    window); None where it cannot be told."""
    if _mark is None:
        mark()
    start = _mark
    if start is None:
        return None
    wait = MIN_WINDOW_S - (time.monotonic() - start[0])
    if wait > 0:
        time.sleep(wait)
    end = _now()
    mark()
    if end is None:
        return None
    wall = end[0] - start[0]
    return max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / wall)
