"""Advisory locks on the folders dlrun writes: one writer for each run directory, sweep
folder and data-cache entry.

A lock is ``flock`` on a small file (``.dlrun.lock`` in a run or sweep folder,
``.<key>.lock`` beside a cache entry) that holds the writer's process id and command.
The kernel drops it when the process ends, however it ends (kill -9 included), so a
lock never outlives its writer and nobody has to clean one up. A second writer of a run
or sweep folder is refused in one line naming the first (``hold``); a second builder of
a cache entry waits for the first (``wait_for``). Readers (``dlrun-predict``,
``dlrun-report``) take no lock: every file is replaced atomically (``rundir.write``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from dlrun.errors import UserError, printable

log = logging.getLogger("dlrun")
LOCK_FILE = ".dlrun.lock"
_held: dict[Path, int] = {}  # this process's locks: their file -> open descriptor


def hold(folder: Path, what: str, how: str) -> None:
    """Lock ``folder`` for this process until it ends (or ``release``); a no-op if it
    holds the lock already. Another live holder: one line naming it, then ``how``
    (what the user can do instead)."""
    path = Path(folder).resolve() / LOCK_FILE
    if path in _held:
        return
    with contextlib.suppress(OSError):  # one that cannot be made fails where it is written
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open(path)
    if fd is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise UserError(f"{what} {folder} is in use by {holder}; {how}") from None
    _sign(fd)
    _held[path] = fd


def refuse_if_held(folder: Path, what: str, how: str) -> None:
    """``hold``'s one line if another process holds ``folder``'s lock, without writing
    anything (the folder may hold a finished run, whose files are never changed)."""
    busy = holder(folder)
    if busy:
        raise UserError(f"{what} {folder} is in use by {busy}; {how}")


def release(folder: Path) -> None:
    """Give up the lock ``hold`` took on ``folder`` (nothing if this process has none)."""
    fd = _held.pop(Path(folder).resolve() / LOCK_FILE, None)
    if fd is not None:
        os.close(fd)  # closing the last descriptor drops the flock


def holder(folder: Path) -> str | None:
    """Who else holds ``folder``'s lock now ("process 123 (dlrun ...)"), or None."""
    path = Path(folder) / LOCK_FILE
    if path.resolve() in _held:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    finally:
        os.close(fd)
    return None


@contextlib.contextmanager
def wait_for(path: Path, what: str) -> Iterator[None]:
    """Hold the lock file ``path`` for the block, waiting (and saying so once) while another
    process holds it: e.g. a cache entry that another run is building."""
    fd = _open(path)
    if fd is None:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("dlrun: waiting for %s, which %s is writing", what, _holder(fd))
            fcntl.flock(fd, fcntl.LOCK_EX)
        _sign(fd)
        yield
    finally:
        os.close(fd)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (on this machine): a temporary file or folder named
    after a process that is gone was abandoned (kill -9, power loss)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _open(path: Path) -> int | None:
    """The lock file, opened (made if absent); None in a folder this process cannot
    write, where it cannot write anything else either (and says so in its own line)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR):
            return None
        raise


def _sign(fd: int) -> None:
    """Write this process's id, start and command into the lock file it holds."""
    with contextlib.suppress(OSError):
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        text = f"{os.getpid()} {int(time.time())} {printable(command, 200)}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)


def _holder(fd: int) -> str:
    """The holder a lock file names: "process PID (COMMAND, since HH:MM:SS)"."""
    try:
        text = ""
        for _ in range(50):  # a holder that won a race this instant signs a moment later
            text = os.pread(fd, 1024, 0).decode(errors="replace").strip()
            if text:
                break
            time.sleep(0.01)
        pid, started, command = text.split(" ", 2)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(started)))
        return f"process {int(pid)} ({command}, since {since})"
    except (OSError, ValueError):
        return "another process"
