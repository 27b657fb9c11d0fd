"""What one architecture file declares: :class:`Architecture`.

An architecture is an HF ``model_type`` (also :attr:`ModelConfig.arch`) and holds everything
that differs between model families: the facts :mod:`msm_megatron.models.hf_config` needs to map
its ``config.json`` to a :class:`~msm_megatron.config.ModelConfig` and back, and the weight
mapping (:class:`~msm_megatron.weight_mapping.ArchSpec`) the conversion engine walks.
Everything shared by all architectures (field names, types, generic checks) stays in
``hf_config`` and in the conversion engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from msm_megatron.weight_mapping import ArchSpec


@dataclass(frozen=True)
class Architecture:
    """One supported HF ``model_type``.

    Attributes:
        name: HF ``model_type`` = :attr:`ModelConfig.arch` = the module's file name.
        hf_class: the transformers class written to ``config.json``'s ``architectures``.
        qkv_bias: q/k/v projections have biases (HF does not spell this out in ``config.json``).
        qk_norm: per-head RMSNorm of q and k before RoPE (likewise implicit in HF).
        hf_defaults: defaults of this architecture's HF config class that differ from the
            common ones in :data:`msm_megatron.models.hf_config.HF_DEFAULTS` (e.g. Qwen3's
            ``head_dim`` = 128 rather than hidden/heads), applied to keys a ``config.json`` omits.
        llama3_rope_scaling: ``rope_scaling`` of type ``llama3`` (Llama-3.1) is accepted; for
            other architectures any RoPE scaling is refused.
        hf_off_flags: boolean fields of this HF config class that switch on something
            :class:`ModelConfig` does not model, each with why: written as ``false`` on export,
            refused when ``true`` on import.
        weights: the HF ⇄ Megatron weight mapping.
    """

    name: str
    hf_class: str
    qkv_bias: bool
    qk_norm: bool
    weights: ArchSpec
    hf_defaults: dict[str, Any] = field(default_factory=dict)
    llama3_rope_scaling: bool = False
    hf_off_flags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.weights.model_type != self.name:
            raise ValueError(f"architecture '{self.name}': its weight mapping is for "
                             f"'{self.weights.model_type}'")
