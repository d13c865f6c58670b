"""Readers for image datasets in the IDX format (MNIST family) and as ``.npz`` arrays."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np

from dlrun.errors import UserError

# IDX magic: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions.
_UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (``.gz`` or plain) as a uint8 array of the shape its header gives."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UserError(
            f"{path}: corrupt or truncated file ({exc}); delete it and fetch it again"
        ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _UBYTE or raw[3] == 0:
        raise UserError(f"{path}: not an unsigned-byte IDX file (bad header)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise UserError(f"{path}: truncated IDX header; delete it and fetch it again") from None
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(raw) != expected:
        raise UserError(
            f"{path}: {len(raw)} bytes where the header promises {expected} (shape {shape}); "
            "the file is truncated or corrupt: delete it and fetch it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def read_npz(path: Path) -> np.ndarray:
    """The single array of an ``.npz`` file (KMNIST's ``kmnist-*-imgs.npz`` layout)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive[archive.files[0]]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, IndexError) as exc:
        raise UserError(
            f"{path}: not a readable .npz file ({exc}); delete it and fetch it again"
        ) from None
