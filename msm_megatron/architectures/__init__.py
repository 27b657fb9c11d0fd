"""The supported architectures: one module per HF ``model_type``, found by listing this package.

Each public module here (``qwen3.py`` …) defines ``ARCH``, an
:class:`Architecture` holding both halves of what differs between model families: how its HF
``config.json`` maps to a :class:`~msm_megatron.config.ModelConfig` (used by
:mod:`msm_megatron.models.hf_config`) and how its weights map to Megatron's (an
:class:`ArchSpec`, walked by :mod:`msm_megatron.convert.engine`). Modules whose name starts with
``_`` are the shared machinery, not architectures.

Adding an architecture is adding one file here whose name is the HF ``model_type``: config
validation (``model.arch``), HF config mapping, checkpoint conversion and the tests that iterate
:func:`names` pick it up. Nothing here imports torch or megatron (the planner builds on it).

Example::

    from msm_megatron import architectures
    "qwen3" in architectures.names()           # True
    architectures.get("qwen3").hf_class        # 'Qwen3ForCausalLM'
    architectures.get("qwen3").weights         # its ArchSpec (msm_megatron.convert.arch_spec)
"""

from __future__ import annotations

import importlib

from msm_megatron.architectures._base import Architecture
from msm_megatron.config import ConfigError, architecture_names
from msm_megatron.weight_mapping import ArchSpec

__all__ = ["ArchSpec", "Architecture", "get", "names"]


def names() -> tuple[str, ...]:
    """Every supported architecture (HF ``model_type``), sorted; the modules are not imported.

    The listing of this package's folder, done by :func:`msm_megatron.config.architecture_names`
    so that config validation (the layer below) sees the same names without importing this.
    """
    return architecture_names()


def get(name: str, what: str = "architecture") -> Architecture:
    """The architecture called ``name``.

    Args:
        name: HF ``model_type`` / ``model.arch``.
        what: how the caller's error message should call ``name`` (``"HF model_type"`` …).

    Raises:
        ConfigError: ``name`` is not supported; the message lists the supported names.
    """
    if name not in names():
        raise ConfigError(f"unsupported {what} '{name}'; supported: {', '.join(names())}")
    arch = importlib.import_module(f"{__name__}.{name}").ARCH
    if arch.name != name:
        raise ConfigError(f"{__name__}.{name} defines the architecture '{arch.name}'; an "
                          f"architecture's name must be its module's name")
    return arch
