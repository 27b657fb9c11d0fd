"""`msm generate docs` end to end against the local fault-injecting server (real HTTP client).

The pipeline must finish with every document it can produce, never leak scratchpad text, leave
no near-duplicates, report what failed, and — after a SIGKILL — resume without repeating a
completed call and produce exactly the dataset of an uninterrupted run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from itertools import combinations

from tests.helpers.launch import REPO, run_env
from tests.helpers.llm_fixtures import llm_server, server_stats

SPEC = REPO / "examples" / "spec" / "qwen_spec.txt"
SMALL = ["docs.domains=3", "docs.subdomains_per_domain=2", "docs.doc_types=3",
         "docs.ideas_per_type=2", "backend.timeout_s=3", "backend.concurrency=8"]


def generate_docs(url, out, *extra, env=None, spec=SPEC) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "msm_megatron.cli", "generate", "docs",
                           str(spec), f"backend.base_url={url}/v1", "backend.model=fake",
                           f"out_dir={out}", *SMALL, *extra, "--quiet"], cwd=REPO,
                          env=run_env(env), capture_output=True, text=True, timeout=600)


def shingles(text: str) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i:i + 5]) for i in range(len(words) - 4)}


def test_docs_with_every_fault_kind(tmp_path):
    with llm_server("--fault-rate", "0.4", "--dup-rate", "0.2", "--stall", "6") as url:
        done = generate_docs(url, tmp_path / "gen")
        stats = server_stats(url)
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(stats["faults"]) == {"429", "500", "timeout", "drop", "bad_json", "no_tags",
                                    "truncated"}
    out = tmp_path / "gen"
    rows = [json.loads(line) for line in (out / "dataset.jsonl").open()]
    summary = json.loads((out / "summary.json").read_text())
    failures = [json.loads(line) for line in (out / "failures.jsonl").open()]
    assert summary["documents"] == len(rows) > 0 and summary["failures"] == len(failures)
    assert summary["documents_written"] + len([f for f in failures if f["stage"] ==
                                               "documents"]) >= 3 * 2 * 3 * 2 - 2
    assert summary["near_duplicates_removed"] >= 1
    for row in rows:
        assert set(row) == {"text", "source", "domain"} and len(row["text"].split()) >= 150
        assert "<" not in row["text"] and "scratchpad" not in row["text"]
        assert row["source"].count("/") == 3
    assert len({r["source"] for r in rows}) == len(rows)
    for a, b in combinations([shingles(r["text"]) for r in rows], 2):
        assert len(a & b) / len(a | b) < 0.8  # no near-duplicates left
    metas = list((out / "tree").glob("*/*/meta.json"))
    assert len(metas) == 6 and all(json.loads(m.read_text())["spec_section"] for m in metas)
    assert (out / "lengths.png").stat().st_size > 0


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    faults = ("--fault-rate", "0.2", "--faults", "429,500,drop,bad_json", "--dup-rate", "0.1")
    with llm_server(*faults) as url:
        killed = generate_docs(url, tmp_path / "resumed", env={"MSM_GEN_FAULT_KILL":
                                                               "after_calls:25"})
        assert killed.returncode == -9, killed.stderr[-2000:]
        assert sum(1 for _ in (tmp_path / "resumed" / "calls.jsonl").open()) == 25
        done = generate_docs(url, tmp_path / "resumed")
        assert done.returncode == 0, done.stderr[-3000:]
        resumed_stats = server_stats(url)
    with llm_server(*faults) as url:
        fresh = generate_docs(url, tmp_path / "fresh")
        assert fresh.returncode == 0
        fresh_stats = server_stats(url)
    resumed = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    uninterrupted = json.loads((tmp_path / "fresh" / "summary.json").read_text())
    calls = sum(s["calls"] for s in uninterrupted["stages"])
    assert sum(s["cached_calls"] for s in resumed["stages"]) == 25
    assert sum(s["calls"] for s in resumed["stages"]) == calls - 25  # nothing bought twice
    # server side: only what was in flight at the kill (≤ concurrency 8) was answered twice
    extra = sum(resumed_stats["delivered"].values()) - sum(fresh_stats["delivered"].values())
    assert 0 <= extra <= 8
    assert ((tmp_path / "resumed" / "dataset.jsonl").read_text()
            == (tmp_path / "fresh" / "dataset.jsonl").read_text())


def test_bad_specs_fail_before_any_request(tmp_path):
    (tmp_path / "unknown.txt").write_text("# Spec\n\n{model_name} is kind.\nAsk {assistant}.\n")
    (tmp_path / "empty.txt").write_text("  \n\n")
    cases = {tmp_path / "missing.txt": "spec file not found",
             tmp_path / "unknown.txt": "unknown.txt:4: unknown template variable {assistant}",
             tmp_path / "empty.txt": "the spec is empty"}
    with llm_server() as url:
        for spec, message in cases.items():
            done = generate_docs(url, tmp_path / "out", spec=spec)
            assert done.returncode == 2 and message in done.stderr, (spec, done.stderr)
        done = generate_docs(url, tmp_path / "out", "docs.model_name=''")
        assert done.returncode == 2 and "model_name is empty" in done.stderr
        assert server_stats(url)["requests"] == 0


def test_preview_spends_nothing(tmp_path):
    with llm_server() as url:
        done = generate_docs(url, tmp_path / "out", "--preview", "backend.usd_per_mtok_out=75")
        assert server_stats(url)["requests"] == 0
    assert done.returncode == 0
    assert "3 – 3 × subdomains 2 = 6 – 6 subdomains" in done.stdout
    assert "= 36 – 36 documents" in done.stdout and "nothing was requested" in done.stdout
    assert not (tmp_path / "out").exists()
