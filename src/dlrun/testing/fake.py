"""Tiny synthetic corpora in the layouts the file-reading tasks read.

An aclImdb tree, labelled texts (CSV, TSV, JSON Lines, class folders), KMNIST
files, a parallel TSV, image folders and a CSV table, each learnable in a few
steps. Each writer takes a folder, writes into it and returns what
``dataset.path`` should name (``dlrun.testing.TINY``: the tests' and CI's
seconds-long runs). The tests also build damaged variants from them.
"""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np

POSITIVE = ["great", "wonderful", "moving", "superb", "loved", "brilliant"]
NEGATIVE = ["awful", "boring", "dull", "terrible", "hated", "waste"]
FILLER = ["the", "film", "a", "movie", "plot", "actor", "scene", "and", "it", "was", "story"]


def review(label: int, rng: random.Random) -> str:
    """Filler words with three words of the review's sentiment, some markup and punctuation."""
    cue = POSITIVE if label else NEGATIVE
    words = rng.choices(FILLER, k=rng.randint(5, 15)) + rng.choices(cue, k=3)
    rng.shuffle(words)
    return " ".join(words).capitalize() + ".<br /><br />" + rng.choice(["Wow!", "Hmm, ok."])


def write_aclimdb(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """An aclImdb/ tree with balanced pos/neg reviews; returns the aclImdb folder."""
    rng = random.Random(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            label = i % 2
            folder = root / "aclImdb" / split / ("pos" if label else "neg")
            folder.mkdir(parents=True, exist_ok=True)
            rating = rng.randint(7, 10) if label else rng.randint(1, 4)
            (folder / f"{i}_{rating}.txt").write_text(review(label, rng))
    return root / "aclImdb"


# Three topics of texts, each with its own cue words among shared filler words.
TOPICS = {
    "sports": ["goal", "match", "team", "coach", "league", "score"],
    "cooking": ["recipe", "oven", "flour", "spices", "simmer", "dough"],
    "tech news": ["software", "chip", "startup", "laptop", "update", "cloud"],
}


def topic_texts(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (text, label) pairs cycling through ``TOPICS``: filler words with three cues,
    some punctuation, a comma and a quote (what a CSV writer must quote)."""
    rng = random.Random(seed)
    labels = list(TOPICS)
    out = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.choices(FILLER, k=rng.randint(4, 12)) + rng.choices(TOPICS[label], k=3)
        rng.shuffle(words)
        out.append(
            (" ".join(words).capitalize() + ', "really". ' + rng.choice(["Ok!", "Hm."]), label)
        )
    return out


def write_texts(folder: Path, n: int = 240, kind: str = "csv", seed: int = 0) -> Path:
    """Three topics of texts as ``folder``/texts.csv, .tsv or .jsonl (columns ``text``,
    ``label``), or (kind ``folder``) ``folder``/texts/<label>/<i>.txt; returns the path."""
    import csv
    import json

    rows = topic_texts(n, seed)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "folder":
        root = folder / "texts"
        for i, (text, label) in enumerate(rows):
            (root / label).mkdir(parents=True, exist_ok=True)
            (root / label / f"{i}.txt").write_text(text, encoding="utf-8")
        return root
    path = folder / f"texts.{kind}"
    with path.open("w", encoding="utf-8", newline="") as f:
        if kind == "jsonl":
            f.writelines(json.dumps({"text": t, "label": label}) + "\n" for t, label in rows)
        else:
            writer = csv.writer(f, delimiter="," if kind == "csv" else "\t")
            writer.writerow(["label", "text"])
            writer.writerows((label, t) for t, label in rows)
    return path


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: magic 0 0 8 ndim, big-endian dimensions, the data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 images whose class is a bright bar at a class-specific row, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 60, (n, 28, 28))
    for i, label in enumerate(labels):
        row = 2 + 2 * int(label)
        images[i, row : row + 3, 4:24] = 255
    return images.astype(np.uint8), labels.astype(np.uint8)


def write_kmnist(folder: Path, n_train: int = 600, n_test: int = 200, kind: str = "idx") -> Path:
    """The four KMNIST files (IDX .gz or .npz) of synthetic images in ``folder``."""
    from dlrun.tasks.kmnist import IDX_FILES, NPZ_FILES

    folder.mkdir(parents=True, exist_ok=True)
    train, test = synthetic_images(n_train, 0), synthetic_images(n_test, 1)
    names = list(IDX_FILES) if kind == "idx" else list(NPZ_FILES)
    for name, array in zip(names, (*train, *test), strict=True):
        if kind == "idx":
            (folder / name).write_bytes(gzip.compress(idx_bytes(array)))
        else:
            np.savez_compressed(folder / name, arr_0=array)
    return folder


WORDS = ["sol", "luna", "casa", "perro", "gato", "agua", "libro", "mesa", "rojo", "azul"]


def write_text_pairs(folder: Path, n: int = 400, seed: int = 0) -> Path:
    """``folder``/pairs.tsv in the ManyThings layout (source, target, attribution): the
    target is the source's words in reverse order, upper-cased, so a small model learns
    it quickly."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        words = rng.choices(WORDS, k=rng.randint(1, 3))
        target = " ".join(reversed(words)).upper()
        lines.append(f"{' '.join(words)}\t{target}\tCC-BY #{i}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def bar_image(label: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A noisy RGB image with a bright bar: vertical for class 0, horizontal for class 1."""
    w, h = size
    pixels = rng.integers(0, 70, (h, w, 3))
    if label == 0:
        pixels[:, w // 2 - w // 8 : w // 2 + w // 8] = (250, 240, 90)
    else:
        pixels[h // 2 - h // 8 : h // 2 + h // 8, :] = (90, 200, 250)
    return pixels.astype(np.uint8)


# (mode, extension) cycled through the files: every mode and format the images task reads.
IMAGE_KINDS = [("RGB", "png"), ("L", "jpg"), ("RGBA", "png"), ("P", "gif"), ("RGB", "bmp")]


def write_image_folder(root: Path, per_class: int = 30, seed: int = 0) -> Path:
    """Class folders 'horizontal' and 'vertical' of bar images in mixed sizes, modes and
    formats (PNG, JPEG, GIF, BMP; RGB, L, RGBA, P); returns ``root``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label, name in ((0, "vertical"), (1, "horizontal")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            mode, ext = IMAGE_KINDS[i % len(IMAGE_KINDS)]
            size = (int(rng.integers(18, 48)), int(rng.integers(18, 48)))
            img = Image.fromarray(bar_image(label, size, rng)).convert(mode)
            img.save(root / name / f"{name}_{i}.{ext}")
    return root


def write_points(folder: Path, n: int = 300, seed: int = 0) -> Path:
    """``folder``/points.csv like seed 004's (labels, feature1, feature2) plus a text
    column: three well-separated blobs, and a shape word that agrees with the label 70%
    of the time."""
    rng = random.Random(seed)
    centres = [(-1.0, -1.0), (1.0, -1.0), (0.0, 1.0)]
    shapes = ["round", "square", "flat"]
    lines = ["labels,feature1,feature2,shape"]
    for i in range(n):
        k = i % 3
        x, y = (c + rng.gauss(0, 0.25) for c in centres[k])
        shape = shapes[k] if rng.random() < 0.7 else "other"
        lines.append(f"{k},{x:.4f},{y:.4f},{shape}")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "points.csv"
    path.write_text("\n".join(lines) + "\n")
    return path
