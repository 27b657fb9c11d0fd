"""Converted checkpoints run in Megatron exactly like the HF model, at TP=1, TP=2 and PP=2.

``msm convert verify`` loads the converted checkpoint into the real Megatron model at the given
layout (torchrun, gloo) and compares fp32 logits, every layer's hidden states and 4 greedy tokens
with transformers. Then the whole loop: train from an HF directory (converted on the fly) at
TP=2, check the first loss equals transformers' loss on the same batch, export the trained
checkpoint and verify the export against it.
"""

from __future__ import annotations

import json

import pytest
import torch

from msm_megatron.config import load_yaml
from msm_megatron.convert.engine import hf_to_megatron
from msm_megatron.models.hf_config import hf_config_from_model
from tests.helpers.convert_models import save_random_hf_model
from tests.helpers.launch import metrics, train

pytestmark = pytest.mark.distributed

CONVERT = ("msm_megatron.cli", "convert")
# (arch, tied, tp, pp): every arch at a TP and a PP layout; tied heads across pipeline stages
CASES = [("qwen3", True, 1, 1), ("qwen3", False, 2, 1), ("qwen3", False, 1, 2),
         ("qwen2", False, 2, 1), ("qwen2", True, 1, 2), ("llama", False, 1, 1),
         ("llama", True, 2, 1)]


def run_verify(hf, ckpt, tmp_path, tp=1, pp=1, expect=0) -> dict:
    report = tmp_path / f"verify_tp{tp}_pp{pp}.json"
    train(hf, [str(ckpt), "--tp", str(tp), "--pp", str(pp), "--generate", "4",
               "--tolerance", "1e-5", "--json", str(report)], 0,
          tmp_path / f"verify_tp{tp}_pp{pp}.log", entry=(*CONVERT, "verify"), expect=expect)
    return json.loads(report.read_text())


@pytest.mark.parametrize(("arch", "tied", "tp", "pp"), CASES,
                         ids=[f"{a}-{'tied' if t else 'untied'}-tp{tp}-pp{pp}"
                              for a, t, tp, pp in CASES])
def test_megatron_logits_equal_hf(arch, tied, tp, pp, tmp_path):
    hf = save_random_hf_model(arch, tmp_path / "hf", tied=tied)
    hf_to_megatron(hf, tmp_path / "meg", progress=False)
    report = run_verify(hf, tmp_path / "meg", tmp_path, tp, pp)
    assert report["passed"] and report["logits"]["max_abs"] <= 1e-5
    assert [layer["layer"] for layer in report["layers"]] == [1, 2]  # gathered from all stages
    assert all(layer["max_abs"] <= 1e-5 for layer in report["layers"])
    assert report["greedy"]["match"] and len(report["greedy"]["hf"]) == 4


def test_verify_fails_on_a_wrong_weight(tmp_path):
    """The check can fail: one value head of one layer off by 1 % is caught. (A query head
    would not do: Qwen3's per-head q RMSNorm cancels a uniform scale.)"""
    from safetensors.torch import load_file, save_file

    hf = save_random_hf_model("qwen3", tmp_path / "hf")
    hf_to_megatron(hf, tmp_path / "meg", progress=False)
    tensors = load_file(hf / "model.safetensors")
    tensors["model.layers.1.self_attn.v_proj.weight"][:32] *= 1.01
    save_file(tensors, hf / "model.safetensors", metadata={"format": "pt"})
    report = run_verify(hf, tmp_path / "meg", tmp_path, expect=1)
    assert not report["passed"] and report["logits"]["max_abs"] > 1e-4
    assert report["layers"][0]["max_abs"] <= 1e-5 < report["layers"][1]["max_abs"]


def hf_first_step_loss(hf_dir, cfg) -> float:
    """transformers' token-mean loss on the first global batch the trainer sees."""
    import transformers

    from msm_megatron.data.datasets import build_dataset

    dataset = build_dataset(cfg.data, cfg.model.vocab_size)
    batch = dataset.batch(list(range(cfg.train.global_batch_size)))
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    with torch.no_grad():
        logits = model(batch["tokens"]).logits
    losses = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(),
                                               reduction="none")
    mask = batch["loss_mask"].flatten().float()
    return float((losses * mask).sum() / mask.sum())


def test_train_from_hf_export_and_verify(toy_config, tmp_path):
    # vocab 1024 = its padded size, so Megatron's loss covers exactly HF's vocabulary
    overrides = ["model.vocab_size=1024", "model.tie_word_embeddings=false"]
    model = load_yaml_with(toy_config, overrides).model
    hf = tmp_path / "hf"
    skip = ("model_type", "architectures", "initializer_range", "tie_word_embeddings")
    save_random_hf_model("qwen3", hf, **{k: v for k, v in hf_config_from_model(model).items()
                                         if k not in skip})
    run = tmp_path / "run"
    train(toy_config, [*overrides, f"train.run_dir={run}", f"checkpoint.load={hf}",
                       "parallel.tp=2"], 2, tmp_path / "train.log")
    assert (run / "init_from_hf" / "msm_convert.json").exists()
    first = metrics(run)[1]["loss"]
    assert abs(first - hf_first_step_loss(hf, load_yaml_with(toy_config, overrides))) < 1e-5
    train(run, ["--dtype", "fp32"], 0, tmp_path / "export.log", entry=(*CONVERT, "export"))
    exported = run / "hf" / "iter_0000004"
    assert (exported / "config.json").exists() and (exported / "model.safetensors").exists()
    # HF assets found by following checkpoint.load back to the HF directory
    assert (exported / "generation_config.json").read_text() == (
        hf / "generation_config.json").read_text()
    report = run_verify(exported, run / "checkpoints" / "iter_0000004", tmp_path, tp=2)
    assert report["passed"] and report["greedy"]["match"]


def load_yaml_with(path, overrides):
    from msm_megatron.config import apply_overrides

    return apply_overrides(load_yaml(path), overrides)


@pytest.mark.parametrize(("layout", "tied"), [("parallel.pp=2", False), ("parallel.tp=2", True)],
                         ids=["pp2-untied", "tp2-tied"])
def test_hf_through_a_sharded_training_checkpoint_and_back_is_bit_exact(layout, tied, toy_config,
                                                                        tmp_path):
    """HF → trainer at TP2/PP2 (saves its own sharded checkpoint, 0 steps) → export == HF."""
    from safetensors.torch import load_file

    overrides = [f"model.tie_word_embeddings={str(tied).lower()}"]
    model = load_yaml_with(toy_config, overrides).model
    skip = ("model_type", "architectures", "initializer_range", "tie_word_embeddings")
    hf = save_random_hf_model("qwen3", tmp_path / "hf", tied=tied, **{
        k: v for k, v in hf_config_from_model(model).items() if k not in skip})
    run = tmp_path / "run"
    train(toy_config, [*overrides, f"train.run_dir={run}", f"checkpoint.load={hf}",
                       "train.steps=0", layout], 2, tmp_path / "train.log")
    train(run, ["--quiet"], 0, tmp_path / "export.log", entry=(*CONVERT, "export"))
    a, b = load_file(hf / "model.safetensors"), load_file(
        run / "hf" / "iter_0000000" / "model.safetensors")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
