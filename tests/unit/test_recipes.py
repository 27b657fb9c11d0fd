"""Every recipe builds, validates at its intended world size and survives a YAML round trip."""

from __future__ import annotations

import pytest

from msm_megatron.config import ConfigError, apply_overrides, load_yaml, resolve_paths, save_yaml
from msm_megatron.models.hf_config import hf_config_from_model
from msm_megatron.recipes import get_recipe, list_recipes
from msm_megatron.recipes.stages import build_recipe
from msm_megatron.validate import derive_layout, validate

ALL = list_recipes()
FULL_SIZE = [name for name in ALL if "toy" not in name and not name.endswith("_lora")]
LORA = [name for name in ALL if name.endswith("_lora")]

EXPECTED = {
    "qwen3_toy_midtrain",
    "qwen3_toy_sft",
    *(f"qwen3_{s}_{st}" for s in ("8b", "14b", "32b") for st in ("midtrain", "sft")),
    *(f"qwen2_5_{s}_{st}" for s in ("7b", "14b", "32b") for st in ("midtrain", "sft")),
    "llama3_1_8b_midtrain",
    "llama3_1_8b_sft",
    *(f"{m}_{st}_lora" for m in ("qwen3_14b", "qwen3_32b", "qwen2_5_14b", "qwen2_5_32b",
                                 "llama3_1_8b") for st in ("midtrain", "sft")),
}


def test_registry_lists_every_recipe():
    assert set(ALL) == EXPECTED and ALL == sorted(ALL)


@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_recipe_validates_at_its_world_size(name):
    cfg = get_recipe(name)
    assert cfg.name == name and cfg.train.run_dir == f"runs/{name}"
    world = cfg.parallel.world_size
    assert world is not None and world % 8 == 0  # whole 8-GPU nodes
    validate(cfg, world, te_available=True)
    assert cfg.model.hf_path and cfg.parallel.sequence_parallel == (cfg.parallel.tp > 1)


@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_recipe_needs_te_for_sequence_parallel(name):
    cfg = get_recipe(name)
    with pytest.raises(ConfigError, match="Transformer Engine"):
        validate(cfg, cfg.parallel.world_size, te_available=False)


@pytest.mark.parametrize("name", ALL)
def test_recipe_yaml_round_trip(name, tmp_path):
    cfg = get_recipe(name)
    save_yaml(cfg, tmp_path / "config.yaml")
    assert load_yaml(tmp_path / "config.yaml") == resolve_paths(cfg, tmp_path)


def test_get_recipe_returns_fresh_objects():
    a, b = get_recipe("qwen3_toy_midtrain"), get_recipe("qwen3_toy_midtrain")
    a.optim.lr = 1.0
    assert b.optim.lr == 3e-3


def test_unknown_recipe_suggests():
    with pytest.raises(ConfigError) as exc:
        get_recipe("qwen3_32b_midtrian")
    assert "qwen3_32b_midtrain" in str(exc.value) and "Did you mean" in str(exc.value)


@pytest.mark.parametrize(
    ("world", "overrides"),
    [
        (1, []),
        (2, ["parallel.tp=2"]),
        (2, ["parallel.pp=2"]),
        (4, ["parallel.tp=2", "parallel.pp=2"]),
    ],
)
def test_toy_validates_on_cpu_layouts(world, overrides):
    cfg = apply_overrides(get_recipe("qwen3_toy_midtrain"), overrides)
    validate(cfg, world, te_available=False)


def test_toy_shape():
    cfg = get_recipe("qwen3_toy_midtrain")
    m = cfg.model
    assert (m.vocab_size, m.hidden_size, m.intermediate_size, m.num_layers) == (2048, 64, 192, 4)
    assert (m.num_attention_heads, m.num_key_value_heads, m.head_dim) == (4, 2, 32)
    assert m.kv_channels != m.hidden_size // m.num_attention_heads and m.tie_word_embeddings
    assert (cfg.data.seq_length, cfg.train.precision, cfg.train.steps) == (128, "fp32", 150)
    assert (cfg.train.micro_batch_size, cfg.train.global_batch_size) == (4, 16)
    assert cfg.checkpoint.save_interval == 50
    assert cfg.data.prepared == ["runs/demo/latest/prepare_corpus-default/corpus"]


@pytest.mark.parametrize("name", [n for n in FULL_SIZE if n.endswith("_midtrain")])
def test_midtrain_stage_settings(name):
    cfg = get_recipe(name)
    layout = derive_layout(cfg, cfg.parallel.world_size)
    seq = 4096 if name.startswith("llama") else 8192  # the paper's sequence lengths
    assert cfg.data.seq_length == seq
    assert layout["tokens_per_step"] == 64 * seq  # ≈0.5M tokens/step at 8192
    # one epoch of the data (the paper's budget): steps are counted from the prepared data
    assert (cfg.train.tokens, cfg.train.epochs, layout["total_steps"]) == (None, 1.0, None)
    windows = 41_000_000 // seq  # one epoch of the ≈41M-token philosophy corpus
    assert derive_layout(cfg, cfg.parallel.world_size, epoch_samples=windows)[
        "total_steps"] == {8192: 79, 4096: 157}[seq]
    assert (cfg.train.precision, cfg.train.recompute) == ("bf16", "selective")
    assert (cfg.optim.lr, cfg.optim.min_lr, cfg.optim.warmup_fraction) == (1e-5, 1e-6, 0.05)
    assert cfg.parallel.distributed_optimizer


@pytest.mark.parametrize("name", [n for n in FULL_SIZE if n.endswith("_sft")])
def test_sft_stage_settings(name):
    cfg = get_recipe(name)
    assert cfg.train.global_batch_size == 32 and cfg.train.epochs == 1.0
    assert cfg.train.tokens is None and cfg.data.mode == "packed"
    assert cfg.data.seq_length == (4096 if name.startswith("llama") else 8192)


@pytest.mark.parametrize(
    ("name", "tp", "pp", "world"),
    [("qwen3_32b_midtrain", 8, 2, 16), ("qwen3_14b_midtrain", 4, 1, 8), ("qwen3_8b_sft", 2, 1, 8)],
)
def test_layouts(name, tp, pp, world):
    p = get_recipe(name).parallel
    assert (p.tp, p.pp, p.world_size) == (tp, pp, world)


def test_recipe_models_export_to_their_shapes():
    from msm_megatron.recipes.qwen2 import QWEN2_5_32B
    from msm_megatron.recipes.qwen3 import QWEN3_32B

    for name, shape in (("qwen3_32b_sft", QWEN3_32B), ("qwen2_5_32b_sft", QWEN2_5_32B)):
        hf = hf_config_from_model(get_recipe(name).model)
        assert {k: hf[k] for k in shape} == shape


def test_build_recipe_rejects_unknown_stage():
    from msm_megatron.recipes.qwen3 import QWEN3_8B

    with pytest.raises(ValueError, match="stage"):
        build_recipe("x", QWEN3_8B, "pretrain", hf_path="x", tp=1, world_size=8)


@pytest.mark.parametrize("name", LORA)
def test_lora_recipes_use_the_papers_settings(name):
    cfg = get_recipe(name)
    lo, o = cfg.lora, cfg.optim
    assert (lo.rank, lo.alpha, lo.dropout, lo.on_load) == (64, 128.0, 0.0, "continue")
    assert lo.targets == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                          "down_proj"]
    assert (o.lr, o.min_lr, o.weight_decay, o.warmup_fraction, o.decay_style) == (
        1e-4, 0.0, 0.01, 0.05, "cosine")
    assert cfg.data.seq_length == (4096 if name.startswith("llama") else 8192)
    assert cfg.train.spec == "local"
    assert cfg.parallel.world_size == 4
    # runs where TE is installed too: LoRA forces the local spec, without sequence parallel
    validate(cfg, 4, te_available=True)
    validate(cfg, 4, te_available=False)


def test_lora_needs_the_local_spec():
    cfg = apply_overrides(get_recipe("qwen3_32b_midtrain_lora"), ["train.spec=auto"])
    with pytest.raises(ConfigError, match="train.spec=local"):
        validate(cfg, 4, te_available=True)
