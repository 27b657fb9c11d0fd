"""Run Megatron-Core on CPU (gloo) for tests and the demo.

Megatron-Core assumes CUDA in ~70 places and no flag turns that off. This module is the *only*
place that adapts it, is a no-op when CUDA is available, and refuses Megatron-Core versions it was
not written against. What it changes (see ``docs/parallelism.md``):

1. RNG: the tensor-parallel RNG tracker keeps CPU generator states; Megatron's
   ``_get_cuda_rng_state`` / ``_set_cuda_rng_state`` read/write the CPU generator.
2. ``torch.cuda.current_device()`` returns ``"cpu"`` (Megatron places tensors with it).
3. A global ``TorchFunctionMode`` rewrites ``device="cuda"`` in factory calls, ``.cuda()`` and
   ``.to("cuda")`` to CPU.
4. The same mode reports CUDA type strings from ``Tensor.type()`` (Megatron's optimizer and grad
   clipping classify parameters by ``'torch.cuda.FloatTensor'``).
5. Streams, events, ``synchronize`` and ``empty_cache`` become no-op stand-ins.

Call :func:`enable` before building any Megatron object.
"""

from __future__ import annotations

import contextlib
import functools
import logging

import torch
from torch.overrides import TorchFunctionMode

SUPPORTED_MEGATRON_CORE = ("0.19.",)

_CUDA_TYPE_NAMES = {
    torch.float32: "torch.cuda.FloatTensor",
    torch.float16: "torch.cuda.HalfTensor",
    torch.bfloat16: "torch.cuda.BFloat16Tensor",
    torch.float64: "torch.cuda.DoubleTensor",
    torch.int64: "torch.cuda.LongTensor",
    torch.int32: "torch.cuda.IntTensor",
    torch.uint8: "torch.cuda.ByteTensor",
    torch.bool: "torch.cuda.BoolTensor",
}

_enabled = False


def _is_cuda_device(device) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, int) and not isinstance(device, bool)


class _CudaToCpuMode(TorchFunctionMode):
    """Rewrites CUDA placement to CPU and reports CUDA type strings for CPU tensors."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            return _CUDA_TYPE_NAMES.get(args[0].dtype, func(*args))
        if _is_cuda_device(kwargs.get("device")):
            kwargs["device"] = "cpu"
        if func is torch.Tensor.to and args:  # .to(0) / .to("cuda"); new_zeros' ints are sizes
            args = tuple("cpu" if i > 0 and _is_cuda_device(a) else a for i, a in enumerate(args))
        return func(*args, **kwargs)


class _NoOpStream:
    """Stand-in for ``torch.cuda.Stream``/``Event``: every method does nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):
        return lambda *a, **k: None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _cpu_rng_get(device="cuda", clone=False, graph_safe=False):
    return torch.get_rng_state()


def _cpu_rng_set(new_state, device=-1, graph_safe=False):
    torch.set_rng_state(new_state)


def _seeded_state(seed: int) -> torch.Tensor:
    return torch.Generator().manual_seed(seed).get_state()


def _patch_rng() -> None:
    from megatron.core.tensor_parallel import random as mrandom

    class CpuRNGStatesTracker(mrandom.CudaRNGStatesTracker):
        """Megatron's tracker with CPU generator states instead of CUDA ones."""

        def add(self, name, seed):
            if seed in self.seeds_:
                raise Exception(f"seed {seed} already exists")
            if name in self.states_:
                raise Exception(f"rng state {name} already exists")
            self._is_initialized = True
            self.seeds_.add(seed)
            self.states_[name] = _seeded_state(seed)

    mrandom.CudaRNGStatesTracker = CpuRNGStatesTracker
    mrandom._get_cuda_rng_state = _cpu_rng_get
    mrandom._set_cuda_rng_state = _cpu_rng_set
    # Forks run CPU ops on purpose here; Megatron's "CPU RNG changed" warning is expected.
    logging.getLogger(mrandom.__name__).setLevel(logging.ERROR)


def _patch_torch_cuda() -> None:
    cuda = torch.cuda
    cuda.current_device = lambda: "cpu"
    cuda.synchronize = lambda *a, **k: None
    cuda.empty_cache = lambda: None
    cuda.Stream = _NoOpStream
    cuda.Event = _NoOpStream
    cuda.current_stream = lambda *a, **k: _NoOpStream()
    cuda.default_stream = lambda *a, **k: _NoOpStream()
    cuda.stream = lambda *a, **k: contextlib.nullcontext()
    cuda.set_stream = lambda *a, **k: None
    cuda.manual_seed = lambda seed: None
    cuda.manual_seed_all = lambda seed: None
    cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()
    cuda.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    cuda.memory_allocated = lambda *a, **k: 0
    cuda.max_memory_allocated = lambda *a, **k: 0
    cuda.memory_reserved = lambda *a, **k: 0
    cuda.max_memory_reserved = lambda *a, **k: 0
    cuda.reset_peak_memory_stats = lambda *a, **k: None


def check_version() -> str:
    """Return the installed megatron-core version, raising if this module does not cover it."""
    from megatron.core import package_info

    version = package_info.__version__
    if not version.startswith(SUPPORTED_MEGATRON_CORE):
        raise RuntimeError(
            f"msm_megatron._compat.megatron_cpu was written for megatron-core "
            f"{'/'.join(v + 'x' for v in SUPPORTED_MEGATRON_CORE)}, found {version}. "
            "Install megatron-core==0.19.2 (make setup) or update the CPU adaptations."
        )
    return version


@functools.cache
def enable() -> bool:
    """Apply the CPU adaptations once per process. Returns True if they are active."""
    global _enabled
    if torch.cuda.is_available():
        return False
    if _enabled:  # a second run in the same process (Python API, a test's rank pool)
        return True
    check_version()
    _patch_torch_cuda()
    _patch_rng()
    _CudaToCpuMode().__enter__()  # global for the process lifetime, by design
    _enabled = True
    return True


def is_enabled() -> bool:
    """Whether the CPU adaptations are active in this process."""
    return _enabled
