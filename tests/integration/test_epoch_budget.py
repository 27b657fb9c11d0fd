"""train.epochs on real prepared data: `msm train` runs exactly ceil(packed rows / global batch)
steps for one epoch of AFT chats, and its --dry-run says the same number beforehand."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from msm_megatron.data.blend import Blend
from msm_megatron.data.datasets import PackedRows
from tests.helpers.launch import REPO, run_env


def test_one_epoch_of_aft_runs_the_steps_the_data_implies(tmp_path):
    from msm_megatron.data.sources import prepare_inputs
    from msm_megatron.data.tokenizers import load_tokenizer
    from msm_megatron.data.toy_tokenizer import build_hf_tokenizer

    tok = build_hf_tokenizer(tmp_path / "tok", "qwen3", vocab_size=2000)
    prefix = tmp_path / "aft"
    prepare_inputs([str(REPO / "examples/chats/aft_demo.jsonl")], load_tokenizer(tok), prefix,
                   kind="chats", keep_think=False, progress=False)
    vocab = json.loads(prefix.with_suffix(".stats.json").read_text())["vocab_size"]
    seq, batch = 256, 4
    rows = PackedRows(Blend([prefix], [1.0], seed=1234), seq, seed=1234).samples_in_epochs(1)
    want = math.ceil(rows / batch)
    args = [sys.executable, "-m", "msm_megatron.cli", "train", "qwen3_toy_sft",
            f"data.prepared=[{prefix}]", f"data.seq_length={seq}", "train.steps=null",
            "train.epochs=1", f"train.global_batch_size={batch}", f"model.vocab_size={vocab}",
            f"train.run_dir={tmp_path / 'run'}", "checkpoint.save_interval=null",
            "log.interval=1", "log.progress_bar=false", "log.tensorboard=false"]
    plan = subprocess.run([*args, "--dry-run"], cwd=REPO, env=run_env(), capture_output=True,
                          text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert f"= {rows:,} packed rows of {seq} tokens -> {want} steps" in plan.stdout
    done = subprocess.run(args, cwd=REPO, env=run_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").open()]
    assert steps[-1] == want and 1 < want
