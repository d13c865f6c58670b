"""Export KMNIST IDX files as an image folder for the images task's benchmark.

    python scripts/export_kmnist_png.py ../shared/data/kmnist_dev /tmp/kmnist_png

Every image of the four IDX files (training and test alike: the images task
makes its own split) becomes OUT/<class>/<n>.png, 3-channel RGB and resized
from 28x28 to --size (default 40) with bilinear filtering.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from dlrun.data.images import read_idx
from dlrun.tasks.kmnist import CLASSES, IDX_FILES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("idx_dir", type=Path, help="folder with the four KMNIST IDX .gz files")
    parser.add_argument("out", type=Path, help="folder to write class subfolders into")
    parser.add_argument("--size", type=int, default=40)
    args = parser.parse_args()
    names = list(IDX_FILES)
    n = 0
    for images_file, labels_file in ((names[0], names[1]), (names[2], names[3])):
        images, labels = read_idx(args.idx_dir / images_file), read_idx(args.idx_dir / labels_file)
        for image, label in zip(images, labels, strict=True):
            folder = args.out / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            img = Image.fromarray(image).convert("RGB")
            img.resize((args.size, args.size), Image.Resampling.BILINEAR).save(folder / f"{n}.png")
            n += 1
    print(f"{n} images in {len(CLASSES)} class folders under {args.out}")


if __name__ == "__main__":
    main()
