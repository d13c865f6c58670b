"""Image files for task=images: listing a class-folder tree or an annotations CSV,
decoding with Pillow (in worker processes when that pays), choosing the size, the
stratified split and per-channel statistics."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import multiprocessing
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from dlrun import walk
from dlrun.data.text import read_text
from dlrun.engine import checkpoint
from dlrun.errors import UserError, first_line, printable, printable_names

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# dataset.image_size=null: the median shorter side of (a sample of) the images, within these.
AUTO_SIZE = (16, 64)
AUTO_SAMPLE = 512  # images whose headers are read to choose the size
CHUNK = 256  # images per worker job
IMAGES = "images.u8"  # the cache's images: raw uint8 rows (N, size, size, channels)
# Workers start in about 2 s (they import torch): used only when the images left after
# the first chunk would take longer than this to decode in this process.
POOL_AFTER_S = 4.0


# -- listing the files ------------------------------------------------------------------


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in EXTENSIONS and not path.name.startswith(".")


def list_folder(root: Path) -> tuple[list[str], list[str], list[int]]:
    """(classes, file names relative to ``root``, class ids) of an ImageFolder tree."""
    folders = walk.class_folders(root, _is_image)
    if not folders:
        raise UserError(
            f"dataset.path={printable(str(root))}: no class subfolders; put each class's "
            "images in a subfolder named after it, or give dataset.annotations=FILE.csv"
        )
    classes: list[str] = []
    names: list[str] = []
    labels: list[int] = []
    for name, paths in folders:
        if not paths:
            raise UserError(
                f"dataset.path={printable(str(root))}: class folder '{printable(name)}' "
                f"has no images ({', '.join(EXTENSIONS)}); add some or remove the folder"
            )
        labels += [len(classes)] * len(paths)
        classes.append(name)
        names += [p.relative_to(root).as_posix() for p in paths]
    return classes, names, labels


def annotations_file(d) -> Path:
    """``dataset.annotations`` as given, or relative to ``dataset.path`` if only found there."""
    path = Path(d.annotations).expanduser()
    inside = Path(d.path).expanduser() / path
    return inside if not path.is_file() and inside.is_file() else path


def _class_order(names: set[str]) -> list[str]:
    """Sorted class names; numerically when every name is an integer (2 before 10)."""
    if all(n.lstrip("-").isdigit() for n in names):
        return sorted(names, key=int)
    return sorted(names)


def list_annotations(root: Path, csv_path: Path, d) -> tuple[list[str], list[str], list[int]]:
    """(classes, file names relative to ``root``, class ids) of an annotations CSV."""
    text = read_text(csv_path, "utf-8-sig")
    head = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=head.count)
    # newline="": the csv module reads \r, \n and \r\n line ends itself
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        return _annotations(root, csv_path, d, reader)
    except csv.Error as exc:
        raise UserError(
            f"{printable(str(csv_path))}, line {reader.line_num}: not CSV "
            f"({first_line(exc, 120)}); write one file name and label per line"
        ) from None


def _annotations(root: Path, csv_path: Path, d, reader: csv.DictReader):
    """``list_annotations``'s result from its file's rows."""
    columns = [c.strip() for c in reader.fieldnames or []]
    want = {"filename_column": d.filename_column, "label_column": d.label_column}
    missing = [f"dataset.{k}={v}" for k, v in want.items() if v not in columns]
    if missing:
        found = printable_names(columns) or "none (the file is empty)"
        raise UserError(
            f"{printable(str(csv_path))}: no column {' or '.join(missing)}; its columns are "
            f"{found}; name the right ones with dataset.filename_column / dataset.label_column"
        )
    rows = []
    for line, row in enumerate(reader, 2):
        row = {(k or "").strip(): v for k, v in row.items()}
        name, label = ((row.get(want[k]) or "").strip() for k in want)
        if not name and not label:
            continue  # a blank line
        if not name or not label:
            what = "file name" if not name else "label"
            raise UserError(f"{printable(str(csv_path))}, line {line}: no {what}")
        file = root / name
        if not file.is_file():
            raise UserError(
                f"{printable(str(csv_path))}, line {line}: {printable(name)} does not exist "
                f"in dataset.path={printable(str(root))}"
            )
        rows.append((name, label))
    if not rows:
        raise UserError(f"{printable(str(csv_path))}: no rows of file names and labels")
    classes = _class_order({label for _, label in rows})
    index = {c: i for i, c in enumerate(classes)}
    return classes, [n for n, _ in rows], [index[label] for _, label in rows]


# -- decoding -------------------------------------------------------------------------------


# The most pixels an image file may have (8192 x 8192: a 268 MB RGBA frame). Pillow only
# warns below twice its own limit (89 megapixels); a file that claims more, such as a
# decompression bomb (a few KB of PNG that claims 50,000 x 50,000), is refused before a
# pixel is decoded: a training set names the file (or skips it, dataset.skip_bad=true),
# dlrun-predict is one line.
MAX_PIXELS = 8192 * 8192


class ImageTooLarge(ValueError):
    """An image file claims more than ``MAX_PIXELS`` pixels."""


@contextlib.contextmanager
def open_image(path: str | Path) -> Iterator[Any]:
    """The image file ``path`` opened with Pillow (its header read, no pixel decoded yet);
    ``ImageTooLarge`` if it claims more than ``MAX_PIXELS``."""
    from PIL import Image

    limit = (
        f"more than the {MAX_PIXELS:,} pixels dlrun decodes (data.image_files.MAX_PIXELS): "
        "a decompression bomb, or a picture to shrink first"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the check below
        try:
            img = Image.open(path)
        except Image.DecompressionBombError:  # over twice Pillow's own limit
            raise ImageTooLarge(f"it claims {limit}") from None
    with img:
        width, height = img.size
        if width * height > MAX_PIXELS:
            raise ImageTooLarge(f"{width} x {height} pixels, {limit}")
        yield img


def decode_image(path: str, size: int, channels: int) -> np.ndarray:
    """One image file as uint8 (size, size, channels): first frame, EXIF orientation applied,
    transparency composited on black, resized (squashed) to a square with antialiasing."""
    from PIL import Image, ImageOps

    with open_image(path) as img:
        img.draft("L" if channels == 1 else "RGB", (size, size))  # JPEG: decode at 1/2..1/8
        img = ImageOps.exif_transpose(img)
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            rgba = img.convert("RGBA")
            img = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            img.alpha_composite(rgba)
        img = img.convert("L" if channels == 1 else "RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        return np.asarray(img, dtype=np.uint8).reshape(size, size, channels)


def why_unreadable(exc: BaseException) -> str:
    return first_line(exc, 200)


def _decode_chunk(job: tuple[list[str], int, int]) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Images of ``job``'s files and (position, reason) of each unreadable one (zeros there)."""
    files, size, channels = job
    out = np.zeros((len(files), size, size, channels), dtype=np.uint8)
    bad = []
    for i, file in enumerate(files):
        try:
            out[i] = decode_image(file, size, channels)
        except Exception as exc:  # anything a damaged file makes Pillow raise is the file's fault
            bad.append((i, why_unreadable(exc)))
    return out, bad


def _init_worker() -> None:
    # Ctrl-C reaches the whole process group: the parent stops the pool and says so once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def decode_chunks(
    files: list[str], size: int, channels: int, workers: int
) -> Iterator[tuple[np.ndarray, list[tuple[int, str]]]]:
    """Every file decoded, CHUNK files at a time and in order: each chunk's images and
    (position in the chunk, reason) of its unreadable files. The first chunk is timed
    here, and the rest go to ``workers`` processes when that pays for starting them; a
    consumer that writes each chunk away holds a few chunks, never the whole set."""
    from PIL import Image

    Image.init()  # every format plugin imported before the timing starts
    jobs = [(files[i : i + CHUNK], size, channels) for i in range(0, len(files), CHUNK)]
    if not jobs:
        return
    start = time.perf_counter()
    yield _decode_chunk(jobs[0])
    rest = jobs[1:]
    if workers > 1 and rest and (time.perf_counter() - start) * len(rest) >= POOL_AFTER_S:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(workers, len(rest)), initializer=_init_worker) as pool:
            yield from pool.imap(_decode_chunk, rest)
    else:
        yield from map(_decode_chunk, rest)


def decode_all(
    files: list[str], size: int, channels: int, workers: int
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Every file decoded into one array; (images, (index, reason) of the bad files)."""
    results = list(decode_chunks(files, size, channels, workers))
    images = np.concatenate([r[0] for r in results]) if results else np.zeros((0, size, size, 1))
    bad = [(j * CHUNK + i, why) for j, (_, errors) in enumerate(results) for i, why in errors]
    return images, bad


def choose_size(files: list[str]) -> tuple[int, int]:
    """(side, images measured): the median shorter side of up to AUTO_SAMPLE images
    (evenly spaced; headers only), clipped to AUTO_SIZE."""
    step = max(1, len(files) // AUTO_SAMPLE)
    sides = []
    for file in files[::step][:AUTO_SAMPLE]:
        try:
            with open_image(file) as img:
                sides.append(min(img.size))
        except Exception:  # noqa: S112 - unreadable files are reported when decoding
            continue
    if not sides:
        return AUTO_SIZE[1], 0
    return int(np.clip(np.median(sides), *AUTO_SIZE)), len(sides)


# -- splitting ---------------------------------------------------------------------------


def stratified_split(
    labels: np.ndarray, val: float, test: float, seed: int
) -> dict[str, np.ndarray]:
    """Row indices of train/val/test: each class shuffled (seeded) and cut by the fractions."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        n_test, n_val = round(len(rows) * test), round(len(rows) * val)
        parts["test"].append(rows[:n_test])
        parts["val"].append(rows[n_test : n_test + n_val])
        parts["train"].append(rows[n_test + n_val :])
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["train"] = rng.permutation(out["train"])  # stored in random order (train_subset)
    out["val"], out["test"] = np.sort(out["val"]), np.sort(out["test"])
    return out


# -- the cache ------------------------------------------------------------------------------


def write_cache(out: Path, root: Path, names: list[str], labels: list[int], d: Any) -> None:
    """Decode ``names`` (under ``root``) per the dataset config ``d`` into ``out``: the
    images as raw uint8 rows (IMAGES, written a chunk at a time as they are decoded, so
    a set larger than RAM can be prepared), data.pt (labels) and meta.json (size, names
    kept, files skipped)."""
    files = [str(root / n) for n in names]
    size, chosen_from = d.image_size, 0
    if size is None:
        size, chosen_from = choose_size(files)
    workers = d.workers or len(os.sched_getaffinity(0))
    bad: list[tuple[int, str]] = []
    with open(out / IMAGES, "wb") as f:
        for j, (images, errors) in enumerate(decode_chunks(files, size, d.channels, workers)):
            bad += [(j * CHUNK + i, why) for i, why in errors]
            if errors:
                images = np.delete(images, [i for i, _ in errors], axis=0)
            f.write(images.tobytes())
    if bad and not d.skip_bad:
        i, why = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UserError(
            f"{printable(files[i], 200)}: not a readable image ({why}){more}; fix or remove "
            "it, or add dataset.skip_bad=true to skip unreadable images"
        )
    keep = np.ones(len(files), dtype=bool)
    keep[[i for i, _ in bad]] = False
    label = torch.tensor(labels, dtype=torch.long)[torch.from_numpy(keep)]
    checkpoint.save({"label": label}, out / "data.pt")  # a full disk: its one line
    meta = {
        "image_size": size,
        "channels": d.channels,
        "chosen_from": chosen_from,
        "names": [n for n, k in zip(names, keep, strict=True) if k],
        "skipped": [f"{printable(names[i])}: {why}" for i, why in bad],
    }
    (out / "meta.json").write_text(json.dumps(meta))


def load_cache(folder: Path) -> dict:
    """What ``write_cache`` wrote: labels, meta, the images file (``images_file``) and its
    rows memory-mapped (``image``: read from disk as used, not loaded). ValueError if the
    images, labels and names disagree."""
    data = torch.load(folder / "data.pt", weights_only=True)
    data["meta"] = meta = json.loads((folder / "meta.json").read_text())
    shape = (len(meta["names"]), meta["image_size"], meta["image_size"], meta["channels"])
    path = folder / IMAGES
    if path.stat().st_size != math.prod(shape) or len(data["label"]) != shape[0]:
        raise ValueError("images, labels and names do not match")
    data["images_file"] = path
    data["image"] = mapped(path, shape)
    return data


def mapped(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """The uint8 rows in file ``path`` as a tensor of ``shape``, memory-mapped copy-on-write
    (the file is never changed; its pages are read when used and can leave RAM)."""
    if not math.prod(shape):
        return torch.zeros(shape, dtype=torch.uint8)
    storage = torch.from_file(str(path), shared=False, size=math.prod(shape), dtype=torch.uint8)
    return storage.view(shape)


class RowFile:
    """Rows of uint8 (``shape[1:]`` each) in an open file (unlinked: it lives as long as
    this): ``tensor`` maps them all, ``read`` copies some with pread, mapping nothing."""

    def __init__(self, file: BinaryIO, shape: tuple[int, ...]):
        self.file, self.shape, self.row_bytes = file, shape, math.prod(shape[1:])
        self.tensor = mapped(Path(file.name), shape)

    def read(self, rows: np.ndarray) -> torch.Tensor:
        out = np.empty((len(rows), self.row_bytes), dtype=np.uint8)
        read_rows(self.file, self.row_bytes, rows, out)
        return torch.from_numpy(out).view(len(rows), *self.shape[1:])


def read_rows(file: BinaryIO, row_bytes: int, rows: np.ndarray, out: np.ndarray) -> None:
    """Rows ``rows`` of ``row_bytes`` bytes each of ``file`` into ``out``, by pread."""
    for k, r in enumerate(rows.tolist()):
        if os.preadv(file.fileno(), [out[k]], r * row_bytes) != row_bytes:
            raise ValueError(f"{file.name}: shorter than row {r}")


def gather_rows(
    source: Path,
    shape: tuple[int, ...],
    rows: np.ndarray,
    out: Path,
    on_chunk: Callable[[torch.Tensor], None] | None = None,
    chunk: int = 1024,
) -> RowFile:
    """Rows ``rows`` (in that order) of the uint8 rows of ``shape[1:]`` in file ``source``,
    written to file ``out`` a chunk at a time (``out`` is unlinked at once). Rows are read
    with pread, so neither file's pages are mapped while copying: memory for a chunk, not
    the set. ``on_chunk`` sees each chunk (e.g. to add up statistics)."""
    row_bytes = math.prod(shape[1:])
    buffer = np.empty((chunk, row_bytes), dtype=np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as src, open(out, "wb") as dst:
        for start in range(0, len(rows), chunk):
            part = buffer[: len(rows[start : start + chunk])]
            read_rows(src, row_bytes, rows[start : start + chunk], part)
            if on_chunk is not None:
                on_chunk(torch.from_numpy(part).view(len(part), *shape[1:]))
            dst.write(part.tobytes())
    try:
        return RowFile(open(out, "rb"), (len(rows), *shape[1:]))  # noqa: SIM115 - kept open
    finally:
        os.unlink(out)


class ChannelStats:
    """Per-channel mean and std of uint8 (N, H, W, C) images scaled to [0, 1], added up a
    chunk of images at a time (no float copy of the whole set)."""

    def __init__(self, channels: int):
        self.total = torch.zeros(channels, dtype=torch.float64)
        self.squares = torch.zeros(channels, dtype=torch.float64)
        self.n = 0

    def add(self, images: torch.Tensor) -> None:
        x = images.reshape(-1, self.total.numel()).double() / 255
        self.total += x.sum(0)
        self.squares += (x * x).sum(0)
        self.n += len(x)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = max(1, self.n)
        mean = self.total / n
        std = (self.squares / n - mean * mean).clamp(min=0).sqrt()
        return mean.float(), std.clamp(min=1e-3).float()


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 (N, H, W, C) images scaled to [0, 1]."""
    stats = ChannelStats(images.shape[-1])
    for start in range(0, len(images), 1024):
        stats.add(images[start : start + 1024])
    return stats.result()
