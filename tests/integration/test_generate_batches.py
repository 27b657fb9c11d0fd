"""Anthropic Message Batches against the local stand-in: collect, retry errored, and resume a
batch that finished after the process that submitted it had died."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers.launch import REPO, run_env
from tests.helpers.llm_fixtures import llm_server, server_stats, write_prompts

KEY = {"MSM_TEST_BATCH_KEY": "sk-ant-batch-" + "y" * 20}


def batch_complete(prompts, out, url, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "msm_megatron.cli", "generate", "complete",
                           str(prompts), str(out), "--backend", "anthropic", "--base-url", url,
                           "--model", "claude-test", "--api-key-env", "MSM_TEST_BATCH_KEY",
                           "--batch", "--poll", "0.1", "--quiet", "--backoff", "0.01"],
                          cwd=REPO, env=run_env({**KEY, **(env or {})}), capture_output=True,
                          text=True, timeout=300)


def test_batch_results_collected_and_errored_requests_retried_directly(tmp_path):
    write_prompts(tmp_path / "p.jsonl", 40)
    with llm_server("--batch-seconds", "0.5", "--batch-error-rate", "0.2") as url:
        done = batch_complete(tmp_path / "p.jsonl", tmp_path / "out", url)
        stats = server_stats(url)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    direct = stats["requests"]  # the errored ones, sent as ordinary requests
    assert stats["batches_created"] == 1 and 0 < direct < 40
    assert report["succeeded"] == 40 and report["calls"] == 40
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").open()]
    assert [r["id"] for r in rows] == [f"p{i}" for i in range(40)]


def test_batch_outliving_its_submitter_is_resumed_not_resubmitted(tmp_path):
    write_prompts(tmp_path / "p.jsonl", 30)
    with llm_server("--batch-seconds", "2") as url:
        killed = batch_complete(tmp_path / "p.jsonl", tmp_path / "out", url,
                                env={"MSM_GEN_FAULT_KILL": "after_batch_submit"})
        assert killed.returncode == -9
        ledger = [json.loads(line) for line in (tmp_path / "out" / "batches.jsonl").open()]
        assert len(ledger) == 1 and len(ledger[0]["keys"]) == 30  # recorded before polling
        done = batch_complete(tmp_path / "p.jsonl", tmp_path / "out", url)  # batch still running
        stats = server_stats(url)
    assert done.returncode == 0, done.stderr[-3000:]
    assert stats["batches_created"] == 1 and stats["requests"] == 0  # nothing paid twice
    assert stats["batch_results_served"] == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["succeeded"] == 30
    ledger = [json.loads(line) for line in (tmp_path / "out" / "batches.jsonl").open()]
    assert ledger[-1] == {**ledger[-1], "batch_id": ledger[0]["batch_id"], "collected": True}
    again = batch_complete(tmp_path / "p.jsonl", tmp_path / "out", url="http://127.0.0.1:9")
    assert again.returncode == 0 and "30 from cache" in again.stdout  # no server needed now
