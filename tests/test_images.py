"""task=images: folders and annotations CSVs of mixed images, the cache, errors, training,
samples.png and predict."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, save_run_config
from PIL import Image

from dlrun.cli import predict, stats
from dlrun.data import image_files
from dlrun.engine.run import run
from dlrun.errors import UserError
from dlrun.plan.config import ConfigError, validate
from dlrun.tasks import images
from dlrun.testing.fake import bar_image, write_image_folder


def prepared(tiny_cfg, cache: Path, *overrides: str) -> images.ImagesTask:
    task = images.ImagesTask(validate(tiny_cfg("task=images", *overrides)))
    task.prepare(cache)
    return task


def test_mixed_sizes_modes_and_formats_become_one_tensor(tiny_cfg, corpora, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dlrun")
    files = sorted(p.suffix for p in corpora["images"].rglob("*.*"))
    assert set(files) == {".png", ".jpg", ".gif", ".bmp"}
    task = prepared(tiny_cfg, tmp_path, "dataset.image_size=null")
    assert task.classes == ("horizontal", "vertical")
    # Sizes 18..47: the median shorter side, within 16..64, logged in one line.
    assert 18 <= task.image_size <= 47 and f"images: {task.image_size}x" in caplog.text
    sizes = {split: task.size(split) for split in task.splits}
    assert sizes == {"train": 48, "val": 6, "test": 6}
    for split in task.splits:  # stratified: 3 of each class in val and test
        counts = torch.bincount(task.splits[split]["label"], minlength=2).tolist()
        assert counts == [sizes[split] // 2] * 2
        assert task.splits[split]["image"].shape[1:] == (task.image_size, task.image_size, 3)
        assert task.splits[split]["image"].dtype == torch.uint8
    assert len(task.mean) == 3 and all(0 < s < 1 for s in task.std.tolist())
    grey = prepared(tiny_cfg, tmp_path, "dataset.channels=1", "dataset.image_size=24")
    assert grey.splits["train"]["image"].shape[1:] == (24, 24, 1)
    # Every split is the same images whatever the channels: the split depends on the seed only.
    assert grey.names == task.names


def test_decode_converts_modes_and_transparency(tmp_path):
    rgba = np.zeros((10, 20, 4), dtype=np.uint8)
    rgba[..., :3] = 255
    rgba[:, :10, 3] = 255  # left half opaque white, right half transparent white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = image_files.decode_image(str(tmp_path / "a.png"), 8, 3)
    assert out.shape == (8, 8, 3) and out[:, 0].min() == 255 and out[:, -1].max() == 0
    Image.fromarray(np.full((5, 5), 128, np.uint8), "L").convert("P").save(tmp_path / "p.gif")
    assert image_files.decode_image(str(tmp_path / "p.gif"), 6, 1).shape == (6, 6, 1)


def test_stats_print_splits_class_counts_and_size(corpora, tmp_path, capsys):
    stats.main(["task=images", f"dataset.path={corpora['images']}", f"paths.cache_dir={tmp_path}"])
    out = capsys.readouterr().out
    assert "| split | examples | horizontal | vertical |" in out
    assert "| train | 48 | 24 | 24 |" in out and "| test | 6 | 3 | 3 |" in out
    assert re.search(r"image_size: \d+", out)


def test_annotations_csv_with_named_columns(tiny_cfg, tmp_path):
    folder = write_image_folder(tmp_path / "data", per_class=12)
    rows = [
        f"{p.relative_to(folder).as_posix()};{p.parent.name.upper()}"
        for p in sorted(folder.rglob("*.*"))
    ]
    csv = folder / "insects.csv"
    csv.write_text("\ufeffspecies_id;file;species\n" + "\n".join(f"1;{r}" for r in rows) + "\n")
    args = [f"dataset.path={folder}", "dataset.annotations=insects.csv"]  # found in the folder
    columns = ["dataset.filename_column=file", "dataset.label_column=species"]
    task = prepared(tiny_cfg, tmp_path / "c", *args, *columns)
    assert task.classes == ("HORIZONTAL", "VERTICAL")
    assert sum(task.size(s) for s in task.splits) == 24
    with pytest.raises(UserError, match=r"no column dataset.label_column=label; its columns are "):
        prepared(tiny_cfg, tmp_path / "c", *args, "dataset.filename_column=file")
    csv.write_text("filename,label\nhorizontal/horizontal_0.png,a\nnope.png,b\n")
    with pytest.raises(UserError, match=r"insects.csv, line 3: nope.png does not exist"):
        prepared(tiny_cfg, tmp_path / "c", *args)
    with pytest.raises(ConfigError, match="dataset.annotations=missing.csv: no such file"):
        validate(tiny_cfg("task=images", args[0], "dataset.annotations=missing.csv"))


@pytest.fixture
def folder_with_bad_file(tmp_path) -> Path:
    folder = write_image_folder(tmp_path / "bad", per_class=15)
    (folder / "vertical" / "broken\x1b.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return folder


def test_unreadable_image_is_one_line_or_skipped(tiny_cfg, folder_with_bad_file, tmp_path, caplog):
    args = [f"dataset.path={folder_with_bad_file}"]
    with pytest.raises(UserError) as info:
        prepared(tiny_cfg, tmp_path / "c", *args)
    message = str(info.value)
    assert "broken\\x1b.png: not a readable image" in message and "dataset.skip_bad=true" in message
    assert "\n" not in message and "\x1b" not in message
    task = prepared(tiny_cfg, tmp_path / "c", *args, "dataset.skip_bad=true")
    assert sum(task.size(s) for s in task.splits) == 30
    assert "skipped 1 unreadable images" in caplog.text


def test_cache_is_written_a_chunk_at_a_time_and_split_into_mapped_files(
    tiny_cfg, folder_with_bad_file, tmp_path, monkeypatch
):
    """The cache's images are raw rows written as each chunk is decoded (a bad file in
    a chunk left out), and each split is its own memory-mapped file: the rows, labels and
    training statistics equal those of the whole set decoded in memory."""
    monkeypatch.setattr(image_files, "CHUNK", 4)
    written = []
    real = image_files.decode_chunks

    def decode_chunks(*args):  # the cache file grows chunk by chunk, as they come
        for chunk in real(*args):
            written.append(sum(p.stat().st_size for p in (tmp_path / "c").rglob("images.u8")))
            yield chunk

    monkeypatch.setattr(image_files, "decode_chunks", decode_chunks)
    task = prepared(
        tiny_cfg, tmp_path / "c", f"dataset.path={folder_with_bad_file}", "dataset.skip_bad=true"
    )
    row = 3 * task.image_size**2
    # Before the last chunk comes, earlier ones are on disk (less Python's write buffer).
    assert len(written) == 8 and written == sorted(written) and 0 < written[-1] < 30 * row
    (cache,) = (tmp_path / "c").rglob("images.u8")
    assert cache.stat().st_size == 30 * row  # 31 files, one unreadable
    files, labels = [], []
    for k, c in enumerate(task.classes):
        names = sorted(p.name for p in (folder_with_bad_file / c).iterdir())
        files += [str(folder_with_bad_file / c / n) for n in names if "broken" not in n]
        labels += [k] * (len(names) - ("broken" in "".join(names)))
    whole, bad = image_files.decode_all(files, task.image_size, 3, workers=1)
    assert bad == [] and len(whole) == 30
    names = [str(folder_with_bad_file / n) for s in task.splits for n in task.names[s]]
    for split, data in task.splits.items():
        rows = [files.index(str(folder_with_bad_file / n)) for n in task.names[split]]
        assert np.array_equal(data["image"].numpy(), whole[rows])
        assert data["label"].tolist() == [labels[r] for r in rows]
    assert sorted(names) == sorted(files)
    mean, std = image_files.channel_stats(task.splits["train"]["image"])
    assert torch.equal(task.mean, mean) and torch.equal(task.std, std)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: (root / "empty").mkdir(), r"class folder 'empty' has no images"),
        (lambda root: shutil.rmtree(root / "vertical"), r"only one class \('horizontal'\)"),
        (
            lambda root: [shutil.rmtree(root / c) for c in ("vertical", "horizontal")],
            "no class subfolders",
        ),
    ],
)
def test_folder_mistakes_are_one_line(tmp_path, capsys, make, message):
    root = write_image_folder(tmp_path / "d", per_class=3)
    make(root)
    with pytest.raises(SystemExit) as info:
        stats.main(["task=images", f"dataset.path={root}", f"paths.cache_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and re.search(message, err)
    assert err.count("\n") == 1 and err.startswith("dlrun-stats: error: ")


def test_too_few_images_and_too_small_size_are_clear(tiny_cfg, tmp_path):
    root = write_image_folder(tmp_path / "few", per_class=2)
    with pytest.raises(UserError, match="too few to split"):
        prepared(tiny_cfg, tmp_path / "c", f"dataset.path={root}")
    with pytest.raises(ConfigError, match="model kmnist_cnn needs images of at least 8x8"):
        validate(tiny_cfg("task=images", "model=kmnist_cnn", "dataset.image_size=6"))
    assert validate(tiny_cfg("task=images", "model=resnet", "dataset.image_size=6"))


def test_cache_is_reused_and_rebuilt_when_damaged_or_files_change(
    tiny_cfg, tmp_path, monkeypatch, caplog
):
    root = write_image_folder(tmp_path / "d", per_class=10)
    decoded = []
    real = image_files.decode_chunks
    monkeypatch.setattr(image_files, "decode_chunks", lambda *a: decoded.append(1) or real(*a))
    first = prepared(tiny_cfg, tmp_path / "c", f"dataset.path={root}")
    again = prepared(tiny_cfg, tmp_path / "c", f"dataset.path={root}", "dataset.shift=0")
    assert len(decoded) == 1  # augmentation settings are not part of the key
    assert torch.equal(first.splits["train"]["image"], again.splits["train"]["image"])
    (data,) = (tmp_path / "c").rglob("data.pt")
    data.write_bytes(data.read_bytes()[:300])
    rebuilt = prepared(tiny_cfg, tmp_path / "c", f"dataset.path={root}")
    assert len(decoded) == 2 and "rebuilding it" in caplog.text
    assert torch.equal(first.splits["test"]["image"], rebuilt.splits["test"]["image"])
    # A file replaced with different content (size and time change): decoded again.
    Image.fromarray(bar_image(1, (30, 30), np.random.default_rng(5))).save(
        root / "vertical" / "vertical_0.png"
    )
    prepared(tiny_cfg, tmp_path / "c", f"dataset.path={root}")
    assert len(decoded) == 3


def test_worker_processes_decode_the_same_tensor(monkeypatch, corpora):
    files = [str(p) for p in sorted(corpora["images"].rglob("*.*"))]
    alone, bad = image_files.decode_all(files, 20, 3, workers=1)
    monkeypatch.setattr(image_files, "POOL_AFTER_S", 0)
    monkeypatch.setattr(image_files, "CHUNK", 16)
    pooled, bad_pooled = image_files.decode_all(files, 20, 3, workers=2)
    assert bad == bad_pooled == [] and np.array_equal(alone, pooled) and len(alone) == 60


def test_shift_and_flip_move_training_images_only(tiny_cfg, tmp_path):
    task = prepared(tiny_cfg, tmp_path, "dataset.shift=0", "dataset.flip=true")
    idx = torch.arange(16)
    torch.manual_seed(0)
    flipped = task.batch("train", idx)["image"]
    stored = task.splits["train"]["image"][:16]
    same = [torch.equal(a, b) for a, b in zip(flipped, stored)]
    mirrored = [torch.equal(a, b.flip(1)) for a, b in zip(flipped, stored)]
    assert all(s or m for s, m in zip(same, mirrored)) and 0 < sum(same) < 16
    assert torch.equal(task.batch("val", torch.arange(6))["image"], task.splits["val"]["image"])
    moved = prepared(tiny_cfg, tmp_path, "dataset.shift=3").batch("train", idx)["image"]
    assert moved.shape == stored.shape and not torch.equal(moved, stored)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cache_dir):
    """A short run on the two bar classes, with its .hydra config, made once."""
    from conftest import make_cfg

    run_dir = tmp_path_factory.mktemp("images_run")
    cfg = make_cfg(
        cache_dir,
        "task=images",
        "trainer.max_steps=40",
        "trainer.eval_every=20",
        "model=kmnist_cnn",
    )
    result = run(cfg, run_dir)
    save_run_config(cfg, run_dir)
    return run_dir, result


def test_short_run_learns_and_writes_samples_png(trained):
    run_dir, result = trained
    assert result["test/accuracy"] >= 5 / 6
    assert json.loads((run_dir / "classes.json").read_text()) == ["horizontal", "vertical"]
    per_class = json.loads((run_dir / "per_class.json").read_text())["test"]
    assert list(per_class["per_class_accuracy"]) == ["horizontal", "vertical"]
    with Image.open(run_dir / "samples.png") as img:
        img.load()
        assert img.size[0] > 300 and img.size[1] > 100
    assert (run_dir / "confusion_test.png").read_bytes()[:4] == b"\x89PNG"
    lines = (run_dir / "samples.txt").read_text()
    assert re.search(r"(horizontal|vertical)/\w+\.(png|jpg|gif|bmp)", lines)


def test_predict_one_and_several_files(trained, tmp_path, cache_dir, capsys):
    run_dir, _ = trained
    rng = np.random.default_rng(11)
    files = []
    for i, label in enumerate([0, 1, 1, 0, 1, 0]):
        files.append(tmp_path / f"x {i}.jpg" if i % 2 else tmp_path / f"x{i}.png")
        Image.fromarray(bar_image(label, (36, 28), rng)).save(files[-1])
    truth = ["vertical", "horizontal", "horizontal", "vertical", "horizontal", "vertical"]
    capsys.readouterr()  # what making the run printed
    predict.main([str(run_dir), str(files[0])])
    name, label, p = capsys.readouterr().out.strip().split("\t")
    assert name == str(files[0])
    assert label in ("horizontal", "vertical") and 0.5 <= float(p) <= 1
    done = run_cli(
        ["dlrun-predict", str(run_dir)],
        tmp_path,
        cache_dir,
        stdin="".join(f"{f}\n" for f in files) + "\n",
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert [r[0] for r in rows] == [str(f) for f in files]
    assert sum(r[1] == t for r, t in zip(rows, truth)) >= 5
    with pytest.raises(SystemExit) as info:
        predict.main([str(run_dir), str(files[0]), str(tmp_path / "missing.png")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "missing.png: not a readable image" in err
    assert err.count("\n") == 1


def test_damaged_normalization_file_is_one_line(trained, tmp_path):
    run_dir, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "normalization.json").write_text('{"mean": [0.5], "std": [1, 2, 3], "image_size": 16}')
    with pytest.raises(UserError, match="expected 'mean' and 'std' \\(3 numbers each\\)"):
        predict.load_run(copy)
