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


def _png_claiming(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 64)  # a few rows at most: what a bomb shows first
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body)


@SETTINGS
@given(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1))
def test_an_image_header_never_makes_a_reader_take_memory(width, height):
    """Whatever size a PNG header claims, the image reader refuses it past MAX_PIXELS
    before decoding a pixel, or decodes it (small), or names it unreadable: one line."""
    import warnings

    from dlrun.data.image_files import MAX_PIXELS, _decode_chunk

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "claim.png"
        path.write_bytes(_png_claiming(width, height))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _, bad = _decode_chunk(([str(path)], 8, 1))
    for _, reason in bad:
        assert "\n" not in reason and len(reason) <= 200
    if width * height > MAX_PIXELS:
        assert bad and "pixels" in bad[0][1], bad


ANNOTATIONS = b"file,label\n" + b"".join(
    b"%d.png,%s\n" % (i, b"ab"[i % 2 : i % 2 + 1]) for i in range(6)
)


def test_image_annotation_files_read_or_refuse():
    from types import SimpleNamespace

    from dlrun.data.image_files import list_annotations

    d = SimpleNamespace(filename_column="file", label_column="label")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        root.mkdir()
        for i in range(6):
            (root / f"{i}.png").write_bytes(b"")
        check(lambda p: list_annotations(root, p, d), "labels.csv", ANNOTATIONS)
        # Found by the fuzzing above on CI (a csv.Error escaped): a bare carriage return is
        # a line end, a blank line before the header leaves no columns.
        path = Path(tmp) / "labels.csv"
        path.write_bytes(b"file,label\n\r0.png,a\n1.png,b\n")
        assert list_annotations(root, path, d) == (["a", "b"], ["0.png", "1.png"], [0, 1])
        path.write_bytes(b"\rfile,label\n0.png,a\n1.png,b\n")
        with pytest.raises(UserError, match="no column dataset.filename_column=file"):
            list_annotations(root, path, d)


# A folder tree: (folder index, name) pairs of subfolders, and symlinks from one folder to
# another (loops included), drawn at random.
TREE = st.tuples(
    st.lists(st.integers(0, 7), min_size=1, max_size=12),  # each new folder's parent
    st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), max_size=6),  # links
)


@SETTINGS
@given(TREE)
def test_a_folder_walk_ends_on_any_tree_of_links(tree):
    """Any tree with symlinks between its folders (loops, links to the root, to
    themselves): the walk ends, lists each real file once, and never raises."""
    from dlrun import walk

    parents, links = tree
    with tempfile.TemporaryDirectory() as tmp:
        folders = [Path(tmp) / "root"]
        folders[0].mkdir()
        for i, parent in enumerate(parents):
            folders.append(folders[min(parent, len(folders) - 1)] / f"d{i}")
            folders[-1].mkdir()
            (folders[-1] / "f.txt").write_text(str(i))
        for k, (a, b) in enumerate(links):
            src, dst = folders[min(a, len(folders) - 1)], folders[min(b, len(folders) - 1)]
            (src / f"link{k}").symlink_to(dst)
        found = walk.files(folders[0])
        texts = [p.read_text() for p in found]
        assert sorted(texts) == sorted(str(i) for i in range(len(parents)))
        assert walk.files(folders[0], links=False) == sorted(
            (f / "f.txt" for f in folders[1:]), key=str
        )
