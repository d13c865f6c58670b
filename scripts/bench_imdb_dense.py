"""Epoch time of bow_mlp against the dense one-hot MLP it stands for, in one process.

    python scripts/bench_imdb_dense.py dataset.path=PATH/aclImdb_v1.tar.gz

Takes dlrun overrides (default: experiment=imdb_seed). Both models see the
same batches in the same order, with the same loss and plain SGD; the dense
baseline builds each batch's (batch x vocab) one-hot matrix and multiplies it
by a dense nn.Linear, as the seed did. Prints seconds per training epoch
(median of --epochs) and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from dlrun.config import validate
from dlrun.tasks.classify import classification_loss


class DenseOneHotMLP(nn.Module):
    """The seed's model as written: one-hot rows times a dense first layer."""

    def __init__(self, vocab_size: int, hidden: int, outputs: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.first = nn.Linear(vocab_size, hidden)
        self.out = nn.Linear(hidden, outputs)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        lengths = torch.diff(offsets, append=offsets.new_tensor([ids.numel()]))
        rows = torch.repeat_interleave(torch.arange(offsets.numel()), lengths)
        one_hot = torch.zeros(offsets.numel(), self.vocab_size)
        one_hot[rows, ids] = 1.0
        return self.out(torch.relu(self.first(one_hot)))


def epoch_times(task, model, lr: float, batch_size: int, epochs: int) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    n = task.size("train")
    times = []
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        start = time.perf_counter()
        for b in range(0, n, batch_size):
            batch = task.batch("train", order[b : b + batch_size])
            loss = classification_loss(task.logits(model, batch), batch["label"])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    from hydra import compose, initialize_config_dir

    from dlrun.registry import task_entry
    from dlrun.train import CONF_DIR

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = validate(compose("config", overrides=["experiment=imdb_seed", *args.overrides]))
    task = task_entry("imdb").obj(cfg)
    task.prepare(cfg["paths"]["cache_dir"])
    torch.manual_seed(0)
    bag = task.build_model()
    m = cfg["model"]
    dense = DenseOneHotMLP(len(task.vocab), m["hidden_size"], m["outputs"])
    lr, bs = cfg["optimizer"]["lr"], cfg["dataset"]["batch_size"]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, vocab {len(task.vocab)}, "
        f"{task.size('train')} training reviews, batch {bs}, sparse_grad={m['sparse_grad']}"
    )
    t_bag = statistics.median(epoch_times(task, bag, lr, bs, args.epochs))
    t_dense = statistics.median(epoch_times(task, dense, lr, bs, args.epochs))
    print(f"bow_mlp (EmbeddingBag): {t_bag:.3f} s/epoch")
    print(f"dense one-hot MLP:      {t_dense:.3f} s/epoch")
    print(f"speed-up: {t_dense / t_bag:.1f}x")


if __name__ == "__main__":
    main()
