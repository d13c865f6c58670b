"""Readers for image datasets in the IDX format (MNIST family) and as ``.npz`` arrays."""

from __future__ import annotations

import gzip
import zipfile
import zlib
from pathlib import Path

import numpy as np

from dlrun.errors import UserError

# IDX magic: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions.
_UBYTE = 0x08
MAX_IDX_BYTES = 1 << 33  # 8 GiB: ten times EMNIST's largest file


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (``.gz`` or plain) as a uint8 array of the shape its header gives.

    Reads no more than the header promises (a gzip bomb stops there), and at most
    ``MAX_IDX_BYTES``."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:3] != bytes([0, 0, _UBYTE]) or head[3] == 0:
                raise UserError(f"{path}: not an unsigned-byte IDX file (bad header)")
            dims = f.read(4 * head[3])
            if len(dims) < 4 * head[3]:
                raise UserError(f"{path}: truncated IDX header; delete it and fetch it again")
            shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(head[3]))
            size = int(np.prod(shape, dtype=object))
            if size > MAX_IDX_BYTES:
                raise UserError(
                    f"{path}: its header promises more than {MAX_IDX_BYTES:,} bytes "
                    f"({_shape_text(shape)}); the file is corrupt: delete it and fetch it again"
                )
            raw = f.read(size + 1)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise UserError(
            f"{path}: corrupt or truncated file ({exc}); delete it and fetch it again"
        ) from None
    if len(raw) != size:
        found = f"{4 + len(dims) + len(raw)}{'+' if len(raw) > size else ''}"
        raise UserError(
            f"{path}: {found} bytes where the header promises {4 + len(dims) + size} "
            f"({_shape_text(shape)}); the file is truncated or corrupt: delete it and fetch it "
            "again"
        )
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape).copy()


def _shape_text(shape: tuple[int, ...]) -> str:
    """An IDX header's shape for a message: whole when short, else its first dimensions
    (a corrupt header can promise 255 of them)."""
    if len(shape) <= 4:
        return f"shape {shape}"
    first = ", ".join(str(n) for n in shape[:4])
    return f"{len(shape)} dimensions, shape ({first}, ...)"


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
