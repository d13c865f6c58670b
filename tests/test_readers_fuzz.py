"""Every reader fed mutated files: it reads them or refuses them in one line.

Hypothesis mutates a valid file (bytes flipped, cut, repeated or inserted, a
byte-order mark, quotes, NULs, huge fields) and hands it to one of dlrun's
readers: the user's data (CSV and TSV tables, labelled texts, text pairs, IDX
glyphs, images) and a run directory's files (JSON, YAML, JSON Lines,
checkpoints). Each must return or raise ``UserError`` with a one-line message,
in bounded time: never another exception, a hang or a traceback.
"""

from __future__ import annotations

import gzip
import io
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlrun.errors import UserError
from dlrun.testing.fake import idx_bytes

SETTINGS = settings(
    max_examples=30, deadline=5000, suppress_health_check=list(HealthCheck), database=None
)
INSERTS = [b"\xef\xbb\xbf", b'"', b"\x00", b"\r", b"\n", b",", b"\t", b"inf", b"nan", b"\xff\xfe"]


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """``original`` with one to four edits."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.one_of(st.sampled_from(INSERTS), st.binary(max_size=8)))
        elif kind == "repeat":
            data[at:at] = bytes(data[at : at + 16]) * draw(st.integers(2, 5000))
        elif data:
            del data[at : at + draw(st.integers(1, 32))]
    return bytes(data)


def check(reader: Callable[[Path], object], name: str, original: bytes) -> None:
    """``reader`` of ``original`` mutated: a value or a one-line ``UserError``."""

    @SETTINGS
    @given(mutated(original))
    def run(data: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            try:
                reader(path)
            except UserError as exc:
                message = str(exc)
                assert "\n" not in message and 0 < len(message) < 1000, message[:1200]

    run()


TABLE = b"a,b,label\n" + b"".join(
    b"%d,%.2f,%s\n" % (i, i / 7, b"xyz"[i % 3 : i % 3 + 1]) for i in range(40)
)
TEXTS = b"text,label\n" + b"".join(
    b'"good film %d, really",pos\nbad plot %d,neg\n' % (i, i) for i in range(20)
)
JSONL = b"".join(
    json.dumps({"text": f"review {i} ok", "label": "ab"[i % 2]}).encode() + b"\n" for i in range(20)
)
PAIRS = b"".join(b"3 March 2001\t2001-03-%02d\n" % (i + 1) for i in range(20))


def test_tables_read_or_refuse():
    from dlrun.data.table import read_table

    check(read_table, "t.csv", TABLE)
    check(read_table, "t.tsv", TABLE.replace(b",", b"\t"))


@pytest.mark.parametrize("name, original", [("t.csv", TEXTS), ("t.jsonl", JSONL)])
def test_labelled_texts_read_or_refuse(name, original):
    from dlrun.data.text import read_labelled

    check(lambda p: read_labelled(p, "text", "label"), name, original)


def test_text_pairs_read_or_refuse():
    from dlrun.tasks.text_pairs import read_pairs

    check(read_pairs, "pairs.tsv", PAIRS)


def test_idx_glyphs_read_or_refuse():
    from dlrun.tasks.kmnist import read_idx

    images = np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28)
    check(read_idx, "train-images-idx3-ubyte", idx_bytes(images))
    check(read_idx, "train-images-idx3-ubyte.gz", gzip.compress(idx_bytes(images)))


def test_images_decode_or_are_named_unreadable():
    """Images are decoded in chunks; a damaged one is reported by reason, never raised."""
    from PIL import Image

    from dlrun.data.image_files import _decode_chunk

    buffer = io.BytesIO()
    Image.fromarray(np.arange(24 * 24 * 3, dtype=np.uint8).reshape(24, 24, 3)).save(buffer, "PNG")

    def decode(path: Path) -> None:
        images, bad = _decode_chunk(([str(path)], 16, 3))
        assert images.shape == (1, 16, 16, 3)
        assert all(len(reason) <= 200 and "\n" not in reason for _, reason in bad)

    check(decode, "x.png", buffer.getvalue())


def test_run_directory_files_read_or_refuse():
    from dlrun.rundir import read

    summary = json.dumps({"status": "ok", "best": {"val/loss": 0.5}, "steps": 20}).encode()
    check(read.read_json, "summary.json", summary)
    check(read.read_yaml, "config.yaml", b"task:\n  name: dates\ntrainer:\n  max_steps: 20\n")
    check(read.read_jsonl, "metrics.jsonl", b'{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n')
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(3, 4)}, "config": {"task": {"name": "x"}}}, buffer)
    check(read.read_checkpoint, "last.pt", buffer.getvalue())
