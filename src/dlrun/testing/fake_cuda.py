"""A CUDA device pretended on a CPU-only torch: dlrun's CUDA branches run, for real, on a CPU.

``with fake_cuda():`` makes ``torch.cuda.is_available()`` true and every tensor that
dlrun sends to ``cuda`` (``.to``, ``.cuda()``, a factory's ``device=``) a
``FakeCudaTensor``: a CPU tensor holding real values that reports ``cuda:0`` as its
device. A ``TorchFunctionMode`` sees every torch call in the block and keeps CUDA's
rules, so that what would fail on a GPU fails here:

- an operation that mixes a CUDA tensor and a CPU tensor of one or more dimensions
  raises CUDA's "Expected all tensors to be on the same device" (a CPU scalar, a
  0-dimensional tensor, is allowed, as on a GPU; so are copies between devices and
  indexing a CUDA tensor with CPU indices);
- ``pin_memory()`` of a CUDA tensor raises as it does on a GPU; a CPU tensor pinned
  is a copy that ``is_pinned()`` says is pinned; ``.numpy()`` of a CUDA tensor raises;
- ``torch.autocast("cuda", dtype)`` casts as CPU autocast does with that dtype (CPU's
  lists of operations, close to CUDA's), ``GradScaler("cuda")`` is enabled and steps,
  skipping a step whose gradients are not finite;
- ``torch.load(map_location="cuda")`` and ``torch.save`` keep the device faithful:
  tensors load as CUDA tensors, are saved as plain CPU tensors.

Why not ``FakeTensorMode``: in a CPU-only torch, autograd aborts the process on a
fake CUDA tensor (``InputMetadata`` asks for the CUDA stream of a device it has no
support for), so no training step could run; and fake tensors have no values, so
``.item()`` (GradScaler, metrics) and decoding could not run either.

What this cannot reach (a real GPU, ``scripts/gpu_check.sh``, is needed for these):
CUDA kernels and their numerics (TF32, cuDNN, fused kernels' CUDA code), CUDA's own
autocast lists (RNN cells, for one, autocast on CUDA and not on a CPU), streams and
asynchrony (a ``non_blocking`` copy here is synchronous), real memory and its limits,
multiple GPUs and NCCL, ``torch.compile`` for CUDA (Triton), and CUDA RNG states.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA0 = torch.device("cuda", 0)
CPU = torch.device("cpu")


class FakeCudaTensor(torch.Tensor):
    """A CPU tensor that reports ``cuda:0`` as its device (made by ``fake_cuda``)."""

    # The mode does the work (torch's documented way to turn a subclass's own hook off).
    __torch_function__ = torch._C._disabled_torch_function_impl  # type: ignore[assignment]

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return CUDA0

    @property
    def is_cuda(self) -> bool:  # type: ignore[override]
        return True

    def get_device(self) -> int:
        return 0

    def __reduce_ex__(self, protocol):
        # Saved as a plain tensor: a checkpoint loads anywhere, as a real one does.
        return _plain(self).__reduce_ex__(protocol)


def _is_cuda(x: Any) -> bool:
    return isinstance(x, FakeCudaTensor)


def _device_type(device: Any) -> str | None:
    if device is None:
        return None
    if isinstance(device, int):
        return "cuda"
    return torch.device(device).type


def _plain(t: torch.Tensor) -> torch.Tensor:
    """The same tensor (its values, its autograd history) as a plain CPU tensor."""
    with torch._C.DisableTorchFunction():
        return torch.Tensor.as_subclass(t, torch.Tensor)


def _on_cuda(out: Any, inputs: list) -> Any:
    """Every tensor of ``out`` made a CUDA tensor: a new one in place (its class changed),
    an input returned as it was (``contiguous()`` of a contiguous tensor) as an alias."""
    seen = {id(t) for t in inputs}

    def one(t: Any) -> Any:
        if not isinstance(t, torch.Tensor) or _is_cuda(t):
            return t
        if id(t) in seen:
            with torch._C.DisableTorchFunction():
                return torch.Tensor.as_subclass(t, FakeCudaTensor)
        t.__class__ = FakeCudaTensor
        return t

    return tree_map(one, out)


# Calls that may mix devices: copies, and indexing (CPU indices index a CUDA tensor).
_MIXING = {
    torch.Tensor.to,
    torch.Tensor.copy_,
    torch.Tensor.cpu,
    torch.Tensor.cuda,
    torch.Tensor.__getitem__,
    torch.Tensor.__setitem__,
    torch._has_compatible_shallow_copy_type,
}
# Packed sequences keep their lengths and batch sizes on the CPU, on a GPU too.
_MIXING_NAMES = {"_pack_padded_sequence", "_pad_packed_sequence", "gru", "lstm", "rnn_tanh"}
# ...and return them there: the outputs (by position) that stay on the CPU.
_CPU_OUTPUTS = {"_pack_padded_sequence": 1, "_pad_packed_sequence": 1}
_PASS = {torch.Tensor.as_subclass, torch.Tensor.__reduce_ex__}
_PIN, _IS_PINNED, _NUMPY = torch.Tensor.pin_memory, torch.Tensor.is_pinned, torch.Tensor.numpy
_TO, _CUDA, _CPU = torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.cpu


def _check_devices(func, args, kwargs) -> None:
    """CUDA's rule: one device per operation, but for CPU scalars (0-dim tensors)."""
    leaves, _ = tree_flatten((args, kwargs))
    tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
    if func in _MIXING or getattr(func, "__name__", None) in _MIXING_NAMES:
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and not _is_cuda(args[0]):
            # A CPU tensor indexed with CUDA indices fails on a GPU.
            if any(_is_cuda(t) for t in tensors[1:] if t.dim() > 0):
                raise RuntimeError(
                    "indices should be either on cpu or on the same device as the indexed "
                    "tensor (cpu)"
                )
        return
    on_cuda = any(_is_cuda(t) for t in tensors)
    on_cpu = any(not _is_cuda(t) and t.dim() > 0 and t.device.type == "cpu" for t in tensors)
    if on_cuda and on_cpu:
        name = getattr(func, "__name__", str(func))
        raise RuntimeError(
            "Expected all tensors to be on the same device, but found at least two devices, "
            f"cuda:0 and cpu! (fake CUDA, in {name})"
        )


@dataclass
class FakeGpu:
    """What a ``fake_cuda`` block saw: host tensors pinned (in any thread)."""

    pinned: int = 0


class FakeCudaMode(TorchFunctionMode):
    """Runs every torch call on the CPU and keeps track of which tensors are on CUDA."""

    def __init__(self, gpu: FakeGpu):
        super().__init__()
        self.gpu = gpu

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in _PASS:
            return func(*args, **kwargs)
        if func is _PIN:
            self.gpu.pinned += 1
            return _pin(args[0])
        if func is _IS_PINNED:
            return bool(getattr(args[0], "_fake_pinned", False))
        if func is _NUMPY and _is_cuda(args[0]):
            raise TypeError(
                "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy "
                "the tensor to host memory first."
            )
        _check_devices(func, args, kwargs)
        if func is _TO:
            return _to(args, kwargs)
        if func is _CUDA:
            return _move(args[0], "cuda")
        if func is _CPU:
            return _move(args[0], "cpu")
        pinned = kwargs.get("pin_memory") is True
        if pinned:
            kwargs["pin_memory"] = False
        target = _device_type(kwargs.get("device"))
        if target == "cuda":
            kwargs["device"] = CPU
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        out = func(*args, **kwargs)  # a FakeCudaTensor is a CPU tensor to torch's kernels
        if pinned and isinstance(out, torch.Tensor):
            out._fake_pinned = True  # type: ignore[attr-defined]  # what is_pinned reads
        if target == "cuda" or (target is None and any(_is_cuda(t) for t in inputs)):
            host = _CPU_OUTPUTS.get(getattr(func, "__name__", ""))
            if host is not None:
                return tuple(o if i == host else _on_cuda(o, inputs) for i, o in enumerate(out))
            return _on_cuda(out, inputs)
        return out


def _pin(t: torch.Tensor) -> torch.Tensor:
    if _is_cuda(t):
        raise RuntimeError(
            "cannot pin 'torch.cuda.FloatTensor' only dense CPU tensors can be pinned"
        )
    with torch._C.DisableTorchFunction():
        out = torch.Tensor.clone(t)
    out._fake_pinned = True  # type: ignore[attr-defined]  # what is_pinned reads
    return out


def _move(t: torch.Tensor, target: str) -> torch.Tensor:
    """``t`` on the ``target`` device type: itself if there already, else a copy."""
    if (target == "cuda") == _is_cuda(t):
        return t
    with torch._C.DisableTorchFunction():
        copied = torch.Tensor.clone(t)
    return _on_cuda(copied, []) if target == "cuda" else _plain(copied)


def _to(args, kwargs) -> torch.Tensor:
    """``Tensor.to`` in each of its forms (device, dtype, another tensor, memory format)."""
    self, rest = args[0], list(args[1:])
    if rest and isinstance(rest[0], torch.Tensor):  # to(other): other's device and dtype
        other = rest.pop(0)
        rest = [other.device, other.dtype, *rest]
    copy = kwargs.pop("copy", False)
    device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*rest, **kwargs)
    target = _device_type(device) or ("cuda" if _is_cuda(self) else "cpu")
    moved = _move(self, target)
    with torch._C.DisableTorchFunction():
        out = torch.Tensor.to(
            moved,
            dtype=dtype or moved.dtype,
            non_blocking=non_blocking,
            copy=copy and moved is self,
            memory_format=memory_format or torch.preserve_format,
        )
    return out if out is moved else _on_cuda(out, []) if target == "cuda" else out


def _pool_of(gpu: FakeGpu) -> type:
    """A thread pool whose work runs under fake CUDA too (a mode holds in one thread)."""

    class Pool(concurrent.futures.ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            @functools.wraps(fn)
            def inside(*a, **k):
                with FakeCudaMode(gpu):
                    return fn(*a, **k)

            return super().submit(inside, *args, **kwargs)

    return Pool


def _load(original, *args, map_location=None, **kwargs):
    """``torch.load`` onto fake CUDA: loaded on the CPU, CUDA's tensors made fake ones."""
    out = original(*args, map_location="cpu", **kwargs)
    if _device_type(map_location) == "cuda":
        out = _on_cuda(out, [])
    return out


@contextlib.contextmanager
def fake_cuda(free_bytes: int = 80 * 2**30) -> Iterator[FakeGpu]:
    """A pretended CUDA GPU with ``free_bytes`` free memory, for the block's duration."""
    cuda, gpu = torch.cuda, FakeGpu()
    patches: dict[tuple[Any, str], Any] = {
        (cuda, "is_available"): lambda: True,
        (cuda, "device_count"): lambda: 1,
        (cuda, "current_device"): lambda: 0,
        (cuda, "set_device"): lambda device: None,
        (cuda, "get_device_name"): lambda device=None: "fake CUDA (dlrun.testing.fake_cuda)",
        (cuda, "is_bf16_supported"): lambda including_emulation=True: True,
        (cuda, "synchronize"): lambda device=None: None,
        (cuda, "mem_get_info"): lambda device=None: (free_bytes, free_bytes),
        (cuda, "max_memory_allocated"): lambda device=None: 0,
        (cuda, "get_rng_state_all"): lambda: [torch.zeros(16, dtype=torch.uint8)],
        (cuda, "set_rng_state_all"): lambda states: None,
        (torch, "load"): functools.partial(_load, torch.load),
        (torch, "autocast"): _CpuAutocast,
        (concurrent.futures, "ThreadPoolExecutor"): _pool_of(gpu),
    }
    saved = {key: getattr(*key) for key in patches}
    cudnn = torch.backends.cudnn
    flags = (torch.backends.cuda.matmul.allow_tf32, cudnn.allow_tf32, cudnn.enabled)
    overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
    for (owner, name), value in patches.items():
        setattr(owner, name, value)
    # Module.to(cuda) must make new Parameters (FakeCudaTensor ones), not swap .data.
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    cudnn.enabled = False  # RNNs would hand cuDNN (on a CUDA build) their CPU weights
    try:
        with FakeCudaMode(gpu):
            yield gpu
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(overwrite)
        for (owner, name), value in saved.items():
            setattr(owner, name, value)
        torch.backends.cuda.matmul.allow_tf32, cudnn.allow_tf32, cudnn.enabled = flags


class _CpuAutocast(torch.amp.autocast_mode.autocast):
    """``torch.autocast`` with "cuda" made "cpu": the tensors are CPU tensors underneath."""

    def __init__(self, device_type: str, *args, **kwargs):
        super().__init__("cpu" if device_type == "cuda" else device_type, *args, **kwargs)
