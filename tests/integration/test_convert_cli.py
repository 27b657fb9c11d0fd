"""`msm convert …` and the checkpoint_tools/ scripts as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from tests.helpers.convert_models import save_random_hf_model
from tests.helpers.launch import REPO, run_env


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=run_env())


def test_scripts_round_trip_and_report(tmp_path):
    hf = save_random_hf_model("qwen2", tmp_path / "hf", dtype=torch.bfloat16)
    done = run("checkpoint_tools/hf_to_megatron.py", str(hf), str(tmp_path / "meg"), "--quiet")
    assert done.returncode == 0, done.stderr
    assert f"checkpoint.load={tmp_path / 'meg'}" in done.stdout
    done = run("-m", "msm_megatron.cli", "convert", "megatron-to-hf", str(tmp_path / "meg"),
               str(tmp_path / "back"), "--dtype", "fp32", "--quiet")
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["torch_dtype"] == "float32" and config["model_type"] == "qwen2"


def test_cli_errors_are_one_line_and_exit_2(tmp_path):
    done = run("-m", "msm_megatron.cli", "convert", "hf-to-megatron", str(tmp_path / "nope"),
               str(tmp_path / "out"))
    assert done.returncode == 2
    assert "HF config not found" in done.stderr and "Traceback" not in done.stderr
    done = run("checkpoint_tools/export.py", str(tmp_path))
    assert done.returncode == 2 and "no complete checkpoint" in done.stderr
