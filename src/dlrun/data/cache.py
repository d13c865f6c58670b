"""On-disk cache of generated or preprocessed data, keyed by the data config."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_key(config: dict, version: int) -> str:
    """A short stable hash of the config that determines the data."""
    blob = json.dumps({"config": config, "version": version}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_dir(root: Path, key: str, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """The cache folder for ``key``, built by ``build(tmp_dir)`` if absent.

    The folder is filled under a temporary name and renamed into place, so a
    crash or Ctrl-C never leaves a half-written entry that later runs would use.
    Returns the folder and whether it was built now.
    """
    final = root / key
    if final.is_dir():
        return final, False
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same entry first
            if not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, True
