"""The one walk over a folder tree: every folder dlrun lists below a root goes through here.

A user's class folders, a data folder's fingerprint, ``dlrun-report``'s run discovery and
the clean-up of a run directory's abandoned temporaries all list files with ``files``.
It is bounded: at most ``MAX_DEPTH`` folders deep (deeper is one line, never a
RecursionError), iterative, and each folder is entered once, so a symlink loop
(``a/b -> ..``) or a second link to a folder already listed is skipped, never a hang.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from pathlib import Path

from dlrun.errors import UserError, first_line, printable

# Folders below a walk's root that it goes (a class folder's images may sit in subfolders;
# no data set or sweep needs dozens of levels, a runaway tree or a loop of bind mounts does).
MAX_DEPTH = 32


def files(
    root: Path,
    keep: Callable[[Path], bool] = lambda _: True,
    *,
    links: bool = True,
    hidden: bool = True,
    max_depth: int = MAX_DEPTH,
) -> list[Path]:
    """Every file at or under folder ``root`` that ``keep`` accepts, sorted by their paths as text.

    ``links``: follow symlinks to folders (each real folder once: loops are skipped) and
    list symlinks to files; False lists neither (a handed folder's links never lead a
    writer out of it). ``hidden``: also names starting with '.' (folders and files).
    A folder deeper than ``max_depth``, or one that cannot be listed, is a ``UserError``.
    """
    root = Path(root)
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    todo = deque([(root, 0)])  # breadth first: a folder is listed by its shortest path
    while todo:
        folder, depth = todo.popleft()
        try:
            st = folder.stat() if links else folder.lstat()
            if (st.st_dev, st.st_ino) in seen:
                continue  # a symlink loop, or a folder reached twice: listed once
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as entries:
                listed = sorted(entries, key=lambda e: e.name)
        except FileNotFoundError:
            continue  # removed while walking (another process's temporary folder)
        except OSError as exc:
            raise UserError(
                f"{printable(str(folder), 200)}: cannot list this folder "
                f"({first_line(exc.strerror or exc, 80)}); make it readable or move it out "
                f"of {printable(str(root), 200)}"
            ) from None
        for entry in listed:
            if not hidden and entry.name.startswith("."):
                continue
            try:
                if not links and entry.is_symlink():
                    continue
                is_dir = entry.is_dir()
                is_file = not is_dir and entry.is_file()
            except OSError:  # a dangling or looping symlink: neither a file nor a folder
                continue
            path = Path(entry.path)
            if is_dir:
                if depth + 1 > max_depth:
                    raise UserError(
                        f"{printable(str(path), 200)}: more than {max_depth} folders below "
                        f"{printable(str(root), 200)} (a symlink loop or a runaway tree?); "
                        "dlrun reads at most that depth: move the files up or give a "
                        "deeper folder"
                    )
                todo.append((path, depth + 1))
            elif is_file and keep(path):
                found.append(path)
    return sorted(found, key=str)


def class_folders(root: Path, keep: Callable[[Path], bool]) -> list[tuple[str, list[Path]]]:
    """A class-folder tree (``root/<class>/...``): each visible subfolder's name and the
    files under it that ``keep`` accepts (hidden ones skipped), sorted by class name."""
    return [(f.name, files(f, keep, hidden=False)) for f in subfolders(root)]


def subfolders(root: Path) -> list[Path]:
    """The visible subfolders of ``root`` (symlinks to folders included), sorted."""
    try:
        with os.scandir(root) as entries:
            return sorted(
                Path(e.path) for e in entries if not e.name.startswith(".") and _is_dir(e)
            )
    except OSError as exc:
        raise UserError(
            f"{printable(str(root), 200)}: cannot list this folder "
            f"({first_line(exc.strerror or exc, 80)}); give a readable folder"
        ) from None


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False
