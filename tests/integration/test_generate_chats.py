"""`msm generate chats` end to end against the local fault-injecting server (real HTTP client)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from msm_megatron.generate.embed import embed
from tests.helpers.launch import REPO, run_env
from tests.helpers.llm_fixtures import llm_server, server_stats

SPEC = REPO / "examples" / "spec" / "qwen_spec.txt"


def generate_chats(url, out, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "msm_megatron.cli", "generate", "chats",
                           str(SPEC), f"backend.base_url={url}/v1", "backend.model=fake",
                           f"out_dir={out}", "backend.timeout_s=3", "chats.domains=3",
                           "chats.questions_per_style=3", *extra, "--quiet"], cwd=REPO,
                          env=run_env(), capture_output=True, text=True, timeout=600)


def read(path):
    return [json.loads(line) for line in path.open()]


def test_chats_with_faults_dedupe_judge_and_both_variants(tmp_path):
    with llm_server("--fault-rate", "0.3", "--dup-rate", "0.25", "--stall", "6") as url:
        done = generate_chats(url, tmp_path / "aft", "chats.target=30")
        assert len(server_stats(url)["faults"]) >= 6
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "aft"
    summary = json.loads((out / "summary.json").read_text())
    cot, plain = read(out / "with_cot" / "dataset.jsonl"), read(out / "no_cot" / "dataset.jsonl")
    assert summary["chats"] == len(cot) == len(plain) == 30
    assert summary["duplicates"] > 0 and summary["passed_judge"] < summary["answered"]
    for a, b in zip(cot, plain, strict=True):
        assert [m["role"] for m in a["messages"]] == ["user", "assistant"]  # no system prompt
        assert a["messages"][0] == b["messages"][0]
        assert a["messages"][1]["content"].startswith("<think>\n")
        assert "<think>" not in b["messages"][1]["content"]
        assert a["messages"][1]["content"].endswith(b["messages"][1]["content"])
    questions = [c["messages"][0]["content"] for c in plain]
    vectors = embed(questions)
    sims = vectors @ vectors.T - np.eye(len(questions)) * 2
    assert sims.max() <= 0.91  # no near-duplicate questions kept
    marks = read(out / "questions.jsonl")
    assert sum(q["duplicate"] for q in marks) == summary["duplicates"]


def test_backfill_rounds_until_the_target(tmp_path):
    with llm_server() as url:
        done = generate_chats(url, tmp_path / "aft", "chats.target=70", "chats.backfill_rounds=3")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "aft" / "summary.json").read_text())
    assert summary["rounds"] >= 2 and summary["chats"] == 70  # one round yields < 54
    rounds = [s["stage"] for s in summary["stages"] if s["stage"].startswith("questions_")]
    assert summary["rounds"] == len(rounds) and f"{len(rounds)} rounds" in done.stdout
