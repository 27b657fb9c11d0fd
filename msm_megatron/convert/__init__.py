"""HF ⇄ Megatron checkpoint conversion, driven by one declarative mapping per architecture.

The mappings live with the rest of each architecture in :mod:`msm_megatron.architectures` (one
file per HF ``model_type``, an :class:`~msm_megatron.weight_mapping.ArchSpec` each, including a tiny
HF config for the tests); adding a file there adds its conversion, and the tests iterate
:func:`msm_megatron.architectures.names`.
"""

from __future__ import annotations

from msm_megatron import architectures
from msm_megatron.weight_mapping import ArchSpec


def arch_spec(model_type: str) -> ArchSpec:
    """The weight mapping for an HF ``model_type``; a clear error for anything else."""
    return architectures.get(model_type, what="model_type").weights
