"""validate(): every error case names the key fact; derive_layout(): the derived sizes."""

from __future__ import annotations

import pytest

from msm_megatron.config import Config, ConfigError, apply_overrides
from msm_megatron.recipes import get_recipe
from msm_megatron.validate import derive_layout, validate


def toy(*overrides: str) -> Config:
    return apply_overrides(get_recipe("qwen3_toy_midtrain"), list(overrides))


def qwen32(*overrides: str) -> Config:
    return apply_overrides(get_recipe("qwen3_32b_midtrain"), list(overrides))


def error(cfg: Config, world: int, te: bool = False) -> str:
    with pytest.raises(ConfigError) as exc:
        validate(cfg, world, te_available=te)
    return str(exc.value)


def test_valid_configs_pass():
    validate(toy(), 1, te_available=False)
    validate(qwen32(), 16, te_available=True)
    validate(qwen32(), 32, te_available=True)  # more nodes just raise dp


def test_world_not_divisible_shows_factorization_and_fix():
    msg = error(qwen32(), 12, te=True)
    assert "world 12" in msg and "tp 8 × pp 2 × cp 1 = 16" in msg
    assert "multiple of 16" in msg and "parallel.tp/pp/cp" in msg


def test_nonpositive_sizes():
    assert "parallel.tp=0 must be ≥ 1" in error(toy("parallel.tp=0"), 1)
    assert "world size 0" in error(toy(), 0)


def test_heads_not_divisible_by_tp():
    msg = error(toy("parallel.tp=3", "train.global_batch_size=12"), 3)
    assert "num_attention_heads=4" in msg and "parallel.tp=3" in msg


def test_kv_heads_vs_tp():
    # 8 heads, 2 KV groups... tp=4 replicates KV evenly (4 % 2 == 0): allowed.
    validate(toy("model.num_attention_heads=8", "parallel.tp=4"), 4, te_available=False)
    msg = error(
        toy(
            "model.num_attention_heads=12",
            "model.num_key_value_heads=4",
            "parallel.tp=6",
            "train.global_batch_size=12",
        ),
        6,
    )
    assert "num_key_value_heads=4" in msg and "parallel.tp=6" in msg


@pytest.mark.parametrize("recipe, tp, valid", [
    ("qwen3_32b_midtrain", 3, [1, 2, 4, 8, 16, 32, 64]),   # 64 query / 8 KV heads
    ("qwen2_5_32b_midtrain", 5, [1, 2, 4, 8, 40]),         # 40 / 8: tp 5 splits no KV head
    ("llama3_1_8b_midtrain", 6, [1, 2, 4, 8, 16, 32]),     # 32 / 8
])
def test_a_tp_the_heads_refuse_lists_the_valid_values(recipe, tp, valid):
    """Megatron-Core's rule (transformer_config: query groups a multiple or divisor of tp, and
    whole query heads per rank), checked before any rank starts, with the sizes that work."""
    from msm_megatron.validate import tp_values

    cfg = apply_overrides(get_recipe(recipe), [f"parallel.tp={tp}", "parallel.pp=1"])
    assert tp_values(cfg.model) == valid
    assert f"valid parallel.tp for this model: {valid}" in error(cfg, tp * 2, te=True)
    for ok in valid[1:4]:  # (tp 1 would also need sequence_parallel=false)
        validate(apply_overrides(cfg, [f"parallel.tp={ok}"]), ok * 2, te_available=True)


def test_a_layout_refused_by_the_planner_starts_no_rank(tmp_path):
    """`msm train --nproc N` with a tp the heads refuse: exit 2 with the valid values, and no
    torchrun (nothing is written to the run directory)."""
    import subprocess
    import sys

    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "msm_megatron.cli", "train", "qwen3_toy_midtrain",
                           "parallel.tp=3", f"train.run_dir={run}", "--nproc", "3"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "valid parallel.tp for this model: [1, 2, 4]" in done.stderr
    assert "torch.distributed" not in done.stderr and not run.exists()


def test_zero_heads_is_an_error_not_a_crash():
    assert "must be ≥ 1" in error(toy("model.num_key_value_heads=0"), 1)


def test_gqa_groups_must_be_equal():
    assert "num_key_value_heads=3" in error(toy("model.num_key_value_heads=3"), 1)


def test_hidden_not_divisible_without_head_dim():
    msg = error(
        toy("model.head_dim=null", "model.num_attention_heads=3", "model.num_key_value_heads=1"), 1
    )
    assert "model.head_dim" in msg


def test_layers_not_divisible_by_pp():
    msg = error(toy("parallel.pp=3", "train.global_batch_size=12", "train.micro_batch_size=4"), 3)
    assert "num_layers=4" in msg and "parallel.pp=3" in msg


def test_vpp_needs_pp_and_divisibility():
    assert "requires parallel.pp > 1" in error(toy("parallel.vpp=2"), 1)
    msg = error(toy("parallel.pp=2", "parallel.vpp=4"), 2)
    assert "pp × parallel.vpp = 2 × 4" in msg
    validate(toy("parallel.pp=2", "parallel.vpp=2"), 2, te_available=False)


def test_vpp_needs_enough_microbatches():
    cfg = toy("parallel.pp=2", "parallel.vpp=2", "train.global_batch_size=4")
    assert "at least parallel.pp=2 micro-batches" in error(cfg, 2)


def test_global_batch_not_divisible():
    msg = error(toy("train.global_batch_size=10"), 2)
    assert "global_batch_size=10" in msg and "micro_batch_size × dp = 4 × 2" in msg


def test_fp8_without_te_is_refused_loudly():
    msg = error(qwen32("train.fp8=delayed", "parallel.sequence_parallel=false"), 16, te=False)
    assert "FP8 needs Transformer Engine" in msg and "silently" in msg
    assert "qwen3_32b_midtrain" in msg and "NGC PyTorch container" in msg
    validate(qwen32("train.fp8=delayed"), 16, te_available=True)


def test_fp8_with_fp32():
    assert "train.precision=fp32" in error(toy("train.fp8=delayed"), 1, te=True)


def test_sequence_parallel_rules():
    assert "requires parallel.tp > 1" in error(toy("parallel.sequence_parallel=true"), 1, te=True)
    msg = error(toy("parallel.sequence_parallel=true", "parallel.tp=2"), 2, te=False)
    assert "sequence_parallel" in msg and "Transformer Engine" in msg


def test_context_parallel_rules():
    assert "context parallelism needs Transformer Engine" in error(toy("parallel.cp=2"), 2)
    msg = error(toy("parallel.cp=2", "data.seq_length=126"), 2, te=True)
    assert "multiple of 2 × parallel.cp = 4" in msg


def test_training_duration_required():
    assert "train.steps, train.tokens (a token budget) or train.epochs" in error(
        toy("train.steps=null"), 1)
    assert "train.steps=-1" in error(toy("train.steps=-1"), 1)
    assert "train.tokens=0" in error(toy("train.steps=null", "train.tokens=0"), 1)


def test_seq_length_vs_max_positions():
    msg = error(toy("data.seq_length=32768"), 1)
    assert "seq_length=32768" in msg and "max_position_embeddings=16384" in msg


def test_overlap_param_gather_needs_dist_optimizer():
    msg = error(qwen32("parallel.distributed_optimizer=false"), 16, te=True)
    assert "overlap_param_gather=true requires parallel.distributed_optimizer=true" in msg
    msg = error(qwen32("parallel.overlap_grad_reduce=false"), 16, te=True)
    assert "requires parallel.overlap_grad_reduce=true" in msg


def test_tied_embeddings_with_pp_are_allowed():
    validate(toy("parallel.pp=2"), 2, te_available=False)
    assert toy().model.tie_word_embeddings


def test_all_problems_are_listed_together():
    msg = error(toy("parallel.tp=3", "train.steps=null", "data.seq_length=32768"), 3)
    assert "3 problems" in msg or "problems" in msg
    assert "num_attention_heads" in msg and "train.tokens" in msg and "seq_length" in msg


def test_derive_layout():
    layout = derive_layout(qwen32("train.epochs=null", "train.tokens=41000000"), 16)
    assert layout == {
        "dp": 1,
        "num_microbatches": 64,
        "tokens_per_step": 64 * 8192,
        "total_steps": 79,
    }
    assert derive_layout(qwen32(), 32)["num_microbatches"] == 32
    assert derive_layout(toy(), 2) == {
        "dp": 2,
        "num_microbatches": 2,
        "tokens_per_step": 2048,
        "total_steps": 150,
    }
    assert derive_layout(toy("train.steps=null"), 1)["total_steps"] is None


def test_derive_layout_rejects_impossible_layouts():
    with pytest.raises(ConfigError, match="world 12"):
        derive_layout(qwen32(), 12)
    with pytest.raises(ConfigError, match="global_batch_size"):
        derive_layout(toy("train.global_batch_size=10"), 2)


def test_epochs_decide_steps_from_the_data_samples():
    """train.epochs: steps = ceil(samples of the epochs / global batch); steps and tokens win."""
    from msm_megatron.validate import duration_unit

    cfg = toy("train.steps=null", "train.epochs=1")  # toy: global batch 16
    assert duration_unit(cfg) == "epochs"
    assert derive_layout(cfg, 1, epoch_samples=160)["total_steps"] == 10
    assert derive_layout(cfg, 1, epoch_samples=161)["total_steps"] == 11
    assert derive_layout(cfg, 1)["total_steps"] is None  # data not counted yet
    assert duration_unit(toy("train.epochs=1")) == "steps"
    assert "train.epochs=0" in error(toy("train.steps=null", "train.epochs=0"), 1)


def test_throughput_switches_are_checked():
    assert "train.loss_chunk=0 must be ≥ 1" in error(toy("train.loss_chunk=0"), 1)
    msg = error(qwen32("train.loss_chunk=4096"), 16, te=True)  # the recipe runs SP at TP 8
    assert "train.loss_chunk" in msg and "sequence_parallel" in msg
    packed = toy("data.mode=packed", "train.cuda_graphs=true")
    assert "packed rows change their sequence boundaries" in error(packed, 1)
    assert "choose one" in error(toy("train.cuda_graphs=true", "train.compile=true"), 1)
    assert "LoRA" in error(toy("train.cuda_graphs=true", "lora.rank=8", "train.spec=local"), 1)
    validate(toy("train.loss_chunk=100", "train.fused_swiglu=true", "train.compile=true"), 1,
             te_available=False)
    validate(toy("train.cuda_graphs=true"), 1, te_available=False)  # CUDA is checked at build


def test_context_parallel_and_unknown_exit_signals_fail_validation_not_the_run():
    msg = error(toy("parallel.cp=2", "train.precision=bf16"), 2, te=True)
    assert "parallel.cp=2: the trainer does not split sequences across context-parallel" in msg
    msg = error(toy("checkpoint.exit_signals=[SIGTERM,SIGFOO,NOPE]"), 1)
    assert "'SIGFOO', 'NOPE' are not signals" in msg
    validate(toy("checkpoint.exit_signals=[SIGINT,SIGUSR2,SIGHUP]"), 1, te_available=False)
