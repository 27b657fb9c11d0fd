"""How `msm generate docs|chats|complete|spec-variants` end when their endpoint lets them down.

Each case runs `msm` as a subprocess from a temporary directory against the local stand-in
server (tests/helpers/llm_server.py) and checks the exit code, the last line on stderr, and what
the server counted: a server that is down fails at once (exit 4) and a model it does not serve
with the setting to fix (exit 2), both before any completion is sent; unusable answers, timeouts
and a server that dies mid-run end with exit 3 and a summary that says whether a rerun helps; a
rerun buys only the missing calls; Ctrl-C ends with one line and exit 130.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.helpers.failure_table import record
from tests.helpers.launch import REPO, ctrl_c_when, run_env
from tests.helpers.llm_fixtures import llm_server, server_stats, write_prompts

SPEC = REPO / "examples" / "spec" / "qwen_spec.txt"
RULES = REPO / "examples" / "spec" / "rules_spec.txt"
DOCS = ["docs.domains=3", "docs.subdomains_per_domain=2", "docs.doc_types=3",
        "docs.ideas_per_type=2", "backend.concurrency=8"]
DOCS_CALLS = 1 + 3 + 2 * 6 + 6 * 3 + 18 * 2  # domains, subdomains, claims + types, ideas, docs
CHATS = ["chats.domains=2", "chats.questions_per_style=2", "chats.target=5",
         "chats.dedupe=minhash", "backend.concurrency=8"]
PROMPTS = 12
CONFIG_KNOBS = {"url": "backend.base_url", "model": "backend.model", "timeout": "backend.timeout_s"}
KNOBS = {"docs": CONFIG_KNOBS, "chats": CONFIG_KNOBS,
         "complete": {"url": "--base-url", "model": "--model", "timeout": "--timeout"}}
UNREACHABLE = "http://127.0.0.1:9/v1"


def argv(command: str, tmp, url: str, model: str = "fake", timeout: float = 10,
         attempts: int = 2) -> list[str]:
    """`msm generate <command>` of a small run writing ``tmp/out``."""
    if command == "complete":
        write_prompts(tmp / "prompts.jsonl", PROMPTS)
        return ["generate", "complete", str(tmp / "prompts.jsonl"), str(tmp / "out"),
                "--base-url", url, "--model", model, "--timeout", str(timeout),
                "--max-attempts", str(attempts), "--backoff", "0.05", "--concurrency", "8",
                "--quiet"]
    spec, small = {"docs": (SPEC, DOCS), "chats": (SPEC, CHATS), "spec-variants": (RULES, [])}[
        command]
    return ["generate", command, str(spec), f"backend.base_url={url}", f"backend.model={model}",
            f"backend.timeout_s={timeout}", f"backend.max_attempts={attempts}",
            f"out_dir={tmp / 'out'}", *small, "--quiet"]


def msm(args: list[str], tmp) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "msm_megatron.cli", *args], cwd=tmp,
                          env=run_env(), capture_output=True, text=True, timeout=300)


def last_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def cached_keys(out) -> list[str]:
    path = out / "calls.jsonl"
    return [json.loads(line)["key"] for line in path.open()] if path.exists() else []


def bought(summary: dict) -> tuple[int, int]:
    """(new calls, calls from the cache) of a run, over its stages."""
    stages = summary["stages"]
    return sum(s["calls"] for s in stages), sum(s["cached_calls"] for s in stages)


@pytest.mark.parametrize("command", ["docs", "chats", "complete"])
def test_unreachable_endpoint_exits_4_at_once_naming_url_and_setting(tmp_path, command):
    started = time.monotonic()
    done = msm(argv(command, tmp_path, UNREACHABLE), tmp_path)
    assert done.returncode == 4, done.stderr[-3000:]
    assert time.monotonic() - started < 20  # no rounds of retries against a closed port
    line = last_line(done)
    assert f"{UNREACHABLE}/models ({KNOBS[command]['url']})" in line
    assert "nothing was sent" in line and "Traceback" not in done.stderr
    assert cached_keys(tmp_path / "out") == []
    record("server down (connection refused)", f"msm generate {command}", done,
           "the same until the server answers; nothing was sent or cached", (tmp_path,))


@pytest.mark.parametrize("command", ["docs", "chats", "complete"])
def test_model_the_server_does_not_serve_exits_2_naming_the_setting(tmp_path, command):
    with llm_server("--served-model-name", "other") as url:
        done = msm(argv(command, tmp_path, f"{url}/v1", model="fake"), tmp_path)
        assert server_stats(url)["requests"] == 0  # no completion was asked for
    assert done.returncode == 2, done.stderr[-3000:]
    line = last_line(done)
    assert "'other', not 'fake'" in line and f"set {KNOBS[command]['model']} " in line
    assert "a rerun fails the same way" in line
    record("model name the server does not serve", f"msm generate {command}", done,
           "the same until the model setting is fixed; no completion was asked for", (tmp_path,))


# the first stage of each command, its re-asks (content attempts) and the setting of those
FIRST_STAGE = {"docs": ("domains", 3, "docs.content_attempts", "no JSON list"),
               "chats": ("domains", 3, "chats.content_attempts", "no JSON list"),
               "spec-variants": ("value_augmented", 4, "content_attempts", "no <content>")}


@pytest.mark.parametrize("command", ["docs", "chats", "spec-variants"])
def test_unusable_answers_exit_3_and_say_a_rerun_cannot_help(tmp_path, command):
    stage, attempts, setting, cause = FIRST_STAGE[command]
    with llm_server("--faults", "garbage", "--fault-rate", "1") as url:
        done = msm(argv(command, tmp_path, f"{url}/v1"), tmp_path)
        asked = server_stats(url)["requests"]
        again = msm(argv(command, tmp_path, f"{url}/v1"), tmp_path)
        assert server_stats(url)["requests"] == asked  # the rerun re-read them from the cache
    assert asked == attempts  # the first call and its re-asks; nothing after it
    out = tmp_path / "out"
    for run in (done, again):
        assert run.returncode == 3, run.stderr[-3000:]
        line = last_line(run)
        assert line.startswith(f"error: msm generate {command} is incomplete: stage '{stage}' "
                               f"produced 0 of 1 (1 content: {cause}")
        assert "Unusable answers" in line and "fail the same way" in line
        assert f"raise {setting} " in line and "worth a rerun" not in line
        assert f"Endpoint: {url}/v1 (backend.base_url)." in line
        assert "backend.max_failed_fraction=0.1" in line and str(out / "failures.jsonl") in line
    assert [json.loads(row)["stage"] for row in (out / "failures.jsonl").open()] == [stage]
    record("unusable answers (a weak model)", f"msm generate {command}", done,
           "exit 3 again, no new request: the answers come back from the cache", (tmp_path,))
    assert json.loads((out / "summary.json").read_text())["failures"] == 1


@pytest.mark.parametrize("command", ["docs", "chats", "complete"])
def test_timeouts_exit_3_in_bounded_time_and_say_rerun(tmp_path, command):
    with llm_server("--faults", "timeout", "--fault-rate", "1", "--stall", "30") as url:
        started = time.monotonic()
        done = msm(argv(command, tmp_path, f"{url}/v1", timeout=0.5, attempts=2), tmp_path)
        elapsed = time.monotonic() - started
        requests = server_stats(url)["requests"]
    assert done.returncode == 3, done.stderr[-3000:]
    assert elapsed < 25
    jobs = PROMPTS if command == "complete" else 1  # the first stage fails; nothing follows
    assert requests == 2 * jobs  # each job: two attempts (max_attempts=2), then given up
    line = last_line(done)
    stage = "complete" if command == "complete" else "domains"
    assert f"stage '{stage}' produced 0 of {jobs} ({jobs} transport: timeout)" in line
    assert f"Endpoint: {url}/v1 ({KNOBS[command]['url']})." in line
    assert "worth a rerun" in line and f"raise {KNOBS[command]['timeout']} " in line
    assert "Unusable answers" not in line
    record("every request times out", f"msm generate {command}", done,
           f"{KNOBS[command]['timeout']} bounds each try; a rerun retries what failed",
           (tmp_path,))


@pytest.mark.parametrize("command", ["docs", "complete"])
def test_server_dying_mid_run_then_a_rerun_buys_only_the_missing_calls(tmp_path, command):
    total, die_after = (DOCS_CALLS, 30) if command == "docs" else (PROMPTS, 5)
    out = tmp_path / "out"
    with llm_server("--die-after", str(die_after)) as url:
        died = msm(argv(command, tmp_path, f"{url}/v1"), tmp_path)
    assert died.returncode == 3, died.stderr[-3000:]
    assert "is incomplete" in last_line(died) and "worth a rerun" in last_line(died)
    first = len(cached_keys(out))
    assert die_after <= first < total
    with llm_server() as url:  # a fresh server on another port: the cache still applies
        done = msm(argv(command, tmp_path, f"{url}/v1"), tmp_path)
        stats = server_stats(url)
    assert done.returncode == 0, done.stderr[-3000:]
    assert stats["requests"] == sum(stats["delivered"].values()) == total - first
    record("server killed mid-run", f"msm generate {command}", died,
           f"against a server that answers: exit 0, buys only the {total - first} missing calls "
           f"of {total}", (tmp_path,))
    assert set(stats["delivered"].values()) == {1}
    keys = cached_keys(out)
    assert len(keys) == len(set(keys)) == total
    if command == "docs":
        assert bought(json.loads((out / "summary.json").read_text())) == (total - first, first)
        # a finished run re-renders from the cache alone: no server needed
        again = msm(argv(command, tmp_path, UNREACHABLE), tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        assert bought(json.loads((out / "summary.json").read_text())) == (0, total)
    else:
        report = json.loads((out / "report.json").read_text())
        assert (report["calls"], report["cached_calls"]) == (total - first, first)


def test_ctrl_c_exits_130_with_one_line_and_the_rerun_buys_nothing_twice(tmp_path):
    out = tmp_path / "out"
    with llm_server("--latency", "0.2") as url:
        args = argv("docs", tmp_path, f"{url}/v1")
        interrupted = ctrl_c_when([sys.executable, "-m", "msm_megatron.cli", *args],
                                  lambda: len(cached_keys(out)) >= 5, "5 cached calls",
                                  tmp_path, run_env(), wait=120, timeout=60)
        stderr = interrupted.stderr
        assert interrupted.returncode == 130, stderr[-3000:]
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
        assert lines[0].startswith("interrupted; completed work is kept: resume with "
                                   "`msm generate docs ")
        first = len(cached_keys(out))
        assert 5 <= first < DOCS_CALLS
        done = msm(args, tmp_path)
        stats = server_stats(url)
    assert done.returncode == 0, done.stderr[-3000:]
    keys = cached_keys(out)
    assert len(keys) == len(set(keys)) == DOCS_CALLS
    assert bought(json.loads((out / "summary.json").read_text())) == (DOCS_CALLS - first, first)
    # server side: only the calls in flight at Ctrl-C (≤ concurrency 8) were answered twice
    assert len(stats["delivered"]) == DOCS_CALLS
    assert 0 <= sum(stats["delivered"].values()) - DOCS_CALLS <= 8
    record("Ctrl-C", "msm generate docs", interrupted,
           f"exit 0; buys the {DOCS_CALLS - first} missing calls, none twice (only those in "
           "flight at Ctrl-C were answered twice by the server)", (tmp_path,))
