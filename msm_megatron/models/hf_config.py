"""Map HF ``config.json`` dicts to :class:`~msm_megatron.config.ModelConfig` and back.

Pure Python (no torch, no transformers). The supported HF ``model_type`` values are the
architectures of :mod:`msm_megatron.architectures` (one file each: ``qwen3``, ``qwen2``,
``llama`` …); this module holds the mapping they share and asks each for what is its own: the HF
class name, q/k norm and qkv bias, defaults of its HF config class, whether llama3 RoPE scaling
is accepted, and the HF flags it pins off.

Optional fields missing from a ``config.json`` take the defaults of the HF config class
(e.g. ``num_key_value_heads`` = heads, ``rope_theta`` = 10000, Qwen3 ``head_dim`` = 128), so a
config reads the same here as in ``transformers``. Both the classic top-level ``rope_theta`` and
transformers v5 ``rope_parameters`` are read; the writer emits top-level ``rope_theta``, which both
transformers v4 (vLLM's pin) and v5 accept.

Example::

    cfg = load_hf_config("/models/Qwen3-32B")          # a directory or its config.json
    assert hf_config_from_model(cfg)["head_dim"] == 128
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from msm_megatron import architectures
from msm_megatron.architectures import Architecture
from msm_megatron.config import ConfigError, ModelConfig

# HF key -> ModelConfig field, for the keys mapped one to one.
_RENAMES: dict[str, str] = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_attention_heads",
    "num_key_value_heads": "num_key_value_heads",
    "head_dim": "head_dim",
    "max_position_embeddings": "max_position_embeddings",
    "rope_theta": "rope_theta",
    "rms_norm_eps": "rms_norm_eps",
    "tie_word_embeddings": "tie_word_embeddings",
    "initializer_range": "init_method_std",
}
_REQUIRED = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "max_position_embeddings",
)
# Defaults of the HF config classes for optional keys (None = derive / leave unset); an
# architecture overrides those of its class that differ (Architecture.hf_defaults).
HF_DEFAULTS: dict[str, Any] = {
    "num_key_value_heads": None,  # -> num_attention_heads
    "head_dim": None,  # -> hidden_size / num_attention_heads
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
}
_INT_KEYS = {
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
}
_FLOAT_KEYS = {"rope_theta", "rms_norm_eps", "initializer_range"}


def _architecture(hf: dict) -> Architecture:
    if not isinstance(hf, dict):
        raise ConfigError(f"HF config must be a mapping, got {type(hf).__name__}")
    model_type = hf.get("model_type")
    if model_type is None:
        raise ConfigError(
            "HF config has no 'model_type'; supported: " + ", ".join(architectures.names())
        )
    return architectures.get(model_type, what="HF model_type")


def _hf_defaults(arch: Architecture) -> dict[str, Any]:
    return {**HF_DEFAULTS, **arch.hf_defaults}


# Llama-3.1 "llama3" RoPE scaling as Megatron-Core implements it (only the factor is a parameter).
LLAMA3_ROPE_FIXED = {"low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192}


def _rope_scaling_factor(hf: dict, arch: Architecture) -> float | None:
    """The llama3 RoPE scaling factor from ``rope_scaling``/``rope_parameters`` (None: plain)."""
    for field in ("rope_scaling", "rope_parameters"):
        scaling = hf.get(field)
        if not isinstance(scaling, dict):
            continue
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind == "default":
            continue
        fixed_ok = all(float(scaling.get(k, v)) == v for k, v in LLAMA3_ROPE_FIXED.items())
        if kind != "llama3" or not arch.llama3_rope_scaling or not fixed_ok:
            raise ConfigError(
                f"HF field '{field}' (rope_type '{kind}') is not supported for {arch.name}: "
                f"only plain RoPE and Llama-3.1's llama3 scaling with {LLAMA3_ROPE_FIXED} are "
                "modelled; training without it would silently change the positional encoding"
            )
        return float(scaling["factor"])
    return None


def _rope_theta(hf: dict, arch: Architecture) -> Any:
    """Read rope base from ``rope_theta`` or v5 ``rope_parameters``."""
    params = hf.get("rope_parameters")
    if isinstance(params, dict):
        if "rope_theta" in params and "rope_theta" not in hf:
            return params["rope_theta"]
    return hf.get("rope_theta", _hf_defaults(arch)["rope_theta"])


def _check_unsupported(hf: dict, arch: Architecture) -> None:
    """Reject HF options that change the computation but that ModelConfig does not model."""
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(f"HF field 'hidden_act' = '{act}' is not supported (only 'silu')")
    if hf.get("use_sliding_window"):
        raise ConfigError("HF field 'use_sliding_window' = true is not supported")
    if hf.get("mlp_bias"):
        raise ConfigError("HF field 'mlp_bias' = true is not supported")
    for key, why in arch.hf_off_flags.items():
        if hf.get(key):
            raise ConfigError(f"HF field '{key}' = true is not supported for {arch.name} ({why})")


def _typed(key: str, value: Any) -> Any:
    """Check the JSON type of one mapped value; ints stay ints, numbers become floats."""
    if value is None:
        return None
    if key in _INT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"HF field '{key}' must be an integer, got {value!r}")
        return value
    if key in _FLOAT_KEYS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"HF field '{key}' must be a number, got {value!r}")
        return float(value)
    if not isinstance(value, bool):
        raise ConfigError(f"HF field '{key}' must be true/false, got {value!r}")
    return value


def model_config_from_hf(hf: dict, hf_path: str | None = None) -> ModelConfig:
    """Build a :class:`ModelConfig` from an HF ``config.json`` dict.

    Args:
        hf: The parsed ``config.json``.
        hf_path: Optional HF repo id or directory, recorded as ``ModelConfig.hf_path``.

    Returns:
        The model config (``qkv_bias``/``qk_norm`` follow from ``model_type``'s architecture).

    Raises:
        ConfigError: unsupported ``model_type`` (lists supported ones), a missing required
            field, a wrongly typed field, or an unsupported option (e.g. ``rope_scaling``).
    """
    arch = _architecture(hf)
    missing = [key for key in _REQUIRED if hf.get(key) is None]
    if missing:
        raise ConfigError(f"HF config ({arch.name}) is missing required field(s): {missing}")
    _check_unsupported(hf, arch)
    values = _hf_defaults(arch)
    values.update({key: hf[key] for key in _RENAMES if key in hf and key != "rope_theta"})
    values["rope_theta"] = _rope_theta(hf, arch)
    kwargs = {field: _typed(key, values.get(key)) for key, field in _RENAMES.items()}
    if kwargs["num_key_value_heads"] is None:
        kwargs["num_key_value_heads"] = kwargs["num_attention_heads"]
    return ModelConfig(
        arch=arch.name,
        rope_scaling_factor=_rope_scaling_factor(hf, arch),
        qkv_bias=arch.qkv_bias,
        qk_norm=arch.qk_norm,
        hf_path=hf_path,
        **kwargs,
    )


def hf_config_from_model(cfg: ModelConfig) -> dict:
    """Write the HF ``config.json`` dict for a :class:`ModelConfig`.

    Round trip is exact for the modelled fields: ``model_config_from_hf(hf_config_from_model(m))``
    equals ``m`` (apart from ``hf_path`` and ``make_vocab_size_divisible_by``, which HF does not
    store). ``head_dim`` is written only when set. Tokenizer ids (bos/eos), ``torch_dtype`` and the
    like are not modelled: an exporter should start from the source checkpoint's ``config.json``
    and update it with this dict.

    Raises:
        ConfigError: ``arch``/``qkv_bias``/``qk_norm`` combination that HF cannot express.
    """
    arch = architectures.get(cfg.arch, what="model.arch")
    if cfg.qkv_bias != arch.qkv_bias or cfg.qk_norm != arch.qk_norm:
        raise ConfigError(
            f"model.arch={arch.name} requires qkv_bias={arch.qkv_bias} and "
            f"qk_norm={arch.qk_norm} to be expressible as an HF config "
            f"(got {cfg.qkv_bias}, {cfg.qk_norm})"
        )
    hf: dict[str, Any] = {"architectures": [arch.hf_class], "model_type": arch.name}
    for key, field in _RENAMES.items():
        value = getattr(cfg, field)
        if key == "head_dim" and value is None:
            continue
        hf[key] = value
    hf["hidden_act"] = "silu"
    hf["rope_scaling"] = None
    if cfg.rope_scaling_factor is not None:
        hf["rope_scaling"] = {"rope_type": "llama3", "factor": cfg.rope_scaling_factor,
                              **LLAMA3_ROPE_FIXED}
    hf.update(dict.fromkeys(arch.hf_off_flags, False))
    return hf


def load_hf_config(path: str | Path) -> ModelConfig:
    """Read an HF ``config.json`` (or a model directory holding one) into a ModelConfig.

    ``hf_path`` is set to the model directory. Errors name the file.

    Raises:
        ConfigError: file missing, not JSON, not a mapping, or not mappable (see
            :func:`model_config_from_hf`).
    """
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"{file}: HF config not found (expected a config.json or its directory)")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid JSON: {exc}") from exc
    try:
        return model_config_from_hf(data, hf_path=str(file.parent))
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from exc
