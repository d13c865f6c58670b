#!/usr/bin/env python3
"""dlrun against a naive baseline of the same model and data, task by task.

    python scripts/bench.py [--tasks dates,imdb,algebra,kmnist] [--device auto]
        [--imdb PATH] [--steps 100] [--target-time 600] [--no-target] [--append FILE]

For each task, on one device:
- dlrun's training throughput (samples/s over --steps steps, one sync at the
  end) and median step time (each step synchronized), timed around the very
  ``Trainer.train_step`` that ``dlrun`` runs;
- the same for a naive baseline in the seeds' style, built here and not in
  the package: a Dataset that returns one sample at a time through a
  DataLoader with collation, a host-to-device copy and a ``loss.item()`` per
  step, a Python loop over decoder steps for RNN decoders, and dense one-hot
  input rows for IMDB. Same model, batch, optimizer and loss;
- for sequence tasks also greedy-decoding throughput on the validation
  sources: the models' batched ``generate`` (encoder run once, stops when
  every row has ended) against a loop that re-runs the whole model on the
  growing prefix at every step; for a Transformer also ``generate`` without
  its key/value cache;
- from one real ``dlrun`` command: start-up (command start to first step),
  peak memory (CUDA max allocated, or peak RSS) and time to the task's target
  (dates 99.9% test exact match, imdb 88% test accuracy, algebra place_value
  99% test exact match; KMNIST runs on random images, so throughput only).

Prints a Markdown table; --append adds it, with device, versions, commit and
the command, to a file (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

import dlrun
from dlrun.data.vocab import Vocab
from dlrun.engine.device import resolve_device
from dlrun.engine.device import synchronize as sync
from dlrun.engine.trainer import Trainer, build_optimizer
from dlrun.models import build_model
from dlrun.plan.config import conf_dir, validate
from dlrun.registry import task_entry
from dlrun.tasks.classify import classification_loss

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Spec:
    overrides: list[str]
    target: tuple[str, float] | None  # (split/metric, value) reached in a real run
    kind: str  # seq2seq, imdb or kmnist: which baseline
    extra: list[str] = field(default_factory=list)  # for the timed real run only


SPECS = {
    "dates": Spec(["task=dates"], ("test/exact_match", 0.999), "seq2seq"),
    "imdb": Spec(["experiment=imdb_seed"], ("test/accuracy", 0.88), "imdb"),
    "algebra": Spec(
        ["task=algebra", "dataset.modules=[numbers__place_value]"],
        ("test/exact_match", 0.99),
        "seq2seq",
    ),
    "kmnist": Spec(["task=kmnist"], None, "kmnist", ["trainer.max_steps=50"]),
}


def compose(overrides: list[str]) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return validate(hydra_compose("config", overrides=overrides))


# -- timing ----------------------------------------------------------------------------
def timed(step, device: torch.device, steps: int, batch: int) -> dict[str, float]:
    """Samples/s (median of 3 windows of ``steps`` unsynchronized steps) and the median
    time of single synchronized steps."""
    for _ in range(5):  # warm-up: allocator, kernels, autotuning
        step()
    rates = []
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        rates.append(steps * batch / (time.perf_counter() - start))
    rate = statistics.median(rates)
    times = []
    for _ in range(max(10, steps // 3)):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"samples_per_s": rate, "step_ms": 1000 * statistics.median(times)}


def forever(loader: DataLoader):
    while True:
        yield from loader


# -- the naive baselines ---------------------------------------------------------------------
class OneAtATime(Dataset):
    """The seeds' Dataset: sample ``i`` built on request, on the host."""

    def __init__(self, n: int, get):
        self.n, self.get = n, get

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.get(i)


class DenseOneHotMLP(nn.Module):
    """The seed's IMDB model as written: a dense one-hot row times a dense first layer."""

    def __init__(self, vocab_size: int, hidden: int, outputs: int):
        super().__init__()
        self.first = nn.Linear(vocab_size, hidden)
        self.out = nn.Linear(hidden, outputs)

    def forward(self, one_hot: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.first(one_hot)))


def baseline_parts(task, cfg: dict, cpu: dict[str, torch.Tensor], kind: str):
    """(dataset, collate, model, loss_fn) of the naive baseline for one task."""
    n = len(cpu["label"] if "label" in cpu else cpu["src"])
    torch.manual_seed(cfg.trainer.seed)
    if kind == "kmnist":
        mean, std = float(task.mean), float(task.std)

        def get(i):  # what ToTensor + Normalize do, one image at a time
            return (
                cpu["image"][i].float().div(255).sub(mean).div(std).unsqueeze(0),
                cpu["label"][i],
            )

        def loss_fn(model, batch):
            return classification_loss(model(batch[0]), batch[1])

        # The seed's network in PyTorch's default (NCHW) layout.
        model = build_model(cfg.model, channels=1, classes=10, image_size=28)
        return OneAtATime(n, get), None, model, loss_fn
    if kind == "imdb":
        rows = torch.split(cpu["ids"], cpu["lengths"].tolist())
        vocab = len(task.vocab)

        def get(i):
            one_hot = torch.zeros(vocab)
            one_hot[rows[i]] = 1.0
            return one_hot, cpu["label"][i]

        m = cfg.model
        model = DenseOneHotMLP(vocab, m.hidden_size, m.outputs)

        def loss_fn(model, batch):
            return classification_loss(model(batch[0]), batch[1])

        return OneAtATime(n, get), None, model, loss_fn
    pad = Vocab.pad_id

    def get(i):  # the unpadded pair
        src, tgt = cpu["src"][i], cpu["tgt"][i]
        return src[src != pad], tgt[tgt != pad]

    def collate(pairs):
        src, tgt = zip(*pairs)
        return (
            pad_sequence(src, batch_first=True, padding_value=pad),
            pad_sequence(tgt, batch_first=True, padding_value=pad),
        )

    model = task.build_model()

    def loss_fn(model, batch):
        src, tgt = batch
        tgt_in = task.decoder_input(tgt)
        if getattr(model, "compilable", True):  # Transformers train teacher-forced in parallel
            logits = model(src, tgt_in)
        else:  # RNN decoders, the tutorials' way: one Python iteration per target position
            memory, state = model.encode(src)
            steps = []
            for t in range(tgt_in.shape[1]):
                step_logits, state = model.decode_step(memory, tgt_in[:, t : t + 1], state)
                steps.append(step_logits)
            logits = torch.stack(steps, dim=1)
        return nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), tgt.flatten(), ignore_index=pad
        )

    return OneAtATime(n, get), collate, model, loss_fn


def baseline_step(task, cfg: dict, dev, cpu: dict[str, torch.Tensor], kind: str):
    dataset, collate, model, loss_fn = baseline_parts(task, cfg, cpu, kind)
    model = model.to(dev.device).train()
    plain = dataclasses.replace(cfg.optimizer, fused=False)
    opt = build_optimizer(model.parameters(), plain, dev.device)
    loader = forever(DataLoader(dataset, cfg.dataset.batch_size, shuffle=True, collate_fn=collate))
    clip = cfg.trainer.grad_clip

    def step():
        batch = [t.to(dev.device) for t in next(loader)]  # the per-step copy
        with torch.autocast(dev.device.type, dev.amp_dtype, enabled=dev.amp_dtype is not None):
            loss = loss_fn(model, batch)
        opt.zero_grad()
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss.item()  # the running-loss print: a host sync per step

    return step, model


# -- evaluation (sequence tasks) -------------------------------------------------------------
def naive_greedy(model, src: torch.Tensor, max_len: int) -> torch.Tensor:
    """Greedy decoding that re-runs the whole model (encoder too) on the prefix each step."""
    ys = torch.full((src.shape[0], 1), Vocab.sos_id, dtype=torch.long, device=src.device)
    for _ in range(max_len):
        nxt = model(src, ys)[:, -1].argmax(-1, keepdim=True)
        ys = torch.cat([ys, nxt], dim=1)
        if bool((ys == Vocab.eos_id).any(dim=1).all()):
            break
    return ys[:, 1:]


def uncached_generate(model, src: torch.Tensor, max_len: int) -> torch.Tensor:
    """``generate`` with the Transformer's key/value cache off (the whole prefix each step)."""
    model.use_cache = False
    try:
        return model.generate(src, max_len)
    finally:
        model.use_cache = True


def decode_rates(task, model, dev, batch: int) -> tuple[float, ...]:
    """Greedy decoding of the validation sources, samples/s: the model's batched
    ``generate`` (encoder once, stop when every row ended) vs the naive loop; for a
    Transformer also ``generate`` without its key/value cache, as a third figure."""
    model.eval()
    src = task.splits["val"]["src"]
    decoders = [
        lambda s: model.generate(s, task.max_tgt_len),
        lambda s: naive_greedy(model, s, task.max_tgt_len),
    ]
    if hasattr(model, "use_cache"):
        decoders.append(lambda s: uncached_generate(model, s, task.max_tgt_len))
    rates = []
    with torch.inference_mode():
        for decode in decoders:
            decode(src[:batch])  # warm-up: a GPU's first call pays for kernel selection
            sync(dev.device)
            t0 = time.perf_counter()
            for start in range(0, src.shape[0], batch):
                decode(src[start : start + batch])
            sync(dev.device)
            rates.append(src.shape[0] / (time.perf_counter() - t0))
    model.train()
    return tuple(rates)


# -- one real dlrun command --------------------------------------------------------------------
def real_run(overrides: list[str], target, cap: int, work: Path) -> dict:
    """Start-up, peak memory and time to target from ``dlrun`` itself."""
    args = list(overrides)
    if target:
        split, _, metric = target[0].partition("/")
        args += [f"trainer.also_eval=[{split}]", f"trainer.stop_at={target[1]}"]
        args += ["trainer.max_steps=null", f"trainer.max_time={cap}"]
    cmd = ["dlrun", *args, f"paths.output_dir={work}/outputs"]
    start = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{shlex.join(cmd)} failed:\n{done.stderr[-2000:]}")
    run_dir = max(Path(work, "outputs").glob("*/*"), key=lambda p: p.stat().st_mtime)
    summary = json.loads((run_dir / "summary.json").read_text())
    out = {
        "startup_s": summary["first_step_at"] - start,
        "peak_mb": summary["peak_memory_mb"],
        "command": "dlrun " + " ".join(args),
    }
    if target:
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
        evals = [r for r in records if r["split"] == split and "checkpoint" not in r]
        hit = next((r for r in evals if r[metric] >= target[1]), None)
        best = max(r[metric] for r in evals)
        out["target"] = (
            f"{hit['elapsed']:.1f} s ({metric} {hit[metric]:.4f}, step {hit['step']})"
            if hit
            else f"not in {cap} s (best {best:.4f})"
        )
    return out


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes(), compresslevel=1))


def synthetic_kmnist(folder: Path) -> Path:
    """60,000 + 10,000 random images in the IDX layout: throughput does not read pixels."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for prefix, n in (("train", 60_000), ("t10k", 10_000)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return folder


# -- one task ----------------------------------------------------------------------------------
def bench_task(name: str, args, work: Path) -> dict:
    spec = SPECS[name]
    overrides = [*spec.overrides, f"device={args.device}", *args.overrides]
    if name == "imdb":
        overrides.append(f"dataset.path={args.imdb}")
    if name == "kmnist":
        overrides.append(f"dataset.path={synthetic_kmnist(work / 'KMNIST' / 'raw')}")
    cfg = compose(overrides)
    dev = resolve_device(cfg.device)
    task = task_entry(cfg.task.name).obj(cfg)
    task.prepare(Path(cfg.paths.cache_dir).expanduser())
    everything = torch.arange(task.size("train"))
    cpu = task.batch("train", everything)  # host copies for the baseline's Dataset
    if spec.kind == "imdb":
        cpu["lengths"] = task.splits["train"]["length"]
    task.to(dev.device)
    torch.manual_seed(cfg.trainer.seed)
    model = task.build_model().to(dev.device)
    trainer = Trainer(task, model, cfg, dev, work / "unused")
    model.train()
    batch = cfg.dataset.batch_size
    row = {"task": name, "model": cfg.model.name, "batch": batch}
    row["dlrun"] = timed(trainer.train_step, dev.device, args.steps, batch)
    step, base_model = baseline_step(task, cfg, dev, cpu, spec.kind)
    row["baseline"] = timed(step, dev.device, args.steps, batch)
    if spec.kind == "seq2seq":
        row["decode"] = decode_rates(task, model, dev, cfg.trainer.eval_batch_size)
    del trainer, model, base_model, task
    if not args.no_target:
        row.update(real_run(overrides + spec.extra, spec.target, args.target_time, work))
    return row


def table(rows: list[dict]) -> str:
    head = (
        "| task | model | batch | dlrun samples/s | baseline samples/s | ratio "
        "| dlrun step ms | baseline step ms | decode dlrun / naive (samples/s) "
        "| start-up s | peak MB | time to target |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        d, b = r["dlrun"], r["baseline"]
        decode = "-"
        if "decode" in r:
            fast, slow, *uncached = r["decode"]
            decode = f"{fast:,.0f} / {slow:,.0f} ({fast / slow:.1f}x)"
            if uncached:
                decode += f"; without KV cache {uncached[0]:,.0f}"
        lines.append(
            f"| {r['task']} | {r['model']} | {r['batch']} | {d['samples_per_s']:,.0f} "
            f"| {b['samples_per_s']:,.0f} | {d['samples_per_s'] / b['samples_per_s']:.1f}x "
            f"| {d['step_ms']:.2f} | {b['step_ms']:.2f} | {decode} "
            f"| {r.get('startup_s', float('nan')):.1f} | {r.get('peak_mb', float('nan')):,.0f} "
            f"| {r.get('target', '-')} |"
        )
    return "\n".join(lines)


def cpu_name() -> str:
    """The CPU's model name where Linux tells it, else what platform knows."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or platform.machine()


def environment(device: str) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        where = torch.cuda.get_device_name()
    else:
        where = f"CPU {cpu_name()}, {torch.get_num_threads()} threads"
    return (
        f"device {where}; torch {torch.__version__}, dlrun {dlrun.__version__}, Python "
        f"{platform.python_version()}; commit {commit}{' (with local changes)' if dirty else ''}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="dates,imdb,algebra,kmnist")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--imdb", help="aclImdb folder or tarball (needed for the imdb task)")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per measurement")
    parser.add_argument("--target-time", type=int, default=600, help="cap of each real run, s")
    parser.add_argument("--no-target", action="store_true", help="skip the real dlrun runs")
    parser.add_argument("--append", type=Path, help="add the table to this Markdown file")
    parser.add_argument("overrides", nargs="*", help="more dlrun overrides for every task")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    unknown = [t for t in tasks if t not in SPECS]
    if unknown or ("imdb" in tasks and not args.imdb):
        sys.exit(f"bench.py: tasks are {', '.join(SPECS)}; imdb needs --imdb PATH")
    command = "python scripts/bench.py " + shlex.join(sys.argv[1:])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in tasks:
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            rows.append(bench_task(name, args, Path(tmp) / name))
            print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    text = (
        f"\n### Harness run {time.strftime('%Y-%m-%d')}\n\n`{command}`\n\n"
        f"{environment(args.device)}\n\n{table(rows)}\n"
    )
    for r in rows:
        if "command" in r:
            text += f"\n- {r['task']} real run: `{r['command']}`"
    print(text)
    if args.append:
        with args.append.open("a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
