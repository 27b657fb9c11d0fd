"""HF ⇄ Megatron checkpoint conversion, driven by one declarative mapping per architecture.

Adding an architecture = one module here with an ``ARCH`` (:class:`~.spec.ArchSpec`, including a
tiny HF config for the tests) and its name in :data:`ARCH_MODULES`; the tests iterate the registry.
"""

from __future__ import annotations

import importlib

from msm_megatron.config import ConfigError
from msm_megatron.convert.spec import ArchSpec

ARCH_MODULES = ("qwen3", "qwen2", "llama")


def arch_spec(model_type: str) -> ArchSpec:
    """The mapping for an HF ``model_type``; a clear error for anything else."""
    if model_type not in ARCH_MODULES:
        raise ConfigError(f"no checkpoint conversion for model_type '{model_type}'; supported: "
                          f"{', '.join(ARCH_MODULES)} (add one in msm_megatron/convert/)")
    return importlib.import_module(f"msm_megatron.convert.{model_type}").ARCH


def all_arch_specs() -> list[ArchSpec]:
    """Every registered architecture (drives the conversion tests)."""
    return [arch_spec(name) for name in ARCH_MODULES]
