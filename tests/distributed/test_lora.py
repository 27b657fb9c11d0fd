"""LoRA on Megatron-Core (CPU, gloo): B = 0 equals the base, a frozen base stays bit-identical,
only adapters are optimized, TP=2 equals TP=1, and the adapter count matches the paper's formula.
"""

from __future__ import annotations

import json

import pytest

from msm_megatron.config import ModelConfig
from msm_megatron.models.lora import lora_param_count
from tests.distributed.launch import assert_same_trajectory, metrics, train

pytestmark = pytest.mark.distributed

LORA = ["lora.rank=4", "lora.alpha=8", "train.steps=3", "train.global_batch_size=8",
        "optim.lr=1e-2", "checkpoint.save_interval=null"]


def test_paper_adapter_count_qwen25_14b():
    qwen25_14b = ModelConfig(arch="qwen2", hidden_size=5120, intermediate_size=13824,
                             num_layers=48, num_attention_heads=40, num_key_value_heads=8,
                             vocab_size=152064, qkv_bias=True, qk_norm=False)
    assert lora_param_count(qwen25_14b, 64) == 275_251_200


@pytest.mark.parametrize("nproc,layout", [(1, []), (2, ["parallel.tp=2"])], ids=["tp1", "tp2"])
def test_lora_model_checks(toy_config, tmp_path, nproc, layout):
    out = tmp_path / "report.json"
    train(toy_config, [str(out), *LORA, *layout, f"train.run_dir={tmp_path / 'run'}"], nproc,
          tmp_path / "log.txt", entry=("tests.distributed.lora_check",))
    report = json.loads(out.read_text())
    assert report["b0_logits_equal"], report
    assert report["base_changed"] == [], report
    assert report["b_moved"] and report["optimizer_is_adapters"], report
    assert report["adapter_dtypes"] == ["torch.float32"], report
    if nproc == 1:
        assert report["optimizer_numel_local"] == report["expected_total"], report


def test_lora_tp2_equals_tp1(toy_config, tmp_path):
    runs = {}
    for name, nproc, layout in (("tp1", 1, []), ("tp2", 2, ["parallel.tp=2"])):
        train(toy_config, [*LORA, *layout, "train.steps=4",
                           f"train.run_dir={tmp_path / name}"], nproc, tmp_path / f"{name}.log")
        runs[name] = metrics(tmp_path / name)
    assert sorted(runs["tp1"]) == [1, 2, 3, 4]
    assert_same_trajectory(runs["tp2"], runs["tp1"], "lora tp2")
    assert runs["tp1"][4]["loss"] < runs["tp1"][1]["loss"]  # the adapters learn
