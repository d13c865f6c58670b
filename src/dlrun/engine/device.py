"""Pick the device and the mixed-precision settings from ``cfg.device``."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import cast

import torch

from dlrun.errors import UserError


@dataclass
class DeviceInfo:
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype, None = full precision
    use_scaler: bool  # fp16 needs loss scaling; bf16 does not
    compile: bool

    def describe(self) -> str:
        name = str(self.device)
        if self.device.type == "cuda":
            name += f" ({torch.cuda.get_device_name(self.device)})"
        elif self.device.type == "cpu":
            threads = torch.get_num_threads()
            name += f", {threads} CPU thread{'' if threads == 1 else 's'}"
        amp = {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]
        return f"{name}, amp {amp}"


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def pick(kind: str) -> str:
    """``auto`` picks cuda, then mps, then cpu; asking for a missing device is a user error."""
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"device=cuda but this torch {torch.__version__} sees no CUDA GPU; "
            "use device=cpu or device=auto"
        )
    if kind == "mps" and not _mps_available():
        raise UserError("device=mps but MPS is not available here; use device=cpu or device=auto")
    return kind


def resolve_device(cfg, index: int | None = None) -> DeviceInfo:
    """The device and precision ``cfg`` (the device section) asks for.

    ``index`` picks one of several GPUs (torchrun's LOCAL_RANK).
    """
    kind = pick(cfg.type)
    amp = cfg.amp
    if amp == "auto":
        amp = "bf16" if kind == "cuda" else "none"
    if amp == "fp16" and kind != "cuda":
        raise UserError(f"device.amp=fp16 needs a CUDA device, not {kind}; use device.amp=none")
    if kind == "cuda" and cfg.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    device = torch.device(kind)
    if kind == "cuda" and index is not None:
        device = torch.device(kind, index)
        torch.cuda.set_device(device)
    return DeviceInfo(device, dtype, amp == "fp16", cfg.compile)


_TORCH_THREADS = torch.get_num_threads()  # torch's own default, before any run set it


def set_threads(requested: int | None) -> int:
    """Set torch's CPU threads: ``requested``, or (``device.threads=null``) torch's default
    less the cores other processes kept busy since start-up (at least one): on a busy
    2-core machine two threads ran the default job 5x slower than one. An
    ``OMP_NUM_THREADS`` in the environment (torchrun sets one) is left to torch."""
    if requested:
        threads = requested
    elif os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    else:
        from dlrun.engine import cpuload

        busy = cpuload.others_busy()
        free = len(cpuload.cpus()) - busy if busy is not None else _TORCH_THREADS
        threads = max(1, min(_TORCH_THREADS, round(free)))
        if threads < _TORCH_THREADS:
            logging.getLogger("dlrun").info(
                "dlrun: %d CPU thread%s: other processes keep %.1f of %d cores busy "
                "(device.threads=N sets it)",
                threads,
                "" if threads == 1 else "s",
                busy,
                len(cpuload.cpus()),
            )
    torch.set_num_threads(threads)
    return threads


# glibc's malloc serves a large block (over its mmap threshold: 128 KiB, rising to at most
# 32 MiB) with a fresh mmap and unmaps it on free, so every large tensor a step makes is
# faulted in page by page again: matrix products with outputs of tens of MB ran at half
# speed (BENCHMARKS.md, "CPU time of a Transformer: malloc, one-query attention").
# jemalloc and tcmalloc, which PyTorch's CPU tuning guides preload, keep such blocks for
# reuse; this does the same.
_MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap and are reused
_TRIM_THRESHOLD = (1 << 31) - 1  # freed memory stays in the process for the next step


def _glibc():
    """The C library's functions where it is glibc's (it has ``mallopt``), else None."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018 (musl, macOS and Windows have none)
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed large blocks instead of returning them to the
    system (``mallopt``); True where it applied (Linux with glibc), else nothing changes.
    Process-wide, so a training run sets it (``engine.run``), not ``import dlrun``."""
    libc = _glibc()
    if libc is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(
        libc.mallopt(m_mmap_threshold, _MMAP_THRESHOLD)
        and libc.mallopt(m_trim_threshold, _TRIM_THRESHOLD)
    )


def give_back_freed_memory() -> None:
    """Ask glibc to hand freed heap memory back to the system (``malloc_trim``): a data
    build's freed blocks otherwise stay in the process, its RSS at the build's peak for
    the rest of the run. Elsewhere the allocator decides."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def cpu_has_amx_bf16() -> bool:
    """True on CPUs with AMX matrix units (bf16 matrix products about ten times fp32's)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe is not None and probe() and torch.backends.mkldnn.is_available())


def amp_for_model(dev: DeviceInfo, model: torch.nn.Module, amp: str) -> DeviceInfo:
    """``device.amp=auto`` on a CPU: bf16 autocast for a model that gains from it
    (``cpu_bf16 = True``: its time is in large matrix products, e.g. a Transformer)
    where the CPU has AMX; otherwise ``dev`` unchanged."""
    if amp != "auto" or dev.device.type != "cpu" or dev.amp_dtype is not None:
        return dev
    if getattr(model, "cpu_bf16", False) and cpu_has_amx_bf16():
        return replace(dev, amp_dtype=torch.bfloat16)
    return dev


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op off CUDA), e.g. before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> int:
    """Bytes free for data on ``device``: the GPU's free memory, else the RAM available."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: line.split()[1] for line in f}
        return int(info["MemAvailable"]) * 1024
    except (OSError, KeyError, ValueError, IndexError):  # not Linux
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this run: CUDA's max allocated on a GPU, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes vs KiB


def for_training(model: torch.nn.Module, dev: DeviceInfo, dist) -> torch.nn.Module:
    """The model as training calls it: in DistributedDataParallel under torchrun, compiled
    with device.compile (but a model with ``compilable = False``: RNNs, which Dynamo does not
    trace, or what its ``compile_note`` says)."""
    compilable = getattr(model, "compilable", True)
    note = getattr(model, "compile_note", "it is built on RNNs, which torch.compile does not trace")
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        ids = [dev.device.index] if dev.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=ids)
    if dev.compile:
        if compilable:
            # A module compiles to a module (torch's annotation says any callable).
            return cast(torch.nn.Module, torch.compile(model))
        logging.getLogger("dlrun").warning(
            "device.compile: running %s eagerly (%s)", type(model).__name__, note
        )
    return model
