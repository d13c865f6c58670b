"""device.data: splits too large for the device stay memory-mapped on the host and are
streamed in prefetched batches; the batches (and so the results) equal in-memory ones."""

from __future__ import annotations

import torch

from dlrun.engine import device as device_module
from dlrun.engine.progress import DataOrder, TrainState
from dlrun.engine.run import run
from dlrun.plan.config import validate
from dlrun.tasks.images import ImagesTask
from dlrun.tasks.imdb import ImdbTask

CPU = torch.device("cpu")


def _mapped_from(address: int) -> str:
    """The file whose mapping holds ``address`` ("" or "[heap]": none), from /proc."""
    with open("/proc/self/maps") as f:
        for line in f:
            span, *rest = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in span.split("-"))
            if start <= address < end:
                return rest[4].strip() if len(rest) > 4 else ""
    return ""


def _images(tiny_cfg, cache_dir, data: str) -> ImagesTask:
    task = ImagesTask(validate(tiny_cfg("task=images", f"device.data={data}")))
    task.prepare(cache_dir)
    task.to(CPU)
    return task


def test_streamed_batches_equal_in_memory_ones(tiny_cfg, cache_dir):
    memory = _images(tiny_cfg, cache_dir, "memory")
    streamed = _images(tiny_cfg, cache_dir, "stream")
    assert not memory.streamed and streamed.streamed
    image = streamed.splits["train"]["image"]
    # the split file the task wrote, streamed as it is (not copied again by ``to``)
    assert _mapped_from(image.data_ptr()).startswith(str(cache_dir / "stream" / "train."))
    assert ".u8" in _mapped_from(image.data_ptr())
    assert not _mapped_from(memory.splits["train"]["image"].data_ptr()).startswith("/")
    assert streamed.splits["train"]["label"].device == CPU  # small: sent whole
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val", "test"):
        idx = torch.randperm(memory.size(split), generator=g)[:7]
        nxt = torch.randperm(memory.size(split), generator=g)[:5]
        streamed.prefetch(split, nxt)
        for i in (idx, nxt):  # one not prefetched (another was), then the prefetched one
            torch.manual_seed(1)  # training batches are shifted at random
            a = memory.batch(split, i)
            torch.manual_seed(1)
            b = streamed.batch(split, i)
            assert a.keys() == b.keys()
            assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_streamed_run_gives_the_in_memory_results(tiny_cfg, tmp_path):
    args = ("task=images", "model=kmnist_cnn", "trainer.max_steps=12", "trainer.eval_every=6")
    memory = run(tiny_cfg(*args, "device.data=memory"), tmp_path / "memory")
    streamed = run(tiny_cfg(*args, "device.data=stream"), tmp_path / "stream")
    assert memory == streamed


def test_auto_streams_what_does_not_fit(tiny_cfg, cache_dir, monkeypatch):
    monkeypatch.setattr(device_module, "free_memory", lambda device: 1000)
    assert _images(tiny_cfg, cache_dir, "auto").streamed
    monkeypatch.setattr(device_module, "free_memory", lambda device: 10**12)
    assert not _images(tiny_cfg, cache_dir, "auto").streamed
    assert device_module.free_memory(CPU) > 0  # the real probe: RAM available


def test_peek_is_the_next_batch_across_epochs():
    class Trainer:
        seed, shuffle, group_by_length = 3, True, False

    order, state = DataOrder(10, 4, 1, Trainer, pin=False), TrainState()
    for _ in range(7):  # three batches an epoch: crosses two epoch boundaries
        ahead = order.peek(state)
        assert torch.equal(ahead, order.next(state))


def test_streamed_text_batches_equal_in_memory_ones(tiny_cfg, cache_dir):
    # task=imdb keeps its ids end to end outside ``splits``, streamed from the cache's files
    tasks = {}
    for data in ("memory", "stream"):
        task = ImdbTask(validate(tiny_cfg("task=imdb", f"device.data={data}")))
        task.prepare(cache_dir)
        task.add_train_subset(3)
        task.to(CPU)
        tasks[data] = task
    assert tasks["stream"].streamed
    ids = tasks["stream"].flat["train"]
    assert _mapped_from(ids.data_ptr()).startswith(str(cache_dir / "imdb"))
    for split in ("train", "train_subset", "test"):
        idx = torch.tensor([2, 0, 1])
        a, b = (tasks[k].batch(split, idx) for k in ("memory", "stream"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_auto_counts_text_ids_beside_the_splits(tiny_cfg, cache_dir, monkeypatch):
    # A text task's ids (most of its data) live beside ``splits``: device.data=auto
    # streams when they would not fit, though the splits' own tensors would.
    task = ImdbTask(validate(tiny_cfg("task=imdb", "device.data=auto")))
    task.prepare(cache_dir)
    task.add_train_subset(3)
    splits = sum(v.numel() * v.element_size() for s in task.splits.values() for v in s.values())
    ids = sum(v.numel() * v.element_size() for s, v in task.flat.items() if s != "train_subset")
    assert task.data_bytes() == splits + ids and ids > splits  # the subset's ids: train's
    monkeypatch.setattr(device_module, "free_memory", lambda device: 2 * (splits + ids) - 2)
    task.to(CPU)
    assert task.streamed
    task = ImdbTask(validate(tiny_cfg("task=imdb", "device.data=auto")))
    task.prepare(cache_dir)
    monkeypatch.setattr(device_module, "free_memory", lambda device: 2 * (splits + ids) + 2)
    task.to(CPU)
    assert not task.streamed
