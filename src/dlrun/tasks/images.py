"""Your own images: a folder with one subfolder per class, or a folder and an annotations CSV.

PNG, JPEG, BMP and GIF files of any size and mode are read with Pillow,
converted to ``dataset.channels`` (1 or 3; transparency composited on black),
resized to ``dataset.image_size`` square (default: chosen from the data and
logged) and decoded once, in parallel worker processes, into one file of uint8
rows (N, H, W, C) cached under ``paths.cache_dir`` and keyed by the data config and
the file list (names, sizes, modification times), so epochs never touch the
files. Decoding writes a chunk at a time and the splits are memory-mapped files,
so a folder larger than RAM is prepared (and streamed, ``device.data``) in bounded
memory. A seeded split stratified by class gives train/val/test; normalization
(per-channel training mean and std) and augmentation (random shifts, flips)
run on the device per batch.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlrun.data.cache import cache_key, cached
from dlrun.data.image_files import (
    AUTO_SIZE,
    ChannelStats,
    RowFile,
    annotations_file,
    decode_image,
    gather_rows,
    list_annotations,
    list_folder,
    load_cache,
    stratified_split,
    why_unreadable,
    write_cache,
)
from dlrun.errors import UserError, printable
from dlrun.models import build_model
from dlrun.plan.config import RunConfig
from dlrun.plan.schema import Named, spec
from dlrun.registry import TASKS, model_entry
from dlrun.rundir.layout import RunDir
from dlrun.rundir.read import read_json
from dlrun.rundir.write import write_json
from dlrun.tasks.base import path_problems, split_problems
from dlrun.tasks.classify import ClassificationTask
from dlrun.tasks.kmnist import CHANNELS_LAST, random_shift

log = logging.getLogger("dlrun")

PREP_VERSION = 2  # 2: images as raw rows (images.u8), memory-mapped
SAMPLES_SHOWN = 32  # images in samples.png


@dataclass(frozen=True)
class ImagesDataConfig(Named):
    path: str = spec()  # one subfolder per class, or the images of `annotations`
    annotations: str | None = spec()  # CSV of file names (relative to path) and labels
    filename_column: str = spec()
    label_column: str = spec()
    channels: int = spec(choices=[1, 3])
    image_size: int | None = spec(ge=4, le=1024)  # square side; null = from the data
    val_fraction: float = spec(gt=0, lt=1)
    test_fraction: float = spec(gt=0, lt=1)
    seed: int = spec(ge=0)
    shift: int = spec(ge=0, le=32)  # training only: random translation by up to this many px
    flip: bool = spec()  # training only: random horizontal flips
    skip_bad: bool = spec()  # skip unreadable images (counted in the log) instead of failing
    workers: int | None = spec(ge=1)  # decoding processes; null = every core
    batch_size: int = spec(ge=1)


# Options that change how the cached tensor is used, not the tensor: not in the cache key.
NOT_CACHED = (
    "batch_size",
    "val_fraction",
    "test_fraction",
    "seed",
    "shift",
    "flip",
    "workers",
)


# -- the task -----------------------------------------------------------------------------


def min_image_size(model_cfg: Any) -> int:
    """The smallest image side the configured model accepts."""
    entry = model_entry(model_cfg.name)
    limit = getattr(entry.obj, "min_image_size", 1)
    return limit(model_cfg) if callable(limit) else limit


@TASKS.register("images", schema=ImagesDataConfig)
class ImagesTask(ClassificationTask):
    model_kind = "image"
    inputs_are_paths = True  # dlrun-predict RUN a.png b.png
    fold_rows = ("names",)

    def __init__(self, cfg: RunConfig):
        super().__init__(cfg)
        self.classes: tuple[str, ...] = ()
        self.names: dict[str, list[str]] = {}  # each split's file names, for samples
        self._row_files: dict[int, RowFile] = {}  # by the address of a split's mapped images
        self.image_size = cfg.dataset.image_size
        self.mean = torch.zeros(cfg.dataset.channels)
        self.std = torch.ones(cfg.dataset.channels)

    @classmethod
    def check_config(cls, cfg: RunConfig) -> list[str]:
        problems = super().check_config(cfg)
        d = cfg.dataset
        least = min_image_size(cfg.model)
        if d.image_size is not None and d.image_size < least:
            problems.append(
                f"dataset.image_size={d.image_size}: model {cfg.model.name} needs "
                f"images of at least {least}x{least}; raise it or choose model=resnet"
            )
        return problems + split_problems(d, "images")

    @classmethod
    def check_data(cls, cfg: RunConfig) -> list[str]:
        d = cfg.dataset
        fix = (
            "give a folder with one subfolder of images per class (or the images of "
            "dataset.annotations=FILE.csv)"
        )
        if problems := path_problems("dataset.path", d.path, "folder", fix):
            return problems
        if d.annotations is not None and not annotations_file(d).is_file():
            return [
                f"dataset.annotations={printable(d.annotations)}: no such file (looked "
                f"here and in dataset.path); give the CSV of file names and labels"
            ]
        return []

    # -- data ------------------------------------------------------------------------
    def prepare(self, cache_dir: Path) -> None:
        d = self.cfg.dataset
        root = Path(d.path).expanduser().resolve()
        if d.annotations is None:
            classes, names, labels = list_folder(root)
        else:
            classes, names, labels = list_annotations(root, annotations_file(d), d)
        if len(classes) < 2:
            where = "dataset.path" if d.annotations is None else "dataset.annotations"
            raise UserError(
                f"{where}: only one class ('{printable(classes[0])}'); a classifier needs at "
                "least two classes of images"
            )
        listing = hashlib.sha256()
        for name in names:
            st = (root / name).stat()
            listing.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        key = {k: v for k, v in asdict(d).items() if k not in NOT_CACHED}
        key.update(path=str(root), classes=classes, labels=labels, files=listing.hexdigest())
        data, _ = cached(
            Path(cache_dir).expanduser() / "images",
            cache_key(key, PREP_VERSION),
            lambda tmp: write_cache(tmp, root, names, labels, d),
            load_cache,
        )
        meta = data["meta"]
        self.classes, self.image_size = tuple(classes), meta["image_size"]
        if meta["chosen_from"]:
            log.info(
                "images: %dx%d, the median shorter side of %d images clipped to %d..%d "
                "(dataset.image_size=N sets it)",
                self.image_size,
                self.image_size,
                meta["chosen_from"],
                *AUTO_SIZE,
            )
        if meta["skipped"]:
            log.warning(
                "images: skipped %d unreadable images (dataset.skip_bad=true), e.g. %s",
                len(meta["skipped"]),
                meta["skipped"][0],
            )
        least = min_image_size(self.cfg.model)
        if self.image_size < least:
            raise UserError(
                f"images are {self.image_size}x{self.image_size} and model "
                f"{self.cfg.model.name} needs at least {least}x{least}; set "
                f"dataset.image_size={least} or more"
            )
        self._split(data["images_file"], data["image"].shape, data["label"], meta["names"])

    def _split(
        self, images: Path, shape: tuple[int, ...], labels: torch.Tensor, names: list[str]
    ) -> None:
        """Train/val/test of the cached images (file ``images``, rows of ``shape[1:]``):
        each split's rows copied a chunk at a time into a memory-mapped file of its own, so
        a set larger than RAM is split (and streamed, ``device.data``) in bounded memory;
        the training statistics are added up on the way."""
        d = self.cfg.dataset
        parts = stratified_split(labels.numpy(), d.val_fraction, d.test_fraction, d.seed)
        if len(set(labels[parts["train"]].tolist())) < 2 or not all(map(len, parts.values())):
            raise UserError(
                f"dataset.path: {len(labels)} images are too few to split into train, val and "
                "test with two classes left for training; add images or raise "
                "dataset.val_fraction / dataset.test_fraction"
            )
        folder = Path(self.cfg.paths.cache_dir).expanduser() / "stream"
        stats = ChannelStats(shape[-1])
        for split, rows in parts.items():
            out = folder / f"{split}.{os.getpid()}.{id(self)}.u8"
            add = stats.add if split == "train" else None
            row_file = gather_rows(images, shape, rows, out, add)
            self._row_files[row_file.tensor.data_ptr()] = row_file
            self.splits[split] = {
                "image": row_file.tensor,
                "label": labels[torch.from_numpy(rows)],
            }
            self.names[split] = [names[i] for i in rows]
        self.mean, self.std = stats.result()
        self.host_mapped = True  # streamed as they are: no second copy (``TaskData.to``)

    def _columns(self) -> list[str]:
        return [c if c != "examples" else "examples (class)" for c in self.classes]

    def stats(self) -> dict[str, Any]:
        k = len(self.classes)
        out: dict[str, Any] = {
            split: {
                "examples": len(s["label"]),
                **dict(zip(self._columns(), torch.bincount(s["label"], minlength=k).tolist())),
            }
            for split, s in self.splits.items()
            if split != "train_subset"
        }
        return {**out, "image_size": self.image_size, "channels": self.cfg.dataset.channels}

    def save(self, run: RunDir) -> None:
        write_json(run.file("classes.json"), list(self.classes), indent=None)
        norm = {"mean": self.mean.tolist(), "std": self.std.tolist(), "image_size": self.image_size}
        write_json(run.file("normalization.json"), norm, indent=None)

    def load(self, run: RunDir) -> None:
        classes = read_json(run.file("classes.json"), list)
        if len(classes) < 2 or not all(isinstance(c, str) for c in classes):
            raise UserError(f"{run.file('classes.json')}: expected a list of class names")
        path = run.file("normalization.json")
        norm = read_json(path)
        c = self.cfg.dataset.channels
        size = norm.get("image_size")
        stats = [norm.get("mean"), norm.get("std")]
        if not (
            isinstance(size, int)
            and size >= 1
            and all(isinstance(s, list) and len(s) == c for s in stats)
            and all(isinstance(v, (int, float)) and v == v for s in stats for v in s)
        ):
            raise UserError(
                f"{path}: expected 'mean' and 'std' ({c} numbers each) and 'image_size'"
            )
        self.classes, self.image_size = tuple(classes), size
        self.mean, self.std = torch.tensor(stats[0]), torch.tensor(stats[1])

    def to(self, device: torch.device) -> None:
        super().to(device)
        if not self.streamed and self.device.type == "cpu":
            self._into_ram()
        self.mean, self.std = self.mean.to(device), self.std.to(device)

    def host_rows(self, tensor: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Streamed images are read from their split's file with pread: rows mapped from it
        would stay resident (the kernel maps neighbouring pages on each fault), so memory
        would grow with the data read, not the batch."""
        row_file = self._row_files.get(tensor.untyped_storage().data_ptr())
        if row_file is None:
            return super().host_rows(tensor, idx)
        return row_file.read(idx.numpy() + tensor.storage_offset() // row_file.row_bytes)

    def _into_ram(self) -> None:
        """Data kept in memory (``device.data``) on the CPU: the memory-mapped split images
        read into RAM once, one file at a time (views such as ``train_subset`` stay views)."""
        copies: dict[int, torch.UntypedStorage] = {}
        for split in self.splits.values():
            image = split["image"]
            storage = image.untyped_storage()
            if storage.data_ptr() not in copies:
                copies[storage.data_ptr()] = storage.clone()
            split["image"] = torch.empty(0, dtype=image.dtype).set_(
                copies[storage.data_ptr()], image.storage_offset(), image.shape, image.stride()
            )

    def batch(self, split: str, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = super().batch(split, idx)
        d = self.cfg.dataset
        if split == "train":
            if d.shift:
                batch["image"] = random_shift(batch["image"], d.shift)
            if d.flip:
                images = batch["image"]
                flip = torch.rand(len(images), device=images.device) < 0.5
                batch["image"] = torch.where(flip.view(-1, 1, 1, 1), images.flip(2), images)
        return batch

    def describe(self, split: str, i: int) -> str:
        names = self.names.get(split)
        return printable(names[i], 120) if names else f"{split} image #{i}"

    # -- model --------------------------------------------------------------------------
    def vocabularies(self) -> dict[str, list[str]]:
        return {"classes": list(self.classes)}

    def build_model(self) -> nn.Module:
        model = build_model(
            self.cfg.model,
            channels=self.cfg.dataset.channels,
            classes=len(self.classes),
            image_size=self.image_size,
        )
        if self.mean.device.type in CHANNELS_LAST:
            # Module.to takes memory_format; torch's overloads leave it out.
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return model

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, C) -> normalized float (B, C, H, W), channels_last in memory."""
        x = images.permute(0, 3, 1, 2).float() / 255
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    def logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(self.inputs(batch["image"]))

    def report(self, model: nn.Module, run: RunDir) -> None:
        from dlrun.engine.plots import plot_image_grid

        super().report(model, run)
        pred = self._predictions(model, "test")
        label = self.splits["test"]["label"]
        order = torch.argsort((pred == label).int(), stable=True)[:SAMPLES_SHOWN].cpu()
        plot_image_grid(
            self.gather(self.splits["test"]["image"], order).cpu(),
            [
                (self.classes[t], self.classes[p])
                for t, p in zip(label.cpu()[order].tolist(), pred.cpu()[order].tolist())
            ],
            run.file("samples.png"),
            f"test images, errors first ({int((pred != label).sum())} of {len(label)} wrong)",
        )

    def encode(self, inputs: list[str]) -> dict[str, torch.Tensor]:
        """Image files decoded as in training (mode, size)."""
        c = self.cfg.dataset.channels
        images = np.zeros((len(inputs), self.image_size, self.image_size, c), dtype=np.uint8)
        for i, name in enumerate(inputs):
            try:
                images[i] = decode_image(name, self.image_size, c)
            except Exception as exc:  # a missing or damaged file
                raise UserError(
                    f"{printable(name)}: not a readable image ({why_unreadable(exc)})"
                ) from None
        return {"image": torch.from_numpy(images)}
