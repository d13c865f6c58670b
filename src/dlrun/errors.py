"""Errors meant for people: a user's mistake ends with one clear line, no traceback."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import sys
from typing import NoReturn


class UserError(Exception):
    """A mistake in the command, the config or the data that the user can fix.

    The message says what is wrong and how to fix it. Entry points print it on
    one line and exit non-zero; anything else that raises is a bug and keeps its
    traceback.
    """


class ConfigError(UserError):
    """One or more invalid config values, all reported at once."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        if len(problems) == 1:
            msg = f"invalid config: {problems[0]}"
        else:
            msg = f"invalid config ({len(problems)} problems): " + "; ".join(problems)
        super().__init__(msg)


class Interrupted(Exception):
    """Training was stopped by a signal after writing a checkpoint."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def printable(text: str, limit: int = 80) -> str:
    """``text`` safe to show in a one-line message: control characters escaped, cut to
    ``limit`` characters (a pasted megabyte never becomes a megabyte of error)."""
    shown = "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )
    if len(shown) > limit:
        shown = f"{shown[: limit - 3]}... ({len(text):,} characters)"
    return shown


def printable_names(names: list[str], limit: int = 12) -> str:
    """Names (a file's columns) for a one-line message: the first ``limit``, each cut to 40
    characters, then how many there are in all (a header of thousands stays one line)."""
    shown = ", ".join(printable(n, 40) for n in names[:limit])
    return shown + (f", ... ({len(names):,} in all)" if len(names) > limit else "")


def first_line(what: BaseException | str, limit: int | None = None) -> str:
    """The first non-blank line of an error message, stripped (an exception with no message:
    its type's name); with ``limit``, made safe to show and cut (``printable``)."""
    text = next((line.strip() for line in str(what).splitlines() if line.strip()), "")
    if not text and isinstance(what, BaseException):
        text = type(what).__name__
    return text if limit is None else printable(text, limit)


# What a failed write (or a folder that cannot be made) means for the user, by errno.
_FIXES = {
    errno.ENOSPC: "the disk is full: free some space or choose a folder on another disk",
    errno.EDQUOT: "the disk quota is used up: free some space or choose another folder",
    errno.EROFS: "the file system is read-only: choose a folder you can write",
    errno.EACCES: "permission denied: choose a folder you can write, or change its permissions",
    errno.EPERM: "not permitted: choose a folder you can write, or change its permissions",
    errno.ENOTDIR: "a file is where a folder should be: move it, or choose another folder",
    errno.EISDIR: "a folder is where a file should be: move it, or choose another folder",
    errno.EEXIST: "something is in the way: move it, or choose another folder",
}


def os_problem(exc: OSError) -> str | None:
    """One line for an ``OSError`` a machine's state explains (a full disk, a read-only
    or forbidden folder, a file in the way): the path and the fix. None for any other
    (a bug, which keeps its traceback)."""
    fix = _FIXES.get(exc.errno or 0)
    if fix is None:
        return None
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(printable(os.fsdecode(p), 200) for p in paths) or "a file dlrun writes"
    return f"{where}: {fix}"


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage mistakes are one line and exit status 2, like every dlrun error."""

    def error(self, message: str) -> NoReturn:
        if re.match(r"unrecognized arguments:.* -[\d.]", message):  # a row like -0.5,0.5
            message += "; an input that starts with '-' goes after '--', e.g. -- -0.5,0.5"
        print(
            f"{self.prog}: error: {printable(message, 200)} (see {self.prog} --help)",
            file=sys.stderr,
        )
        sys.exit(2)


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop: stops like Ctrl-C, with exit status 143."""

    exit_code = 143


@contextlib.contextmanager
def one_line_errors(prog: str):
    """A console script's user error ends with one line and exit 2, Ctrl-C with exit 130."""
    try:
        yield
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        problem = os_problem(exc)
        if problem is None:
            raise
        print(f"{prog}: error: {problem}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: stopped by SIGINT", file=sys.stderr)
        sys.exit(130)
