"""Bad configs fail with clear errors before any process group exists; the CLI reports them."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch.distributed as dist

from msm_megatron.config import ConfigError, apply_overrides
from msm_megatron.recipes import get_recipe
from tests.helpers.launch import REPO, run_env


def toy(*overrides: str):
    return apply_overrides(get_recipe("qwen3_toy_midtrain"), ["data.prepared=[unused]", *overrides])


@pytest.mark.parametrize("overrides,world,needle", [
    (["parallel.tp=3"], 2, "tp 3"),
    (["parallel.tp=8"], 8, "num_attention_heads=4"),
    (["parallel.pp=3"], 3, "num_layers=4"),
    (["train.precision=bf16", "train.fp8=delayed"], 1, "Transformer Engine"),
])
def test_trainer_rejects_before_process_groups(monkeypatch, overrides, world, needle):
    from msm_megatron.train.trainer import Trainer

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "9")  # nothing listens: init would hang/fail, not raise this
    with pytest.raises(ConfigError, match=needle):
        Trainer(toy(*overrides))
    assert not dist.is_initialized()


def test_fp8_without_te_refused_at_model_build():
    from msm_megatron._compat.te import te_available
    from msm_megatron.models.build import fp8_fields

    if te_available():
        pytest.skip("Transformer Engine present: FP8 is allowed here")
    for recipe in ("delayed", "tensorwise", "blockwise", "mxfp8"):
        with pytest.raises(ConfigError, match="silently train in full precision"):
            fp8_fields(toy("train.precision=bf16", f"train.fp8={recipe}"))
    assert fp8_fields(toy()) == {}


def msm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "msm_megatron.cli", *args], cwd=REPO,
                          env=run_env(), capture_output=True, text=True, timeout=120)


def test_cli_unknown_key_suggests():
    out = msm("train", "qwen3_toy_midtrain", "optim.lrr=1e-4", "--dry-run")
    assert out.returncode == 2
    assert "unknown config key 'optim.lrr'" in out.stderr and "Did you mean 'lr'?" in out.stderr


def test_cli_dry_run_32b_plan():
    out = msm("train", "qwen3_32b_midtrain", "--dry-run", "--world-size", "16")
    assert out.returncode == 0, out.stderr
    assert "tp 8" in out.stdout and "pp 2" in out.stdout and "fits" in out.stdout
    bad = msm("train", "qwen3_32b_midtrain", "--dry-run", "--world-size", "12")
    assert bad.returncode == 2 and "12" in bad.stderr


def test_cli_unknown_recipe():
    out = msm("train", "qwen3_32b_midtrian", "--dry-run")
    assert out.returncode == 2 and "qwen3_32b_midtrain" in out.stderr


def test_cli_model_from_hf_config(tmp_path):
    import json

    hf = {"model_type": "qwen2", "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
          "max_position_embeddings": 256, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
          "tie_word_embeddings": False}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    out = msm("train", "qwen3_toy_midtrain", "--model-from-hf", str(tmp_path), "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "qwen2" in out.stdout and "2 layers" in out.stdout and "padded to 1024" in out.stdout
    (tmp_path / "config.json").write_text(json.dumps({**hf, "model_type": "gpt2"}))
    bad = msm("train", "qwen3_toy_midtrain", "--model-from-hf", str(tmp_path), "--dry-run")
    assert bad.returncode == 2 and "config.json" in bad.stderr and "gpt2" in bad.stderr


def test_trainer_refuses_context_parallel(monkeypatch):
    from msm_megatron.train import trainer

    monkeypatch.setattr(trainer, "te_available", lambda: True)  # even where TE exists
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="context-parallel"):
        trainer.Trainer(toy("parallel.cp=2", "train.precision=bf16"))
    assert not dist.is_initialized()
