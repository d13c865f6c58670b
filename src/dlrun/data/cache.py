"""On-disk cache of generated or preprocessed data, keyed by the data config.

An entry is built under a temporary name and renamed into place, with a
manifest of its files' sizes written last; reading checks the manifest and
the loader, and a damaged entry (a truncated or garbled file) is reported in
one line and rebuilt. Temporary folders left by a killed build are removed by
the next run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dlrun import walk
from dlrun.errors import first_line
from dlrun.rundir import lock
from dlrun.rundir.write import named

log = logging.getLogger("dlrun")
T = TypeVar("T")
MANIFEST = ".manifest.json"


def cache_key(config: Any, version: int) -> str:
    """A short stable hash of the config (a dict, list or config object) that determines
    the data."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    blob = json.dumps({"config": config, "version": version}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached(
    root: Path, key: str, build: Callable[[Path], object], load: Callable[[Path], T]
) -> tuple[T, bool]:
    """``load`` of the cache folder for ``key``, built by ``build(tmp_dir)`` if absent.

    A folder whose files do not match its manifest, or that ``load`` cannot
    read, is damaged: it is removed and built again. Returns the loaded value
    and whether the folder was built now.
    """
    from dlrun.rundir.lock import wait_for

    final = root / key
    if final.is_dir() and _check_manifest(final) is None:
        with contextlib.suppress(Exception):  # damaged: checked again below, under the lock
            return load(final), False
    with contextlib.suppress(OSError):  # one that cannot be made is _build's one line
        root.mkdir(parents=True, exist_ok=True)
    # One builder per entry: a second run wanting it waits, then finds it built.
    with wait_for(root / f".{key}.lock", f"the data cache entry {final}"):
        if final.is_dir():
            problem = _check_manifest(final)
            if problem is None:
                try:
                    return load(final), False
                except Exception as exc:  # a damaged file; rebuilding tells it from a bug
                    problem = first_line(exc)
            log.warning("data cache %s is damaged (%s); rebuilding it", final, problem[:160])
            shutil.rmtree(final, ignore_errors=True)
        _build(root, key, build)
    return load(final), True


def _build(root: Path, key: str, build: Callable[[Path], object]) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        from dlrun.errors import UserError

        raise UserError(
            f"paths.cache_dir: {root} cannot be a folder (a file is in the way); choose "
            "another paths.cache_dir"
        ) from None
    _remove_abandoned(root, key)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.{os.getpid()}.", dir=root))
    try:
        build(tmp)
        sizes = {str(p.relative_to(tmp)): p.stat().st_size for p in walk.files(tmp, links=False)}
        (tmp / MANIFEST).write_text(json.dumps(sizes))
        try:
            os.rename(tmp, root / key)
        except OSError:  # another process finished the same entry first
            if not (root / key).is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:  # a full disk...: the entry's, not its temporary folder's
        shutil.rmtree(tmp, ignore_errors=True)
        raise named(exc, tmp, root / key) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_manifest(folder: Path) -> str | None:
    """What is wrong with ``folder`` against its manifest, or None.

    Entries written before manifests existed have none and are trusted to ``load``.
    """
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return None
    try:
        sizes = json.loads(manifest.read_text())
    except (ValueError, OSError):
        return "unreadable manifest"
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, expected {size}"
    return None


def _remove_abandoned(root: Path, key: str) -> None:
    """Temporary folders of builds whose process is gone (killed with SIGKILL, power loss)."""
    for tmp in root.glob(f".{key}.*"):
        parts = tmp.name.split(".")
        pid = int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None
        if pid is None or not lock.alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)
