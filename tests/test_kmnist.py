"""KMNIST: IDX/npz readers, download, device-side shifts, the two models, a short run."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from conftest import model_cfg, save_run_config

from dlrun.data.download import md5sum
from dlrun.data.images import read_idx, read_npz
from dlrun.engine.run import run
from dlrun.errors import UserError
from dlrun.models import build_model
from dlrun.plan.config import ConfigError, validate
from dlrun.rundir.read import read_jsonl
from dlrun.tasks import kmnist
from dlrun.testing.fake import idx_bytes, synthetic_images, write_kmnist


def test_idx_and_npz_files_read_the_same_arrays(tmp_path):
    from_idx = kmnist.read_kmnist(write_kmnist(tmp_path / "idx", 50, 20, kind="idx"))
    from_npz = kmnist.read_kmnist(write_kmnist(tmp_path / "npz", 50, 20, kind="npz"))
    images, labels = synthetic_images(50, 0)
    for data in (from_idx, from_npz):
        assert np.array_equal(data["train"][0], images)
        assert np.array_equal(data["train"][1], labels)
        assert data["test"][0].shape == (20, 28, 28) and data["test"][1].dtype == np.int64


def test_idx_header_gives_the_shape(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(array))
    assert np.array_equal(read_idx(tmp_path / "a.idx"), array)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (gzip.compress(idx_bytes(np.zeros((4, 28, 28))))[:-30], "corrupt or truncated"),
        (gzip.compress(idx_bytes(np.zeros((4, 28, 28)))[:-5]), "bytes where the header promises"),
        (gzip.compress(b"\x00\x00\x0d\x03" + bytes(12)), "not an unsigned-byte IDX file"),
        (b"not gzip at all", "corrupt or truncated"),
        # 255 dimensions of 2^32 - 1 (found by the fuzz test): a short message all the same
        (gzip.compress(b"\x00\x00\x08\xff" + b"\xff" * 1020), r"255 dimensions, shape \("),
    ],
)
def test_corrupt_idx_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as info:
        read_idx(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_corrupt_npz_is_a_clear_error(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04broken")
    with pytest.raises(UserError, match="not a readable .npz file"):
        read_npz(tmp_path / "x.npz")


def test_missing_files_name_the_directory_files_and_command(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError) as info:
        validate(tiny_cfg("task=kmnist", f"dataset.path={tmp_path}"))
    (problem,) = info.value.problems
    assert str(tmp_path) in problem
    assert "train-images-idx3-ubyte.gz" in problem and "t10k-labels-idx1-ubyte.gz" in problem
    assert "dataset.download=true" in problem


def test_download_fetches_and_verifies_every_file(tiny_cfg, tmp_path, monkeypatch):
    mirror = write_kmnist(tmp_path / "mirror", 300, 50)
    # The network replaced by a local folder served through file:// URLs.
    monkeypatch.setattr(kmnist, "MIRROR", mirror.as_uri() + "/")
    monkeypatch.setattr(kmnist, "IDX_FILES", {n: md5sum(mirror / n) for n in kmnist.IDX_FILES})
    target = tmp_path / "data" / "KMNIST" / "raw"
    cfg = validate(tiny_cfg("task=kmnist", f"dataset.path={target}", "dataset.download=true"))
    task = kmnist.KmnistTask(cfg)
    task.prepare(tmp_path / "cache")
    assert sorted(p.name for p in target.iterdir()) == sorted(kmnist.IDX_FILES)
    assert task.size("train") + task.size("val") == 300 and task.size("test") == 50
    # A changed file upstream: md5 mismatch, a clear error, nothing new written.
    other = tmp_path / "elsewhere"
    monkeypatch.setattr(kmnist, "IDX_FILES", {n: "0" * 32 for n in kmnist.IDX_FILES})
    cfg = validate(tiny_cfg("task=kmnist", f"dataset.path={other}", "dataset.download=true"))
    with pytest.raises(UserError, match="md5"):
        kmnist.KmnistTask(cfg).prepare(tmp_path / "cache")
    assert list(other.iterdir()) == []


def test_random_shift_translates_each_image_within_bounds():
    torch.manual_seed(0)
    images = torch.zeros(64, 28, 28, dtype=torch.uint8)
    images[:, 10:18, 12:16] = 200  # a block away from the borders
    shifted = kmnist.random_shift(images, 3)
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    assert torch.equal(shifted.sum((1, 2), dtype=torch.long), images.sum((1, 2), dtype=torch.long))
    moves = set()
    for img in shifted:
        ys, xs = torch.nonzero(img, as_tuple=True)
        dy, dx = int(ys.min()) - 10, int(xs.min()) - 12
        assert abs(dy) <= 3 and abs(dx) <= 3
        assert torch.equal(torch.roll(images[0], (dy, dx), (0, 1)), img)
        moves.add((dy, dx))
    assert len(moves) > 10  # every image draws its own shift


def test_seed_cnn_has_the_seed_layers():
    model = build_model(model_cfg("kmnist_cnn", dropout=0.3), channels=1, classes=10, image_size=28)
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [
        (8, 1, 5, 5),
        (8,),
        (16, 8, 3, 3),
        (16,),
        (600, 576),
        (600,),
        (120, 600),
        (120,),
        (10, 120),
        (10,),
    ]
    x = torch.randn(3, 1, 28, 28)
    assert model(x).shape == (3, 10)
    assert model.first_activations(x).shape == (3, 8, 28, 28)


@pytest.mark.parametrize(("width", "stages", "blocks"), [(8, 1, 1), (16, 3, 2)])
def test_resnet_shapes(width, stages, blocks):
    cfg = model_cfg("resnet", width=width, stages=stages, blocks=blocks, dropout=0.0)
    model = build_model(cfg, channels=1, classes=10, image_size=28)
    x = torch.randn(2, 1, 28, 28)
    assert model(x).shape == (2, 10)
    assert model.first_activations(x).shape == (2, width, 28, 28)
    convs = [
        m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
    ]
    assert len(convs) == 1 + 2 * stages * blocks


def test_short_run_learns_and_writes_figures(tiny_cfg, tmp_path):
    cfg = tiny_cfg(
        "task=kmnist",
        "trainer.max_steps=60",
        "trainer.eval_every=30",
        "trainer.eval_at_start=true",
        "dataset.shift=1",
    )
    result = run(cfg, tmp_path)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    val = [r for r in records if r["split"] == "val"]
    assert val[0]["step"] == 0 and val[0]["accuracy"] < 0.5  # the untrained model
    assert result["test/accuracy"] > 0.8 > val[0]["accuracy"]
    per_class = json.loads((tmp_path / "per_class.json").read_text())["test"]
    assert list(per_class["per_class_accuracy"]) == list(kmnist.CLASSES)
    assert sum(map(sum, per_class["confusion"])) == 200
    for figure in ("confusion_test.png", "activations.png", "curves.png"):
        assert (tmp_path / figure).read_bytes()[:4] == b"\x89PNG"


def test_predict_reads_image_files(tiny_cfg, tmp_path):
    from PIL import Image

    from dlrun.cli.predict import load_run

    cfg = tiny_cfg("task=kmnist", "trainer.max_steps=60")
    run(cfg, tmp_path)
    save_run_config(cfg, tmp_path)
    task, model = load_run(tmp_path)
    images, labels = synthetic_images(20, 7)
    files = []
    for i, image in enumerate(images):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).resize((56, 56)).save(files[-1])  # resized back to 28x28
    rows = [line.split("\t") for line in task.predict(model, files, 8)]
    assert all(name in kmnist.CLASSES and 0.1 <= float(p) <= 1 for name, p in rows)
    right = sum(kmnist.CLASSES.index(name) == label for (name, _), label in zip(rows, labels))
    assert right >= 14
    with pytest.raises(UserError, match="not a readable image"):
        task.predict(model, [str(tmp_path / "missing.png")], 8)
