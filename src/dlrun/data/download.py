"""Fetch official data files: md5-verified, written atomically, with progress."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from dlrun.errors import UserError


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str, opener: Callable = urllib.request.urlopen) -> Path:
    """``url`` saved as ``dest`` once its md5 matches; a valid ``dest`` is kept as is.

    The bytes go to a temporary file beside ``dest`` that is renamed into place
    only after the checksum matches, so an interrupted or corrupt transfer never
    leaves a file that a later run would trust. ``opener`` is replaceable for tests.
    """
    dest = Path(dest)
    if dest.is_file() and md5sum(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        try:
            with os.fdopen(fd, "wb") as out, opener(url) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(
                    total=total, unit="B", unit_scale=True, desc=dest.name, leave=False
                ) as bar:
                    while block := response.read(1 << 20):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
        except (urllib.error.URLError, OSError) as exc:
            raise UserError(
                f"could not download {url} ({exc}); check the network or fetch the file "
                f"by hand into {dest.parent}"
            ) from None
        if digest.hexdigest() != md5:
            raise UserError(
                f"{url}: md5 {digest.hexdigest()} != expected {md5}; the transfer was corrupt "
                "or the file changed upstream; nothing was written, try again"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
