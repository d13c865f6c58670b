"""Kuzushiji-MNIST: 28x28 grey images of ten cursive hiragana (seed 002, section 2).

The official files (IDX ``.gz`` as torchvision lays them out in
``KMNIST/raw/``, or the ``kmnist-*.npz`` arrays) are read from
``dataset.path``; ``dataset.download=true`` fetches the IDX files there. Every
split is one uint8 tensor on the device; scaling, normalization and the
optional random shifts run on the device per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlrun.data.download import download
from dlrun.data.image_files import ImageTooLarge, open_image, why_unreadable
from dlrun.data.images import read_idx, read_npz
from dlrun.errors import UserError, printable
from dlrun.models import build_model
from dlrun.plan.config import RunConfig
from dlrun.plan.schema import Named, spec
from dlrun.registry import TASKS
from dlrun.rundir.layout import RunDir
from dlrun.rundir.read import read_json
from dlrun.rundir.write import write_json
from dlrun.tasks.base import held_out_count, split_problems
from dlrun.tasks.classify import ClassificationTask

MIRROR = "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"
# (train images, train labels, test images, test labels) with their md5.
IDX_FILES = {
    "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
    "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
    "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
    "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
}
NPZ_FILES = (
    "kmnist-train-imgs.npz",
    "kmnist-train-labels.npz",
    "kmnist-test-imgs.npz",
    "kmnist-test-labels.npz",
)
CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")


@dataclass(frozen=True)
class KmnistDataConfig(Named):
    path: str = spec()  # folder with the four IDX .gz or the four .npz files
    download: bool = spec()  # fetch the IDX files from the official mirror if missing
    val_fraction: float = spec(gt=0, lt=1)  # of the training images, held out (seeded)
    seed: int = spec(ge=0)
    shift: int = spec(ge=0, le=8)  # training only: random translation by up to this many px
    batch_size: int = spec(ge=1)


def find_files(folder: Path) -> tuple[list[Path], str] | None:
    """The four files of one complete layout in ``folder`` (IDX preferred), or None."""
    for names, kind in ((list(IDX_FILES), "idx"), (list(NPZ_FILES), "npz")):
        paths = [folder / n for n in names]
        if all(p.is_file() for p in paths):
            return paths, kind
    return None


def read_kmnist(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train": (images, labels), "test": (images, labels)} with uint8 (N, 28, 28) images."""
    found = find_files(folder)
    if found is None:
        raise UserError(missing_message(folder))
    paths, kind = found
    read = read_idx if kind == "idx" else read_npz
    arrays = [read(p) for p in paths]
    out = {}
    for split, (images, labels) in zip(("train", "test"), (arrays[:2], arrays[2:]), strict=True):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(
                f"{folder}: {split} images {images.shape} and labels {labels.shape} do not match"
            )
        if images.shape[1:] != (28, 28):
            h, w = images.shape[1:]
            raise UserError(f"{folder}: {split} images are {h}x{w}; KMNIST images are 28x28")
        if labels.size and (labels.max() >= len(CLASSES) or labels.min() < 0):
            raise UserError(
                f"{folder}: {split} labels run from {labels.min()} to {labels.max()}, outside "
                f"0..{len(CLASSES) - 1} (KMNIST has {len(CLASSES)} classes)"
            )
        out[split] = (images, labels.astype(np.int64))
    return out


def missing_message(folder: Path) -> str:
    return (
        f"KMNIST not found in {folder}: expected {', '.join(IDX_FILES)} (or the four "
        f"kmnist-*.npz files); add dataset.download=true to fetch them there, or set "
        "dataset.path (or paths.data_dir / DLRUN_DATA_DIR) to where they are"
    )


# Convolutions and pooling run faster in NHWC on these (BENCHMARKS.md, harness runs).
CHANNELS_LAST = ("cuda", "cpu")


@TASKS.register("kmnist", schema=KmnistDataConfig)
class KmnistTask(ClassificationTask):
    model_kind = "image"
    inputs_are_paths = True  # dlrun-predict RUN a.png b.png
    classes = CLASSES

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.mean, self.std = 0.0, 1.0  # of the training pixels in [0, 1]
        self.device = torch.device("cpu")

    @classmethod
    def check_config(cls, cfg: RunConfig) -> list[str]:
        return super().check_config(cfg) + split_problems(cfg.dataset, "training images")

    @classmethod
    def check_data(cls, cfg: RunConfig) -> list[str]:
        d = cfg.dataset
        if not d.download and find_files(Path(d.path).expanduser()) is None:
            return [missing_message(Path(d.path))]
        return []

    # -- data ------------------------------------------------------------------------
    def prepare(self, cache_dir: Path) -> None:
        d = self.cfg.dataset
        folder = Path(d.path).expanduser()
        if d.download and find_files(folder) is None:
            for name, md5 in IDX_FILES.items():
                download(MIRROR + name, folder / name, md5)
        data = read_kmnist(folder)
        images, labels = map(torch.from_numpy, data["train"])
        n_val = held_out_count(len(images), d.val_fraction)
        if n_val >= len(images):
            raise UserError(
                f"dataset.val_fraction={d.val_fraction:g}: leaves none of the {len(images)} "
                "training images to train on; add images or lower dataset.val_fraction"
            )
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(d.seed))
        val, train = order[:n_val], order[n_val:]
        self.splits = {
            "train": {"image": images[train], "label": labels[train]},
            "val": {"image": images[val], "label": labels[val]},
            "test": dict(zip(("image", "label"), map(torch.from_numpy, data["test"]))),
        }
        pixels = self.splits["train"]["image"].float() / 255
        self.mean, self.std = pixels.mean().item(), pixels.std().item()

    def stats(self) -> dict[str, Any]:
        out = {}
        for name, split in self.splits.items():
            counts = torch.bincount(split["label"], minlength=len(CLASSES))
            out[name] = {
                "examples": len(split["label"]),
                "smallest_class": int(counts.min()),
                "largest_class": int(counts.max()),
                "pixel_mean": split["image"].float().mean().item() / 255,
            }
        return out

    def save(self, run: RunDir) -> None:
        write_json(run.file("normalization.json"), {"mean": self.mean, "std": self.std}, None)

    def load(self, run: RunDir) -> None:
        path = run.file("normalization.json")
        norm = read_json(path)
        if not all(isinstance(norm.get(k), (int, float)) for k in ("mean", "std")):
            raise UserError(f"{path}: expected numbers 'mean' and 'std'")
        self.mean, self.std = norm["mean"], norm["std"]

    def to(self, device: torch.device) -> None:
        super().to(device)
        self.device = device

    def batch(self, split: str, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = super().batch(split, idx)
        shift = self.cfg.dataset.shift
        if split == "train" and shift:
            batch["image"] = random_shift(batch["image"], shift)
        return batch

    def describe(self, split: str, i: int) -> str:
        return f"{split} image #{i}"

    # -- model --------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        model = build_model(self.cfg.model, channels=1, classes=len(CLASSES), image_size=28)
        if self.device.type in CHANNELS_LAST:
            # Module.to takes memory_format; torch's overloads leave it out.
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return model

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W) -> normalized float (B, 1, H, W), channels_last on CUDA and CPU."""
        x = (images.unsqueeze(1).float() / 255 - self.mean) / self.std
        if x.device.type in CHANNELS_LAST:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(self.inputs(batch["image"]))

    def report(self, model: nn.Module, run: RunDir) -> None:
        from dlrun.engine.plots import plot_activation_maps

        super().report(model, run)
        # Gathered onto the model's device: streamed images stay on the host.
        image = self.gather(self.splits["train"]["image"], torch.zeros(1, dtype=torch.long))
        # A CNN's own method (torch types nn.Module's attributes as tensors or modules).
        activations = model.first_activations(self.inputs(image))  # type: ignore[operator]
        maps = activations[0].float().cpu()
        label = CLASSES[int(self.splits["train"]["label"][0])]
        plot_activation_maps(
            image[0].cpu(),
            maps,
            run.file("activations.png"),
            f"first convolution's activation maps, training image 0 (class {label})",
        )

    def encode(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        """Image files as 28x28 grey uint8 (resized if needed; KMNIST is white on black)."""
        from PIL import Image, UnidentifiedImageError

        images = []
        for name in inputs:
            try:
                with open_image(name) as img:
                    grey = img.convert("L")
                    if grey.size != (28, 28):
                        grey = grey.resize((28, 28), Image.Resampling.BILINEAR)
                    images.append(np.asarray(grey, dtype=np.uint8))
            except (OSError, UnidentifiedImageError, ImageTooLarge) as exc:
                raise UserError(
                    f"{printable(name)}: not a readable image ({why_unreadable(exc)})"
                ) from None
        return {"image": torch.from_numpy(np.stack(images))}


def random_shift(images: torch.Tensor, shift: int) -> torch.Tensor:
    """Each image of (B, H, W) or (B, H, W, C) translated by its own random (dy, dx) in
    [-shift, shift], zero-filled."""
    b, h, w = images.shape[:3]
    padded = F.pad(images, (0, 0) * (images.dim() - 3) + (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (b, 1, 1), device=images.device)
    dx = torch.randint(0, 2 * shift + 1, (b, 1, 1), device=images.device)
    rows = dy + torch.arange(h, device=images.device).view(1, h, 1)
    cols = dx + torch.arange(w, device=images.device).view(1, 1, w)
    return padded[torch.arange(b, device=images.device).view(b, 1, 1), rows, cols]
