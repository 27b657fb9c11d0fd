"""HF config.json <-> ModelConfig mapping for qwen3, qwen2 and llama."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from msm_megatron import architectures
from msm_megatron.config import ConfigError
from msm_megatron.models.hf_config import (
    hf_config_from_model,
    load_hf_config,
    model_config_from_hf,
)
from msm_megatron.recipes.llama import LLAMA3_1_8B
from msm_megatron.recipes.qwen2 import QWEN2_5_7B, QWEN2_5_14B, QWEN2_5_32B
from msm_megatron.recipes.qwen3 import QWEN3_8B, QWEN3_14B, QWEN3_32B
from msm_megatron.recipes.toy import QWEN3_TOY

SHAPES = {
    "qwen3_toy": QWEN3_TOY,
    "qwen3_8b": QWEN3_8B,
    "qwen3_14b": QWEN3_14B,
    "qwen3_32b": QWEN3_32B,
    "qwen2_5_7b": QWEN2_5_7B,
    "qwen2_5_14b": QWEN2_5_14B,
    "qwen2_5_32b": QWEN2_5_32B,
    "llama3_1_8b": LLAMA3_1_8B,
}


def test_qwen3_mapping():
    m = model_config_from_hf(QWEN3_32B, hf_path="Qwen/Qwen3-32B")
    assert (m.arch, m.qk_norm, m.qkv_bias) == ("qwen3", True, False)
    assert (m.hidden_size, m.intermediate_size, m.num_layers) == (5120, 25600, 64)
    assert (m.num_attention_heads, m.num_key_value_heads, m.head_dim) == (64, 8, 128)
    assert m.kv_channels == 128 != m.hidden_size // m.num_attention_heads
    assert (m.rope_theta, m.rms_norm_eps, m.max_position_embeddings) == (1e6, 1e-6, 40960)
    assert m.tie_word_embeddings is False and m.init_method_std == 0.02
    assert m.hf_path == "Qwen/Qwen3-32B"
    assert isinstance(m.rope_theta, float)


def test_qwen2_mapping_has_bias_no_qk_norm_and_no_head_dim():
    m = model_config_from_hf(QWEN2_5_32B)
    assert (m.arch, m.qk_norm, m.qkv_bias) == ("qwen2", False, True)
    assert m.head_dim is None and m.kv_channels == 128
    assert m.rms_norm_eps == 1e-5 and m.vocab_size == 152064


def test_llama_mapping():
    m = model_config_from_hf(LLAMA3_1_8B)
    assert (m.arch, m.qk_norm, m.qkv_bias) == ("llama", False, False)
    assert m.rope_theta == 500000.0 and m.num_layers == 32


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_hf_round_trip_is_exact(name):
    hf = SHAPES[name]
    out = hf_config_from_model(model_config_from_hf(hf))
    for key, value in hf.items():
        assert out[key] == value, key
        assert type(out[key]) is type(value) or isinstance(value, int | float), key


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_model_round_trip_is_exact(name):
    model = model_config_from_hf(SHAPES[name], hf_path=None)
    assert model_config_from_hf(hf_config_from_model(model)) == model


def test_hf_export_describes_the_architecture():
    out = hf_config_from_model(model_config_from_hf(QWEN2_5_7B))
    assert out["architectures"] == ["Qwen2ForCausalLM"] and out["model_type"] == "qwen2"
    assert "head_dim" not in out and out["hidden_act"] == "silu" and out["rope_scaling"] is None


def test_unsupported_model_type_lists_supported():
    with pytest.raises(ConfigError) as exc:
        model_config_from_hf({**QWEN3_TOY, "model_type": "mistral"})
    assert "mistral" in str(exc.value)
    for arch in architectures.names():
        assert arch in str(exc.value)


def test_missing_model_type():
    hf = dict(QWEN3_TOY)
    del hf["model_type"]
    with pytest.raises(ConfigError, match="model_type"):
        model_config_from_hf(hf)


@pytest.mark.parametrize("key", ["hidden_size", "num_hidden_layers", "vocab_size"])
def test_missing_required_field_is_named(key):
    hf = {k: v for k, v in QWEN3_TOY.items() if k != key}
    with pytest.raises(ConfigError, match=key):
        model_config_from_hf(hf)


def test_optional_fields_take_hf_defaults():
    hf = {
        k: QWEN3_TOY[k]
        for k in ("model_type", "vocab_size", "hidden_size", "intermediate_size")
        + ("num_hidden_layers", "num_attention_heads", "max_position_embeddings")
    }
    m = model_config_from_hf(hf)
    assert m.num_key_value_heads == m.num_attention_heads
    assert m.head_dim == 128  # Qwen3Config's default, not hidden/heads
    assert (m.rope_theta, m.rms_norm_eps, m.tie_word_embeddings) == (10000.0, 1e-6, False)


def test_llama3_rope_scaling_round_trips_and_odd_variants_are_refused():
    m = model_config_from_hf(LLAMA3_1_8B)
    assert m.rope_scaling_factor == 8.0
    assert model_config_from_hf(hf_config_from_model(m)) == m
    plain = {k: v for k, v in LLAMA3_1_8B.items() if k != "rope_scaling"}
    assert model_config_from_hf(plain).rope_scaling_factor is None
    odd = {**LLAMA3_1_8B["rope_scaling"], "high_freq_factor": 2.0}  # Megatron fixes it at 4
    with pytest.raises(ConfigError) as exc:
        model_config_from_hf({**LLAMA3_1_8B, "rope_scaling": odd})
    assert "rope_scaling" in str(exc.value) and "llama3" in str(exc.value)
    with pytest.raises(ConfigError, match="qwen3"):
        model_config_from_hf({**QWEN3_TOY, "rope_scaling": LLAMA3_1_8B["rope_scaling"]})


def test_transformers_v5_rope_parameters_are_read():
    hf = {k: v for k, v in QWEN3_TOY.items() if k != "rope_theta"}
    hf["rope_parameters"] = {"rope_theta": 5e5, "rope_type": "default"}
    assert model_config_from_hf(hf).rope_theta == 5e5
    hf["rope_parameters"] = {"rope_theta": 5e5, "rope_type": "yarn", "factor": 4.0}
    with pytest.raises(ConfigError, match="rope_parameters"):
        model_config_from_hf(hf)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"use_sliding_window": True}, "use_sliding_window"),
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"hidden_size": "64"}, "hidden_size"),
        ({"rope_theta": "1e6"}, "rope_theta"),
        ({"tie_word_embeddings": 1}, "tie_word_embeddings"),
    ],
)
def test_unsupported_or_mistyped_fields_are_named(extra, field):
    with pytest.raises(ConfigError, match=field):
        model_config_from_hf({**QWEN3_TOY, **extra})


def test_export_refuses_inexpressible_flags():
    model = dataclasses.replace(model_config_from_hf(QWEN3_TOY), qkv_bias=True)
    with pytest.raises(ConfigError, match="qkv_bias"):
        hf_config_from_model(model)


def test_load_hf_config_from_dir_and_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_32B))
    from_dir = load_hf_config(tmp_path)
    from_file = load_hf_config(tmp_path / "config.json")
    assert from_dir == from_file
    assert from_dir.hf_path == str(tmp_path) and from_dir.num_layers == 64


def test_load_hf_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_hf_config(tmp_path / "nope")
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON") as exc:
        load_hf_config(tmp_path)
    assert str(bad) in str(exc.value)
    bad.write_text(json.dumps({**QWEN3_8B, "model_type": "gemma"}))
    with pytest.raises(ConfigError) as exc:
        load_hf_config(bad)
    assert str(bad) in str(exc.value) and "gemma" in str(exc.value)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="mapping"):
        load_hf_config(bad)


def test_export_agrees_with_transformers():
    """The exported dict means the same to ``transformers``, and its own dict maps back."""
    transformers = pytest.importorskip("transformers")
    for name in ("qwen3_toy", "qwen2_5_7b", "llama3_1_8b"):
        model = model_config_from_hf(SHAPES[name])
        hf = hf_config_from_model(model)
        config = transformers.AutoConfig.for_model(**hf)
        assert config.num_key_value_heads == model.num_key_value_heads
        assert getattr(config, "head_dim", None) in (None, model.kv_channels)
        assert model_config_from_hf(config.to_dict()) == model, name


# --- the architecture registry ------------------------------------------------------------


@pytest.mark.parametrize("name", architectures.names())
def test_every_architecture_maps_its_toy_config_both_ways(name):
    arch = architectures.get(name)
    assert arch.name == arch.weights.model_type == name
    model = model_config_from_hf(arch.weights.toy_hf_config)
    assert (model.arch, model.qkv_bias, model.qk_norm) == (name, arch.qkv_bias, arch.qk_norm)
    hf = hf_config_from_model(model)
    assert hf["architectures"] == [arch.hf_class] and hf["model_type"] == name
    assert model_config_from_hf(hf) == model


def test_unknown_arch_in_a_config_names_the_field_and_the_architectures(tmp_path):
    from msm_megatron.config import Config, apply_overrides, load_yaml

    with pytest.raises(ConfigError) as exc:
        apply_overrides(Config(), ["model.arch=qwen4"])
    text = str(exc.value)
    assert "model.arch" in text and "'qwen4'" in text and "Did you mean 'qwen3'?" in text
    assert all(name in text for name in architectures.names())
    (tmp_path / "run.yaml").write_text("model:\n  arch: gemma\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: model\.arch: 'gemma' is not one of"):
        load_yaml(tmp_path / "run.yaml")
    with pytest.raises(ConfigError, match="unsupported architecture 'gemma'; supported: "):
        architectures.get("gemma")


def test_architectures_import_neither_torch_nor_the_layers_above():
    """config.py (the lowest layer) validates ``model.arch`` against the registry."""
    above = ("torch", "megatron") + tuple(
        f"msm_megatron.{m}" for m in ("convert", "train", "eval", "generate", "pipeline", "cli",
                                      "models"))
    code = (
        "import sys\n"
        "from msm_megatron import architectures\n"
        "[architectures.get(name) for name in architectures.names()]\n"
        f"above = {above!r}\n"
        "prefixes = tuple(a + '.' for a in above)\n"
        "bad = [m for m in sys.modules if m in above or m.startswith(prefixes)]\n"
        "assert not bad, bad\n"
    )
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo)
