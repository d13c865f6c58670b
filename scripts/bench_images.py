"""Decode-and-cache throughput of task=images on an image folder.

    python scripts/bench_images.py DIR [key=value ...]

Prepares the data twice in a fresh cache folder: cold (list, decode in
worker processes, write the cache, split) and warm (read the cache, split),
and prints images per second for each.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from dlrun.plan.config import conf_dir, validate
from dlrun.tasks.images import ImagesTask


def main() -> None:
    folder, overrides = sys.argv[1], sys.argv[2:]
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["task=images", f"dataset.path={folder}", *overrides])
    data = validate(cfg)
    with tempfile.TemporaryDirectory() as cache:
        for kind in ("cold", "warm"):
            task = ImagesTask(data)
            start = time.perf_counter()
            task.prepare(Path(cache))
            seconds = time.perf_counter() - start
            n = sum(task.size(s) for s in task.splits)
            print(
                f"{kind}: {n} images {task.image_size}x{task.image_size}x"
                f"{data['dataset']['channels']} in {seconds:.2f} s = {n / seconds:,.0f} images/s"
            )


if __name__ == "__main__":
    main()
