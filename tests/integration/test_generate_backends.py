"""The real HTTP clients against a local fault-injecting server process
(tests/helpers/llm_server.py).

Covers: every transport fault retried to completion with exact accounting; Retry-After honoured;
a call that keeps failing is reported without losing its siblings; content rejections re-asked;
the cache makes a re-run free; a SIGKILLed run resumes without repeating a completed call; keys
come from the environment and are never written anywhere.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from msm_megatron.llm.backend import LLMRequest, PermanentError
from msm_megatron.llm.cache import CallCache
from msm_megatron.llm.http_backends import AnthropicBackend, OpenAICompatBackend
from msm_megatron.llm.jobs import ContentError, Job
from msm_megatron.llm.retry import RetryPolicy
from msm_megatron.llm.runner import CallRunner
from tests.helpers.launch import REPO, run_env
from tests.helpers.llm_fixtures import llm_server, server_stats, write_prompts

FAST = RetryPolicy(max_attempts=12, base_s=0.01, cap_s=0.2)
TRANSPORT = "429,500,timeout,drop,bad_json"
SERVER_FAULT_TO_KIND = {"429": "http_429", "500": "http_500", "timeout": "timeout",
                        "drop": "connection", "bad_json": "bad_body"}


def jobs(n: int, parse=lambda r: r.text, poison: set[int] = frozenset()) -> list[Job]:
    return [Job(f"p{i}", LLMRequest.user(f"Write document number {i}."
                                          + (" POISON" if i in poison else "")), parse)
            for i in range(n)]


def test_transport_faults_are_retried_with_exact_accounting(tmp_path):
    with llm_server("--fault-rate", "0.3", "--faults", TRANSPORT, "--stall", "6") as url:
        backend = OpenAICompatBackend(f"{url}/v1", "fake", timeout_s=3, retry=FAST, seed=0)
        runner = CallRunner(backend, CallCache(tmp_path / "calls.jsonl"), concurrency=32,
                            progress=False)
        results = runner.run(jobs(300), stage="docs")
        stats = server_stats(url)
    assert all(r.ok for r in results) and len({r.value for r in results}) == 300
    report = runner.reports[-1]
    assert report.calls == 300 and report.http_requests == stats["requests"]
    assert report.retries == stats["requests"] - 300 > 40  # faults really happened
    assert sorted(stats["delivered"].values()) == [1] * 300  # each body answered once
    assert backend.usage.by_error == {SERVER_FAULT_TO_KIND[k]: v
                                      for k, v in stats["faults"].items()}
    assert report.output_tokens > 0 and report.input_tokens == 300 * 4  # the fake counts words


def test_retry_after_is_honoured(tmp_path):
    # 3 × 429 with Retry-After 0.05 s, while our own backoff would wait ≤ 1 ms
    with llm_server("--faults", "429", "--fail-first", "3") as url:
        backend = OpenAICompatBackend(f"{url}/v1", "fake",
                                      retry=RetryPolicy(max_attempts=5, base_s=0.001, cap_s=0.001))
        runner = CallRunner(backend, CallCache(tmp_path / "c.jsonl"), progress=False)
        started = time.monotonic()
        (result,) = runner.run(jobs(1), stage="one")
        elapsed = time.monotonic() - started
    assert result.ok and runner.reports[-1].retries == 3
    assert elapsed >= 0.15


def test_a_call_that_keeps_failing_is_reported_and_siblings_complete(tmp_path):
    with llm_server("--faults", "500", "--poison", "POISON") as url:
        backend = OpenAICompatBackend(f"{url}/v1", "fake",
                                      retry=RetryPolicy(max_attempts=3, base_s=0.001))
        runner = CallRunner(backend, CallCache(tmp_path / "c.jsonl"), progress=False)
        results = runner.run(jobs(20, poison={7}), stage="docs")
    failed = [r for r in results if not r.ok]
    assert [r.id for r in failed] == ["p7"] and "gave up after 3 attempts" in failed[0].error
    assert runner.reports[-1].failures[0]["id"] == "p7"
    assert sum(r.ok for r in results) == 19


def tagged(response):
    """A pipeline-style content check: <content> tags present, not truncated."""
    if response.truncated:
        raise ContentError("truncated")
    found = re.search(r"<content>(.*?)</content>", response.text, re.S)
    if not found:
        raise ContentError("no <content> tags")
    return found.group(1).strip()


def test_content_rejections_are_reasked_and_cached(tmp_path):
    args = ("--fault-rate", "0.5", "--faults", "no_tags,truncated")
    with llm_server(*args) as url:
        backend = OpenAICompatBackend(f"{url}/v1", "fake", retry=FAST)
        cache = CallCache(tmp_path / "c.jsonl")
        runner = CallRunner(backend, cache, content_attempts=6, progress=False)
        results = runner.run(jobs(40, parse=tagged), stage="docs")
        report = runner.reports[-1]
        assert report.content_rejections > 5
        for r in results:  # either clean content, or rejected on every attempt
            assert (r.ok and "<content>" not in r.value) or (r.attempts == 6 and "content" in
                                                             r.error)
        before = server_stats(url)["requests"]
        again = CallRunner(backend, CallCache(tmp_path / "c.jsonl"), content_attempts=6,
                           progress=False).run(jobs(40, parse=tagged), stage="docs")
        # rejected answers are re-judged from the cache, not bought again
        assert server_stats(url)["requests"] == before
    assert [r.value for r in again] == [r.value for r in results]


def msm_complete(prompts, out, url, *extra, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "msm_megatron.cli", "generate", "complete",
                           str(prompts), str(out), "--base-url", f"{url}/v1", "--model", "fake",
                           "--quiet", "--backoff", "0.01", "--backoff-cap", "0.2", *extra],
                          cwd=REPO, env=run_env(env), capture_output=True, text=True,
                          timeout=300)


def test_sigkill_mid_run_then_resume_repeats_no_completed_call(tmp_path):
    write_prompts(tmp_path / "prompts.jsonl", 120)
    args = ("--fault-rate", "0.2", "--faults", TRANSPORT, "--latency", "0.01", "--stall", "6")
    with llm_server(*args) as url:
        killed = msm_complete(tmp_path / "prompts.jsonl", tmp_path / "out", url,
                              "--concurrency", "8", "--timeout", "3",
                              env={"MSM_GEN_FAULT_KILL": "after_calls:50"})
        assert killed.returncode == -9, killed.stderr[-2000:]
        cached = sum(1 for _ in open(tmp_path / "out" / "calls.jsonl"))
        assert cached == 50
        done = msm_complete(tmp_path / "prompts.jsonl", tmp_path / "out", url,
                            "--concurrency", "8", "--timeout", "3")
        assert done.returncode == 0, done.stderr[-2000:]
        stats = server_stats(url)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["cached_calls"] == 50 and report["calls"] == 70 and report["failed"] == 0
    # server side: only calls in flight at the kill (≤ concurrency) were answered twice
    delivered = stats["delivered"].values()
    assert len(stats["delivered"]) == 120 and sum(delivered) - 120 <= 8
    ids = [json.loads(line)["id"] for line in open(tmp_path / "out" / "results.jsonl")]
    assert ids == [f"p{i}" for i in range(120)]


def test_bad_prompts_file_fails_before_any_request(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    with llm_server() as url:
        done = msm_complete(tmp_path / "bad.jsonl", tmp_path / "out", url)
        assert server_stats(url)["requests"] == 0
    assert done.returncode == 2 and "bad.jsonl:2: duplicate id 'a'" in done.stderr


def test_anthropic_key_from_environment_only_and_never_written(tmp_path, monkeypatch):
    secret = "sk-ant-test-" + "x" * 24
    with llm_server() as url:
        monkeypatch.delenv("MSM_TEST_ANTHROPIC_KEY", raising=False)
        backend = AnthropicBackend("claude-test", base_url=url,
                                   api_key_env="MSM_TEST_ANTHROPIC_KEY", retry=FAST)
        runner = CallRunner(backend, CallCache(tmp_path / "a.jsonl"), progress=False)
        with pytest.raises(PermanentError, match="MSM_TEST_ANTHROPIC_KEY"):
            runner.run(jobs(2), stage="docs")
        assert server_stats(url)["requests"] == 0
        write_prompts(tmp_path / "prompts.jsonl", 5)
        done = subprocess.run(
            [sys.executable, "-m", "msm_megatron.cli", "generate", "complete",
             str(tmp_path / "prompts.jsonl"), str(tmp_path / "out"), "--backend", "anthropic",
             "--base-url", url, "--model", "claude-test", "--api-key-env",
             "MSM_TEST_ANTHROPIC_KEY", "--quiet"], cwd=REPO, capture_output=True, text=True,
            env=run_env({"MSM_TEST_ANTHROPIC_KEY": secret}), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "5/5 completed" in done.stdout
    for path in (tmp_path / "out").iterdir():
        assert secret not in path.read_text()
    assert secret not in done.stdout + done.stderr
    assert os.environ.get("MSM_TEST_ANTHROPIC_KEY") is None
