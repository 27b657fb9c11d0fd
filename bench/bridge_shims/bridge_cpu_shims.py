"""Import shims that let Megatron-Bridge 0.6.2 import on CPU-only Python 3.11.

Used only by ``bench/bridge_convert.py`` (which prepends this directory to ``sys.path``); never
imported by ``msm_megatron``. Each shim is keyed to the exact pinned versions (megatron-core
0.19.2, megatron-bridge 0.6.2) and fails loudly if the code it patches has changed.

1. ``typing.override`` (Python 3.12+) is imported by ``megatron.training.models.{gpt,hybrid}``
   (shipped in the megatron-core wheel and pulled in by ``megatron.bridge.utils.common_utils``).
   On 3.11 we alias it to ``typing_extensions.override`` (an identity decorator).
2. ``megatron.core.transformer.moe.ops.paged_stash`` does ``import triton`` at import time (MoE
   paged-stash kernels, CUDA-only); ``megatron.core.pipeline_parallel.schedules`` imports it
   unconditionally. We register a stand-in with the same three names whose kernels raise if
   ever called. (Installing a *generic* ``triton`` stub instead would break torch itself, and the
   real triton wheel is ~290 MB for code that never runs on CPU.)
3. ``megatron.bridge.peft.lora_layers`` does ``import transformer_engine.pytorch as te``
   unconditionally (fused LoRA branches; pulled in by ``model_bridge -> peft_bridge ->
   canonical_lora``). A fake top-level ``transformer_engine`` would make Megatron-Core believe
   TE is installed, so instead this one module is executed from its real source with that single
   import line replaced by a local stand-in ``te`` whose classes match nothing (``isinstance``
   checks are False) and whose constructors raise. Nothing else sees the stand-in.

``enable_cpu_runtime()`` adds three runtime stand-ins (no-ops when CUDA is available) for the
``torch.cuda`` calls that HF -> Megatron save and Megatron -> HF export reach on CPU:
``get_rng_state`` (an RNG snapshot stored in the checkpoint), ``synchronize`` (dist-checkpoint
writer) and ``current_device`` (bookkeeping tensors of the dist-checkpoint save). Nothing else
of Megatron needed adapting for conversion: Bridge builds the model with
``use_cpu_initialization=True`` and skips weight initialisation, so no CUDA RNG is touched.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import typing

PAGED_STASH = "megatron.core.transformer.moe.ops.paged_stash"
LORA_LAYERS = "megatron.bridge.peft.lora_layers"
_TE_IMPORT_LINE = "import transformer_engine.pytorch as te\n"
EXPECTED_VERSIONS = {"megatron-core": "0.19.", "megatron-bridge": "0.6.2"}


def check_versions() -> None:
    """Refuse versions these shims were not written for."""
    from importlib.metadata import version

    for dist, prefix in EXPECTED_VERSIONS.items():
        found = version(dist)
        if not found.startswith(prefix):
            raise RuntimeError(
                f"bench/bridge_shims was written for {dist} {prefix}*, found {found}; "
                "re-run bench/bridge_env.sh or update the shims"
            )


def _unavailable(what: str):
    def fail(*args, **kwargs):
        raise RuntimeError(f"{what} is not available in the CPU bridge environment")

    return fail


def _paged_stash_standin() -> types.ModuleType:
    mod = types.ModuleType(PAGED_STASH, "CPU stand-in for the triton MoE paged-stash kernels")
    mod.GLOBAL_BLOCK_SIZE = 1024  # value in megatron-core 0.19.2
    mod.paged_stash_copy_kernel = _unavailable("triton kernel paged_stash_copy_kernel")
    mod.paged_stash_pop_kernel = _unavailable("triton kernel paged_stash_pop_kernel")
    mod.__all__ = ["GLOBAL_BLOCK_SIZE", "paged_stash_copy_kernel", "paged_stash_pop_kernel"]
    return mod


class _Namespace(types.SimpleNamespace):
    """Attribute access yields a fresh class that no real object is an instance of."""

    def __init__(self, name: str):
        super().__init__()
        object.__setattr__(self, "_name", name)

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        qual = f"{self._name}.{attr}"
        value = type(attr, (), {"__init__": _unavailable(qual), "__qualname__": qual})
        setattr(self, attr, value)
        return value


def _te_standin() -> types.SimpleNamespace:
    te = _Namespace("transformer_engine.pytorch(stand-in)")
    te.ops = _Namespace("transformer_engine.pytorch.ops(stand-in)")
    return te


class _LoraLayersLoader(importlib.abc.Loader):
    """Executes the real lora_layers source with its TE import replaced by a local stand-in."""

    def __init__(self, real_spec: importlib.machinery.ModuleSpec):
        self.real_spec = real_spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        path = self.real_spec.origin
        with open(path, encoding="utf-8") as fh:
            source = fh.read()
        if source.count(_TE_IMPORT_LINE) != 1:
            raise RuntimeError(f"{path} changed; update bench/bridge_shims/bridge_cpu_shims.py")
        source = source.replace(_TE_IMPORT_LINE, "te = __bridge_te_standin__\n")
        module.__dict__["__bridge_te_standin__"] = _te_standin()
        exec(compile(source, path, "exec"), module.__dict__)


class _ShimFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != LORA_LAYERS:
            return None
        real = importlib.machinery.PathFinder.find_spec(fullname, path)
        if real is None:
            return None
        spec = importlib.util.spec_from_file_location(
            fullname, real.origin, loader=_LoraLayersLoader(real)
        )
        return spec


_installed = False


def install() -> None:
    """Install all shims (idempotent). Call before importing megatron."""
    global _installed
    if _installed:
        return
    check_versions()
    if sys.version_info < (3, 12) and not hasattr(typing, "override"):
        import typing_extensions

        typing.override = typing_extensions.override
    if importlib.util.find_spec("triton") is None:
        sys.modules.setdefault(PAGED_STASH, _paged_stash_standin())
    if importlib.util.find_spec("transformer_engine") is None:
        sys.meta_path.insert(0, _ShimFinder())
    _installed = True


def enable_cpu_runtime() -> None:
    """Runtime CPU adaptations (call after ``import torch``, before converting). No-op with CUDA."""
    import torch

    if torch.cuda.is_available():
        return
    # save_megatron_model stores an RNG snapshot (torch.cuda.get_rng_state) in the checkpoint.
    torch.cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()
    # The dist-checkpoint writer syncs the device after staging tensors to host memory.
    torch.cuda.synchronize = lambda *a, **k: None
    # Megatron places small bookkeeping tensors (e.g. the dist-checkpoint failure flag that is
    # all-reduced after a save) on torch.cuda.current_device().
    torch.cuda.current_device = lambda: "cpu"
