"""The layouts the recipes launch, on 8 gloo ranks, at the real head structure of each target
model: a tiny hidden size, but Qwen3-32B's 64 query / 8 KV heads with q/k norm, Qwen2.5-32B's
40 / 8 with QKV bias (five query heads per rank at TP=8), Llama-3.1-8B's 32 / 8 with its RoPE
scaling. At TP=8 every rank holds one KV head.

Each layout trains 4 steps from the same initial weights and must equal one rank (loss ≤ 1e-6,
grad norm ≤ 5e-6 relative: ``launch.assert_same_trajectory``): TP=8, TP=4 × PP=2, and
TP=2 × PP=2 × DP=2 with the distributed optimizer; packed SFT rows at TP=2 × PP=4 (the
sequence boundaries cross three stage boundaries); a TP=8 checkpoint resumed at TP=2 × PP=2 and
at TP=1. LoRA at TP=8 equals TP=1.
"""

from __future__ import annotations

import shutil

import pytest

from tests.helpers.launch import assert_same_trajectory, metrics, train

pytestmark = pytest.mark.distributed

SHAPES = {
    "qwen3_32b": ["model.arch=qwen3", "model.num_attention_heads=64",
                  "model.num_key_value_heads=8", "model.head_dim=8", "model.qk_norm=true",
                  "model.tie_word_embeddings=false"],
    "qwen2_5_32b": ["model.arch=qwen2", "model.num_attention_heads=40",
                    "model.num_key_value_heads=8", "model.hidden_size=160", "model.head_dim=null",
                    "model.qkv_bias=true", "model.qk_norm=false",
                    "model.tie_word_embeddings=false"],
    "llama3_1_8b": ["model.arch=llama", "model.num_attention_heads=32",
                    "model.num_key_value_heads=8", "model.hidden_size=256", "model.head_dim=null",
                    "model.qk_norm=false", "model.tie_word_embeddings=false",
                    "model.rope_theta=500000", "model.rope_scaling_factor=8.0"],
}
LAYOUTS = {
    "tp8": ["parallel.tp=8"],
    "tp4_pp2": ["parallel.tp=4", "parallel.pp=2"],
    "tp2_pp2_dp2_distopt": ["parallel.tp=2", "parallel.pp=2",
                            "parallel.distributed_optimizer=true"],
}


@pytest.fixture(scope="module")
def references(toy_config, tmp_path_factory):
    """Per shape: its initial checkpoint (1 rank, 0 steps) and the 1-rank 4-step trajectory."""
    out = {}
    for shape, overrides in SHAPES.items():
        root = tmp_path_factory.mktemp(shape)
        train(toy_config, [f"train.run_dir={root / 'init'}", "train.steps=0", *overrides], 1,
              root / "init.log")
        load = f"checkpoint.load={root / 'init' / 'checkpoints'}"
        train(toy_config, [f"train.run_dir={root / 'ref'}", load, *overrides], 1,
              root / "ref.log")
        ref = metrics(root / "ref")
        assert sorted(ref) == [1, 2, 3, 4] and ref[4]["loss"] != ref[1]["loss"]
        out[shape] = (load, ref)
    return out


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("shape", list(SHAPES))
def test_eight_ranks_equal_one_at_the_real_head_structure(shape, layout, toy_config,
                                                         references, tmp_path):
    load, ref = references[shape]
    run = tmp_path / "run"
    train(toy_config, [f"train.run_dir={run}", load, *SHAPES[shape], *LAYOUTS[layout]], 8,
          tmp_path / "run.log")
    assert "world 8 = " in (tmp_path / "run.log").read_text()
    assert_same_trajectory(metrics(run), ref, (shape, layout))


def test_a_tp8_checkpoint_resumes_at_tp2_pp2_and_at_tp1(toy_config, references, tmp_path):
    """The TP=8 run saves at steps 2 and 4; from its step-2 checkpoint, TP=2 × PP=2 (4 ranks) and
    TP=1 continue to step 4 and equal the uninterrupted TP=8 run and the one-rank reference."""
    load, ref = references["qwen3_32b"]
    shape = SHAPES["qwen3_32b"]
    tp8 = tmp_path / "tp8"
    train(toy_config, [f"train.run_dir={tp8}", load, *shape, "parallel.tp=8",
                       "checkpoint.save_interval=2"], 8, tmp_path / "tp8.log")
    for name, nproc, layout in (("tp2_pp2", 4, ["parallel.tp=2", "parallel.pp=2"]),
                                ("tp1", 1, [])):
        run = tmp_path / name
        shutil.copytree(tp8, run)
        shutil.rmtree(run / "checkpoints" / "iter_0000004")
        (run / "checkpoints" / "latest_checkpointed_iteration.txt").write_text("2")
        train(toy_config, [f"train.run_dir={run}", load, *shape, *layout,
                           "checkpoint.save_interval=2"], nproc, tmp_path / f"{name}.log")
        assert "resuming at step 2" in (tmp_path / f"{name}.log").read_text()
        got = metrics(run)
        assert_same_trajectory(got, metrics(tp8), (name, "vs tp8"))
        assert_same_trajectory(got, ref, (name, "vs one rank"))


def test_packed_sft_rows_at_pp4_equal_one_rank(sft_config, tmp_path):
    """Packed chat rows (THD, cu_seqlens) through four pipeline stages × TP=2, Qwen3-32B's heads."""
    shape = SHAPES["qwen3_32b"]
    init = tmp_path / "init"
    train(sft_config, [f"train.run_dir={init}", "train.steps=0", *shape], 1,
          tmp_path / "init.log")
    common = [f"checkpoint.load={init / 'checkpoints'}", "train.steps=3", *shape,
              "checkpoint.save_interval=null"]
    train(sft_config, [*common, f"train.run_dir={tmp_path / 'one'}"], 1, tmp_path / "one.log")
    train(sft_config, [*common, "parallel.tp=2", "parallel.pp=4",
                       f"train.run_dir={tmp_path / 'pp4'}"], 8, tmp_path / "pp4.log")
    ref = metrics(tmp_path / "one")
    assert sorted(ref) == [1, 2, 3] and ref[3]["loss"] != ref[1]["loss"]
    assert_same_trajectory(metrics(tmp_path / "pp4"), ref, "packed tp2 pp4")


def test_lora_at_tp8_equals_tp1(toy_config, references, tmp_path):
    load, _ = references["qwen2_5_32b"]
    lora = ["lora.rank=4", "lora.alpha=8", "optim.lr=1e-2", "checkpoint.save_interval=null",
            load, *SHAPES["qwen2_5_32b"]]
    train(toy_config, [*lora, f"train.run_dir={tmp_path / 'tp1'}"], 1, tmp_path / "tp1.log")
    train(toy_config, [*lora, "parallel.tp=8", f"train.run_dir={tmp_path / 'tp8'}"], 8,
          tmp_path / "tp8.log")
    ref = metrics(tmp_path / "tp1")
    assert sorted(ref) == [1, 2, 3, 4] and ref[4]["loss"] != ref[1]["loss"]
    assert_same_trajectory(metrics(tmp_path / "tp8"), ref, "lora tp8")


def _hf_model(shape: str, toy_config, out):
    """A random HF model with the shape's heads (the toy config's other sizes)."""
    from msm_megatron.config import apply_overrides, load_yaml
    from msm_megatron.models.hf_config import hf_config_from_model
    from tests.helpers.convert_models import save_random_hf_model

    model = apply_overrides(load_yaml(toy_config), SHAPES[shape]).model
    skip = ("model_type", "architectures", "initializer_range", "tie_word_embeddings")
    return save_random_hf_model(model.arch, out, **{
        k: v for k, v in hf_config_from_model(model).items() if k not in skip})


@pytest.mark.parametrize("layout", ["tp8", "tp4_pp2"])
@pytest.mark.parametrize("shape", ["qwen3_32b", "qwen2_5_32b"])
def test_hf_through_an_eight_rank_checkpoint_and_back_is_bit_exact(shape, layout, toy_config,
                                                                   tmp_path):
    """HF → the trainer on 8 ranks (it saves its own sharded checkpoint, 0 steps) → export ==
    HF, tensor for tensor; then Megatron's logits at TP=8 equal HF's (``msm convert verify``)."""
    import json

    import torch
    from safetensors.torch import load_file

    hf = _hf_model(shape, toy_config, tmp_path / "hf")
    run = tmp_path / "run"
    train(toy_config, [*SHAPES[shape], f"train.run_dir={run}", f"checkpoint.load={hf}",
                       "train.steps=0", *LAYOUTS[layout]], 8, tmp_path / "train.log")
    train(run, ["--quiet"], 0, tmp_path / "export.log",
          entry=("msm_megatron.cli", "convert", "export"))
    a = load_file(hf / "model.safetensors")
    b = load_file(run / "hf" / "iter_0000000" / "model.safetensors")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    if layout != "tp8":
        return
    report = tmp_path / "verify.json"
    train(hf, [str(run / "checkpoints" / "iter_0000000"), "--tp", "8", "--tolerance", "1e-5",
               "--json", str(report)], 0, tmp_path / "verify.log",
          entry=("msm_megatron.cli", "convert", "verify"))
    result = json.loads(report.read_text())
    assert result["passed"] and result["logits"]["max_abs"] <= 1e-5
