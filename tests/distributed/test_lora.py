"""LoRA on Megatron-Core (CPU, gloo): B = 0 equals the base, a frozen base stays bit-identical
(fp32 or bf16; adapters fp32), only adapters are optimized, TP=2 and PP=2 equal one rank, resume
is exact, stages chain, and the adapter count matches the paper's formula.
"""

from __future__ import annotations

import json

import pytest

from msm_megatron.config import ModelConfig
from msm_megatron.flops import lora_param_count
from tests.helpers.launch import assert_same_trajectory, metrics, train

pytestmark = pytest.mark.distributed

LORA = ["lora.rank=4", "lora.alpha=8", "train.steps=3", "train.global_batch_size=8",
        "optim.lr=1e-2", "checkpoint.save_interval=null"]


def test_paper_adapter_count_qwen25_14b():
    qwen25_14b = ModelConfig(arch="qwen2", hidden_size=5120, intermediate_size=13824,
                             num_layers=48, num_attention_heads=40, num_key_value_heads=8,
                             vocab_size=152064, qkv_bias=True, qk_norm=False)
    assert lora_param_count(qwen25_14b, 64) == 275_251_200


@pytest.mark.parametrize("nproc,layout", [(1, []), (2, ["parallel.tp=2"]),
                                          (1, ["train.precision=bf16"])],
                         ids=["tp1", "tp2", "bf16-base"])
def test_lora_model_checks(toy_config, tmp_path, nproc, layout):
    out = tmp_path / "report.json"
    train(toy_config, [str(out), *LORA, *layout, f"train.run_dir={tmp_path / 'run'}"], nproc,
          tmp_path / "log.txt", entry=("tests.helpers.lora_check",))
    report = json.loads(out.read_text())
    assert report["b0_logits_equal"], report
    assert report["base_changed"] == [], report
    bf16 = "train.precision=bf16" in layout
    assert report["b_moved"] and report["optimizer_is_adapters"] is (None if bf16 else True)
    assert report["trained_dtypes"] == ["torch.float32"], report  # fp32 (master) adapters
    assert report["base_dtypes"] == ["torch.bfloat16" if bf16 else "torch.float32"], report
    if nproc == 1:  # only the adapters are optimized
        assert report["optimizer_numel_local"] == report["expected_total"], report


def test_lora_tp2_and_pp2_equal_one_rank(toy_config, tmp_path):
    # one base for every layout (a seeded random init depends on the pipeline layout)
    base = tmp_path / "base"
    train(toy_config, ["train.steps=0", f"train.run_dir={base}"], 1, tmp_path / "base.log")
    runs = {}
    for name, nproc, layout in (("tp1", 1, []), ("tp2", 2, ["parallel.tp=2"]),
                                ("pp2", 2, ["parallel.pp=2"])):
        train(toy_config, [*LORA, *layout, "train.steps=4", f"train.run_dir={tmp_path / name}",
                           f"checkpoint.load={base / 'checkpoints'}"], nproc,
              tmp_path / f"{name}.log")
        runs[name] = metrics(tmp_path / name)
    assert sorted(runs["tp1"]) == [1, 2, 3, 4]
    assert_same_trajectory(runs["tp2"], runs["tp1"], "lora tp2")
    assert_same_trajectory(runs["pp2"], runs["tp1"], "lora pp2")
    assert runs["tp1"][4]["loss"] < runs["tp1"][1]["loss"]  # the adapters learn


RESUME = [*LORA, "train.steps=6", "checkpoint.save_interval=2"]


def _same(got: dict, ref: dict, steps, tol: float = 0.0) -> None:
    for step in steps:
        for key in ("loss", "grad_norm", "lr"):
            assert abs(got[step][key] - ref[step][key]) <= tol, (step, key, got[step], ref[step])


@pytest.fixture(scope="module")
def lora_reference(toy_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("lora_ref")
    train(toy_config, [*RESUME, f"train.run_dir={root}"], 1, root.with_suffix(".log"))
    return root, metrics(root)


def test_adapter_checkpoints_hold_only_adapters(lora_reference):
    from torch.distributed.checkpoint import FileSystemReader

    root, _ = lora_reference
    stored = FileSystemReader(str(root / "checkpoints" / "iter_0000006")).read_metadata()
    keys = [k for k in stored.state_dict_metadata if k.startswith(("decoder", "embedding",
                                                                     "output_layer"))]
    assert keys and all(".lora_" in k for k in keys), keys[:5]
    chain = json.loads((root / "checkpoints" / "lora_base.json").read_text())
    assert chain == {"base": None, "merged": []}


@pytest.mark.parametrize("layout,nproc,tol", [([], 1, 0.0), (["parallel.tp=2"], 2, 1e-6)],
                         ids=["same-layout", "tp1-to-tp2"])
def test_lora_resume_equals_uninterrupted(toy_config, lora_reference, tmp_path, layout, nproc,
                                          tol):
    _, ref = lora_reference
    run = tmp_path / "run"
    code = train(toy_config, [*RESUME, f"train.run_dir={run}"], 1, tmp_path / "a.log",
                 env={"MSM_FAULT_KILL": "after_save:4"}, expect=None)
    assert code != 0 and sorted(metrics(run)) == [1, 2, 3, 4]
    train(toy_config, [*RESUME, *layout, f"train.run_dir={run}"], nproc, tmp_path / "b.log")
    got = metrics(run)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    _same(got, ref, [5, 6], tol)


def test_next_stage_continues_or_merges_the_adapter(toy_config, lora_reference, tmp_path):
    """A second LoRA stage from the first (``checkpoint.load``) sees the first stage's final model:
    continuing its adapter and merging it into the base (new adapter at B = 0) give the same
    step-1 loss, unlike the untrained adapter the first stage started from."""
    first, ref = lora_reference
    steps, chains = {}, {}
    for mode in ("continue", "merge"):
        run = tmp_path / mode
        train(toy_config, [*LORA, "train.steps=1", f"lora.on_load={mode}",
                           f"checkpoint.load={first / 'checkpoints'}", f"train.run_dir={run}"], 1,
              tmp_path / f"{mode}.log")
        steps[mode] = metrics(run)[1]
        chains[mode] = json.loads((run / "checkpoints" / "lora_base.json").read_text())
    assert abs(steps["merge"]["loss"] - steps["continue"]["loss"]) <= 1e-6, steps
    assert abs(steps["continue"]["loss"] - ref[1]["loss"]) > 1e-3, (steps, ref[1])
    assert chains["continue"] == {"base": None, "merged": []}
    assert chains["merge"] == {"base": None,
                               "merged": [str(first / "checkpoints" / "iter_0000006")]}
