"""FLOPs anchors, parameter counts, the memory estimate and the dry-run report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from msm_megatron.config import apply_overrides
from msm_megatron.estimate import (
    GIB,
    dry_run_report,
    estimate_memory,
    params_per_gpu,
)
from msm_megatron.flops import model_flops_per_token, param_count
from msm_megatron.models.vocab import padded_vocab_size
from msm_megatron.recipes import get_recipe


def _report(cfg, world_size: int) -> str:
    return dry_run_report(cfg, world_size)[0]


def model(name: str):
    return get_recipe(name).model


@pytest.mark.parametrize(
    ("name", "seq", "anchor"),
    [
        ("qwen3_32b_midtrain", 4096, 2.18e11),
        ("qwen3_32b_midtrain", 8192, 2.43e11),
        ("qwen2_5_32b_midtrain", 4096, 2.08e11),
    ],
)
def test_flops_anchors(name, seq, anchor):
    assert model_flops_per_token(model(name), seq) == pytest.approx(anchor, rel=0.02)


@pytest.mark.parametrize(
    ("name", "billions"),
    [
        ("qwen3_8b_midtrain", 8.19),
        ("qwen3_14b_midtrain", 14.77),
        ("qwen3_32b_midtrain", 32.76),
        ("qwen2_5_7b_midtrain", 7.62),
        ("qwen2_5_32b_midtrain", 32.76),
        ("llama3_1_8b_midtrain", 8.03),
    ],
)
def test_param_counts_match_published_sizes(name, billions):
    assert param_count(model(name)) / 1e9 == pytest.approx(billions, abs=0.01)


def test_tied_embeddings_are_counted_once():
    m = model("qwen3_toy_midtrain")
    untied = apply_overrides(get_recipe("qwen3_toy_midtrain"), ["model.tie_word_embeddings=false"])
    assert param_count(untied.model) - param_count(m) == m.vocab_size * m.hidden_size


def test_vocab_padding_matches_megatron_at_tp8_and_is_the_same_at_every_tp_up_to_8():
    for tp in (1, 2, 4, 8):  # one global embedding shape: checkpoints reshard across these TPs
        assert padded_vocab_size(model("qwen3_32b_midtrain"), tp) == 152576  # Megatron's at TP 8
        assert padded_vocab_size(model("qwen2_5_32b_midtrain"), tp) == 152576
    assert padded_vocab_size(model("llama3_1_8b_midtrain"), 1) == 129024
    assert padded_vocab_size(model("qwen3_32b_midtrain"), 16) == 153600  # 2048-row multiple
    assert padded_vocab_size(model("qwen3_32b_midtrain"), 3) % 3 == 0


def test_qwen3_32b_fits_at_tp8_pp2_on_16():
    cfg = get_recipe("qwen3_32b_midtrain")
    mem = estimate_memory(cfg, 16)
    assert mem["total"] < 80 * GIB
    assert params_per_gpu(cfg) == pytest.approx(32.8e9 / 16, rel=0.02)
    report = _report(cfg, 16)
    assert "world 16 = tp 8 × pp 2 × cp 1 × dp 1" in report
    assert "verdict: fits" in report and "524,288 tokens/step" in report
    assert ("duration: 1 epoch(s) (train.epochs) of data.prepared (steps are counted once the "
            "data is prepared)") in report


def test_qwen3_32b_does_not_fit_on_one_gpu():
    cfg = apply_overrides(
        get_recipe("qwen3_32b_midtrain"),
        ["parallel.tp=1", "parallel.pp=1", "parallel.sequence_parallel=false"],
    )
    assert estimate_memory(cfg, 1)["total"] > 80 * GIB
    assert "verdict: does not fit" in _report(cfg, 1)


def test_distributed_optimizer_shards_optimizer_state_by_dp():
    cfg = get_recipe("qwen3_8b_midtrain")  # tp 2 on 8 -> dp 4
    mem = estimate_memory(cfg, 8)
    assert mem["dp"] == 4
    assert mem["optimizer_distributed"] == pytest.approx(mem["optimizer_replicated"] / 4, abs=1)
    assert mem["optimizer"] == mem["optimizer_distributed"]
    off = apply_overrides(
        cfg, ["parallel.distributed_optimizer=false", "parallel.overlap_param_gather=false"]
    )
    assert estimate_memory(off, 8)["optimizer"] == mem["optimizer_replicated"]
    assert estimate_memory(cfg, 16)["optimizer_distributed"] < mem["optimizer_distributed"]


def test_bytes_per_param():
    cfg = get_recipe("qwen3_8b_midtrain")
    mem = estimate_memory(cfg, 8)
    n = mem["params_per_gpu"]
    assert (mem["weights"], mem["grads"], mem["optimizer_replicated"]) == (2 * n, 4 * n, 12 * n)
    toy = estimate_memory(get_recipe("qwen3_toy_midtrain"), 1)
    n = toy["params_per_gpu"]
    assert (toy["weights"], toy["grads"], toy["optimizer_replicated"]) == (4 * n, 4 * n, 8 * n)


def test_activation_ordering_and_formula():
    cfg = apply_overrides(
        get_recipe("qwen3_8b_midtrain"), ["parallel.sequence_parallel=false"]
    )  # tp 2, no SP: per layer s·b·h·(10 + 24/2) bytes
    mem = estimate_memory(cfg, 8)
    s, h, layers = 8192, 4096, 36
    assert mem["activations_selective"] == pytest.approx(s * h * 22 * layers, rel=1e-6)
    assert mem["activations_full"] < mem["activations_selective"] <= mem["activations_none"]
    no_flash = estimate_memory(cfg, 8, flash_attention=False)
    quadratic = 5 * 32 * s / (h * 2)
    assert no_flash["activations_none"] == pytest.approx(
        s * h * (22 + quadratic) * layers, rel=1e-6
    )
    assert no_flash["activations_selective"] == mem["activations_selective"]


def test_sequence_parallel_and_pipeline_in_flight():
    cfg = get_recipe("qwen3_32b_midtrain")  # tp 8, SP, pp 2: 32 layers × 2 micro-batches
    mem = estimate_memory(cfg, 16)
    assert mem["activations_selective"] == pytest.approx(8192 * 5120 * 34 / 8 * 32 * 2, rel=1e-6)
    assert mem["logits"] == 8192 * 152576 // 8 * 12


def test_dry_run_report_lists_the_table():
    report = _report(get_recipe("qwen3_toy_midtrain"), 1)
    for text in (
        "world 1 = tp 1 × pp 1 × cp 1 × dp 1",
        "FLOPs/token",
        "weights",
        "grads",
        "distributed optimizer",
        "replicated",
        "recompute selective",
        "recompute full",
        "logits",
        "total",
        "150 steps",
    ):
        assert text in report, text


def test_dry_run_reports_validation_problems():
    cfg = apply_overrides(get_recipe("qwen3_toy_midtrain"), ["parallel.tp=3"])
    report = _report(cfg, 3)
    assert "checks: FAILED" in report and "num_attention_heads=4" in report
    assert "checks: ok" in _report(get_recipe("qwen3_32b_midtrain"), 16)


def test_planning_modules_do_not_import_torch_or_megatron():
    code = (
        "import sys\n"
        "import msm_megatron.estimate, msm_megatron.validate, msm_megatron.flops\n"
        "import msm_megatron.recipes, msm_megatron.models.hf_config\n"
        "bad = [m for m in ('torch', 'megatron') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo)


def test_lora_estimate_counts_optimizer_state_for_adapters_only():
    from msm_megatron.estimate import adapter_params_per_gpu
    from msm_megatron.flops import lora_param_count
    from msm_megatron.recipes import get_recipe

    cfg = get_recipe("qwen3_32b_midtrain_lora")
    mem = estimate_memory(cfg, 4)
    from msm_megatron.config import apply_overrides

    full = estimate_memory(apply_overrides(cfg, ["lora.rank=0"]), 4)  # same layout, all params
    adapters = adapter_params_per_gpu(cfg)
    # tp 4: between a quarter of all adapters (everything sharded) and all of them
    total = lora_param_count(cfg.model, 64)
    assert total / 4 < adapters < total
    # bf16 model copies; fp32 grads, master copies and Adam state for the adapters only
    assert mem["grads"] == 4 * adapters and mem["optimizer"] == 12 * adapters
    assert mem["weights"] == (mem["params_per_gpu"] + adapters) * 2
    assert mem["optimizer"] < full["optimizer"] * 0.05


def test_lora_flops_drop_the_frozen_weight_gradients():
    from msm_megatron.flops import lora_flops_per_token, model_flops_per_token
    from msm_megatron.recipes import get_recipe

    m = get_recipe("qwen3_32b_midtrain_lora").model
    full, lora = model_flops_per_token(m, 8192), lora_flops_per_token(m, 8192, 64)
    assert 0.6 < lora / full < 0.8  # 4/6 of the matmuls; attention (no weights) unchanged


def test_loss_chunk_bounds_the_logits_memory():
    base = apply_overrides(get_recipe("qwen3_toy_sft"), ["train.micro_batch_size=4"])
    vocab = padded_vocab_size(base.model, 1)
    whole = estimate_memory(base, 1)["logits"]
    assert whole == 4 * 512 * vocab * 12  # packed: one THD row of 4·512 tokens
    chunked = estimate_memory(apply_overrides(base, ["train.loss_chunk=300"]), 1)
    assert chunked["logits"] == 300 * vocab * 12
    assert estimate_memory(base, 1)["total"] - chunked["total"] == whole - chunked["logits"]
    concat = apply_overrides(get_recipe("qwen3_toy_midtrain"), ["train.loss_chunk=100"])
    assert estimate_memory(concat, 1)["logits"] == 100 * 4 * vocab * 12  # [100, b=4] per chunk
    bigger = apply_overrides(base, ["train.loss_chunk=100000"])
    assert estimate_memory(bigger, 1)["logits"] == whole


def test_dry_run_names_the_throughput_switches_that_are_on():
    assert "throughput switches" not in _report(get_recipe("qwen3_toy_midtrain"), 1)
    cfg = apply_overrides(get_recipe("qwen3_toy_midtrain"),
                          ["train.loss_chunk=64", "train.compile=true"])
    assert "throughput switches: loss_chunk 64, compile" in _report(cfg, 1)


@pytest.mark.parametrize("overrides, fact", [
    (["parallel.cp=2", "train.precision=bf16"], "parallel.cp=2: the trainer does not split"),
    (["checkpoint.exit_signals=[SIGTERM,SIGFOO]"], "'SIGFOO' is not a signal"),
    (["train.steps=-3"], "train.steps=-3 must be ≥ 0"),
])
def test_train_dry_run_exits_2_on_a_failed_check_and_gives_no_verdict(overrides, fact, capsys):
    from msm_megatron.cli import main

    code = main(["train", "qwen3_toy_midtrain", *overrides, "--dry-run", "--world-size", "2"])
    out, err = capsys.readouterr()
    assert code == 2 and "checks: FAILED" in out and fact in out
    assert "fails" in err and "world size 2" in err
    assert "verdict: fits" not in out and "verdict: does not fit" not in out


def test_train_dry_run_exits_0_with_a_verdict_when_the_checks_pass(capsys):
    from msm_megatron.cli import main

    assert main(["train", "qwen3_toy_midtrain", "--dry-run", "--world-size", "1"]) == 0
    out = capsys.readouterr().out
    assert "checks: ok" in out and "verdict: fits" in out


def test_an_impossible_layout_lists_every_problem_without_an_estimate():
    cfg = apply_overrides(get_recipe("qwen3_32b_midtrain"), ["train.steps=-3"])
    report, problems = dry_run_report(cfg, 12)
    assert len(problems) == 2 and "world 12 is not divisible" in report
    assert "train.steps=-3" in report and "verdict: none" in report and "GiB" not in report
