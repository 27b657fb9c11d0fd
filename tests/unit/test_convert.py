"""HF ⇄ Megatron conversion on CPU, one process: bit-exact round trips, layouts, errors.

Every registered architecture (``msm_megatron.architectures.names()``) is covered, tied and
untied, with tiny random models built by the real transformers classes. Logit parity at TP/PP
lives in tests/distributed/test_convert.py.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from msm_megatron import architectures
from msm_megatron.config import ConfigError
from msm_megatron.convert import arch_spec
from msm_megatron.convert.engine import hf_to_megatron, megatron_to_hf
from msm_megatron.convert.hf_io import HFCheckpoint
from msm_megatron.convert.megatron_io import MegatronCheckpoint
from msm_megatron.models.hf_config import load_hf_config
from msm_megatron.weight_mapping import FusedQKV
from tests.helpers.convert_models import save_random_hf_model


def hf_tensors(path) -> dict[str, torch.Tensor]:
    src = HFCheckpoint(path)
    return {name: src.get(name) for name in src.keys()}


def assert_identical(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("model_type", architectures.names())
def test_round_trip_is_bit_exact(model_type, tied, tmp_path):
    hf = save_random_hf_model(model_type, tmp_path / "hf", tied=tied)
    hf_to_megatron(hf, tmp_path / "meg", progress=False)
    megatron_to_hf(tmp_path / "meg", tmp_path / "back", progress=False)
    assert_identical(hf_tensors(hf), hf_tensors(tmp_path / "back"))
    # the exported config reads back as the same model, and tied models have no lm_head
    assert load_hf_config(tmp_path / "back") == dataclasses.replace(
        load_hf_config(hf), hf_path=str(tmp_path / "back"))
    assert ("lm_head.weight" in hf_tensors(tmp_path / "back")) is not tied


def test_bf16_sharded_round_trip_keeps_dtype_and_shards(tmp_path):
    hf = save_random_hf_model("qwen2", tmp_path / "hf", dtype=torch.bfloat16,
                              max_shard_size="100KB")
    assert (hf / "model.safetensors.index.json").exists()
    hf_to_megatron(hf, tmp_path / "meg", progress=False)
    assert MegatronCheckpoint(tmp_path / "meg").dtype(
        "decoder.layers.self_attention.linear_qkv.weight") == torch.bfloat16
    megatron_to_hf(tmp_path / "meg", tmp_path / "back", max_shard_size="100KB", progress=False)
    index = json.loads((tmp_path / "back" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert_identical(hf_tensors(hf), hf_tensors(tmp_path / "back"))
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16"


def test_export_loads_in_transformers_with_same_logits(tmp_path):
    import transformers

    hf = save_random_hf_model("qwen3", tmp_path / "hf")
    hf_to_megatron(hf, tmp_path / "meg", progress=False)
    megatron_to_hf(tmp_path / "meg", tmp_path / "back", progress=False)
    tokens = torch.randint(0, 300, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = transformers.AutoModelForCausalLM.from_pretrained(hf)(tokens).logits
        b = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back")(tokens).logits
    assert torch.equal(a, b)


def test_fp32_cast_on_import(tmp_path):
    hf = save_random_hf_model("llama", tmp_path / "hf", dtype=torch.bfloat16)
    hf_to_megatron(hf, tmp_path / "meg", dtype="fp32", progress=False)
    ckpt = MegatronCheckpoint(tmp_path / "meg")
    assert ckpt.dtype("embedding.word_embeddings.weight") == torch.float32
    megatron_to_hf(tmp_path / "meg", tmp_path / "back", dtype="bf16", progress=False)
    assert_identical(hf_tensors(hf), hf_tensors(tmp_path / "back"))  # bf16 -> fp32 is exact


def test_qkv_is_interleaved_per_query_group():
    """Megatron's fused QKV: for each KV group, its H/G query heads, then k_g, then v_g."""
    model = load_hf_config_dict(arch_spec("qwen3").toy_hf_config)  # 4 heads, 2 groups, hd 32
    heads, groups, hd = model.num_attention_heads, model.num_key_value_heads, model.kv_channels
    q = torch.arange(heads * hd).float().unsqueeze(1) + 1000  # row ids
    k = torch.arange(groups * hd).float().unsqueeze(1) + 2000
    v = torch.arange(groups * hd).float().unsqueeze(1) + 3000
    mapping = FusedQKV("q", "k", "v", "qkv")
    fused = mapping.to_megatron([q, k, v], model, 0)[:, 0]
    per = heads // groups
    expected = []
    for g in range(groups):
        expected += list(q[g * per * hd:(g + 1) * per * hd, 0])
        expected += list(k[g * hd:(g + 1) * hd, 0]) + list(v[g * hd:(g + 1) * hd, 0])
    assert fused.tolist() == torch.stack(expected).tolist()
    assert all(torch.equal(a, b) for a, b in zip(mapping.to_hf(fused.unsqueeze(1), model),
                                                 [q, k, v], strict=True))


def load_hf_config_dict(fields: dict):
    from msm_megatron.models.hf_config import model_config_from_hf

    return model_config_from_hf(fields)


def test_vocab_is_padded_with_zero_rows_and_cut_exactly(tmp_path):
    hf = save_random_hf_model("qwen2", tmp_path / "hf")  # vocab 333
    hf_to_megatron(hf, tmp_path / "meg", progress=False)
    emb = MegatronCheckpoint(tmp_path / "meg").read("embedding.word_embeddings.weight")
    assert emb.shape[0] == 1024  # 128 × 8: the same padded size at TP 1, 2, 4, 8
    assert torch.equal(emb[:333], HFCheckpoint(hf).get("model.embed_tokens.weight"))
    assert not emb[333:].any()


def test_assets_travel_with_the_checkpoint(tmp_path):
    hf = save_random_hf_model("qwen3", tmp_path / "hf")
    (hf / "tokenizer_config.json").write_text('{"model_max_length": 128}')
    (hf / "generation_config.json").write_text('{"eos_token_id": 7}')
    hf_to_megatron(hf, tmp_path / "meg", progress=False)
    megatron_to_hf(tmp_path / "meg", tmp_path / "back", progress=False)
    for name in ("tokenizer_config.json", "generation_config.json"):
        assert (tmp_path / "back" / name).read_text() == (hf / name).read_text()
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"]


# --- clear errors ------------------------------------------------------------------------


def test_config_disagreeing_with_weights_names_tensor_file_and_fields(tmp_path):
    hf = save_random_hf_model("qwen3", tmp_path / "hf")
    config = json.loads((hf / "config.json").read_text())
    config["head_dim"] = 16  # the weights have 32
    (hf / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError) as err:
        hf_to_megatron(hf, tmp_path / "meg", progress=False)
    text = str(err.value)
    assert "model.layers.0.self_attn.q_proj.weight" in text and "model.safetensors" in text
    assert "num_attention_heads × head_dim" in text
    assert not (tmp_path / "meg").exists()  # nothing half-written


def test_missing_shard_is_reported(tmp_path):
    hf = save_random_hf_model("llama", tmp_path / "hf", max_shard_size="50KB")
    shard = sorted(hf.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(ConfigError, match=f"missing: {shard.name}"):
        hf_to_megatron(hf, tmp_path / "meg", progress=False)


def test_missing_tensor_is_reported(tmp_path):
    hf = save_random_hf_model("qwen3", tmp_path / "hf", tied=True)
    config = json.loads((hf / "config.json").read_text())
    config["tie_word_embeddings"] = False  # now lm_head.weight is required but absent
    (hf / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="missing tensor lm_head.weight"):
        hf_to_megatron(hf, tmp_path / "meg", progress=False)


def test_unsupported_architecture(tmp_path):
    hf = save_random_hf_model("qwen3", tmp_path / "hf")
    config = json.loads((hf / "config.json").read_text())
    config["model_type"] = "gemma3"
    (hf / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="unsupported HF model_type 'gemma3'"):
        hf_to_megatron(hf, tmp_path / "meg", progress=False)


def test_no_weights_and_not_a_checkpoint(tmp_path):
    hf = save_random_hf_model("qwen3", tmp_path / "hf")
    (hf / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="no model.safetensors"):
        hf_to_megatron(hf, tmp_path / "meg", progress=False)
    with pytest.raises(ConfigError, match="not a Megatron torch_dist checkpoint"):
        megatron_to_hf(hf, tmp_path / "out", progress=False)


def test_export_refuses_a_checkpoint_of_another_shape(tmp_path):
    hf = save_random_hf_model("qwen3", tmp_path / "hf")
    hf_to_megatron(hf, tmp_path / "meg", progress=False)
    meta = json.loads((tmp_path / "meg" / "msm_convert.json").read_text())
    meta["model"]["intermediate_size"] = 128
    (tmp_path / "meg" / "msm_convert.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="linear_fc1.weight has shape"):
        megatron_to_hf(tmp_path / "meg", tmp_path / "out", progress=False)


def test_refuses_to_overwrite_a_checkpoint(tmp_path):
    hf = save_random_hf_model("qwen3", tmp_path / "hf")
    hf_to_megatron(hf, tmp_path / "meg", progress=False)
    with pytest.raises(ConfigError, match="already holds a checkpoint"):
        hf_to_megatron(hf, tmp_path / "meg", progress=False)
    shutil.rmtree(tmp_path / "meg")


def test_streamed_safetensors_are_valid_files(tmp_path):
    hf = save_random_hf_model("qwen2", tmp_path / "hf")
    hf_to_megatron(hf, tmp_path / "meg", progress=False)
    megatron_to_hf(tmp_path / "meg", tmp_path / "back", progress=False)
    # the reference reader parses our hand-written header and byte ranges
    assert_identical(load_file(hf / "model.safetensors"),
                     load_file(tmp_path / "back" / "model.safetensors"))


def test_arch_spec_is_the_registry_weight_mapping():
    for name in architectures.names():
        assert arch_spec(name) is architectures.get(name).weights
    with pytest.raises(ConfigError, match="unsupported model_type 'gemma3'; supported: "):
        arch_spec("gemma3")
