"""Two CPU costs under a Transformer's evaluation, measured apart from dlrun's loop.

    python scripts/bench_cpu_kernels.py          (inside the CPU lock; about 30 s)

1. Matrix products whose outputs are tens of MB (a Transformer's projections over a
   batch of 1,024 sequences), in a fresh process with glibc's default malloc and in one
   after ``engine.device.keep_freed_memory``: GFLOP/s of ``F.linear`` without and with
   a bias.
2. Attention of one query per row over cached keys (greedy decoding's step): PyTorch's
   fused ``scaled_dot_product_attention`` against the two products and softmax that
   ``models.transformer`` uses for it, in milliseconds per call.
"""

from __future__ import annotations

import subprocess
import sys
import time


def timed(n: int, f, *args, **kwargs) -> float:
    """Seconds per call of ``f(*args, **kwargs)``, after two calls to warm up."""
    f(*args, **kwargs)
    f(*args, **kwargs)
    start = time.perf_counter()
    for _ in range(n):
        f(*args, **kwargs)
    return (time.perf_counter() - start) / n


def products(keep: bool) -> None:
    import torch
    import torch.nn.functional as F

    from dlrun.engine.device import keep_freed_memory

    if keep:
        assert keep_freed_memory(), "mallopt did not apply (not glibc?)"
    label = "kept (keep_freed_memory)" if keep else "glibc default"
    for rows in (4096, 11264, 27120):
        x, w, b = torch.randn(rows, 256), torch.randn(768, 256), torch.randn(768)
        flop = 2 * rows * 256 * 768
        with torch.inference_mode():
            plain = flop / timed(10, F.linear, x, w) / 1e9
            bias = flop / timed(10, F.linear, x, w, b) / 1e9
        print(f"| {label} | {rows}x256 @ 256x768 | {plain:.0f} | {bias:.0f} |")


def one_query(q, k, v, keep):
    """``models.transformer._attend``'s arithmetic for one query per row."""
    import torch

    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) @ v


def attention() -> None:
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    for keys in (5, 21, 30):
        q = torch.randn(1024, 8, 1, 32, generator=g)
        k, v = torch.randn(2, 1024, 8, keys, 32, generator=g)
        keep = torch.rand(1024, 1, 1, keys, generator=g) > 0.1

        with torch.inference_mode():
            fused = timed(30, F.scaled_dot_product_attention, q, k, v, attn_mask=keep)
            mine = timed(30, one_query, q, k, v, keep)
        print(f"| 1024 rows x 8 heads, {keys} keys | {fused * 1e3:.2f} | {mine * 1e3:.2f} |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--products":
        products(sys.argv[2] == "keep")
        return
    print("| malloc | product | F.linear GFLOP/s | with bias GFLOP/s |\n|---|---|---:|---:|")
    for mode in ("default", "keep"):  # each in a fresh process: mallopt is process-wide
        subprocess.run([sys.executable, __file__, "--products", mode], check=True)
    print("\n| one query per row | fused SDPA ms | products + softmax ms |\n|---|---:|---:|")
    attention()


if __name__ == "__main__":
    main()
