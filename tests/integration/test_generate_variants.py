"""Rules-mode documents and `msm generate spec-variants` against the local server."""

from __future__ import annotations

import json
import subprocess
import sys

from msm_megatron.generate import prompts
from msm_megatron.spec import load_spec
from tests.helpers.launch import REPO, run_env
from tests.helpers.llm_fixtures import llm_server

RULES = REPO / "examples" / "spec" / "rules_spec.txt"


def test_spec_variants_keep_placeholders_and_match_lengths(tmp_path):
    with llm_server("--fault-rate", "0.2", "--faults", "429,no_tags,truncated") as url:
        done = subprocess.run(
            [sys.executable, "-m", "msm_megatron.cli", "generate", "spec-variants", str(RULES),
             f"backend.base_url={url}/v1", "backend.model=fake", f"out_dir={tmp_path / 'v'}",
             "--quiet"], cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "v"
    summary = json.loads((out / "summary.json").read_text())
    value, rule = summary["value_augmented_words"], summary["rule_augmented_words"]
    assert abs(rule - value) <= 0.25 * value
    for name in ("value_augmented.txt", "rule_augmented.txt"):
        spec = load_spec(out / name, "Qwen", "Alibaba")  # a usable spec template
        assert "{model_name}" in spec.template and "Qwen" in spec.text


def test_rules_mode_prompts_forbid_invented_reasons():
    sub = {"name": "s", "context": "c", "spec_section": "GP2. Do no harm."}
    assert prompts.RULES_NOTE in prompts.assertions(sub, "Qwen", 5, rules=True)
    assert prompts.RULES_NOTE in prompts.document("spec", sub, "memo", "idea", "Qwen", "Ali",
                                                  ["x"], rules=True)
    assert prompts.RULES_NOTE not in prompts.document("spec", sub, "memo", "idea", "Qwen", "Ali",
                                                      ["x"])


def test_rules_mode_docs_run(tmp_path):
    with llm_server() as url:
        done = subprocess.run(
            [sys.executable, "-m", "msm_megatron.cli", "generate", "docs", str(RULES),
             "docs.mode=rules", f"backend.base_url={url}/v1", "backend.model=fake",
             f"out_dir={tmp_path / 'd'}", "docs.domains=2", "docs.subdomains_per_domain=1",
             "docs.doc_types=2", "docs.ideas_per_type=1", "--quiet"], cwd=REPO, env=run_env(),
            capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    calls = [json.loads(line) for line in (tmp_path / "d" / "calls.jsonl").open()]
    assert len(calls) == 1 + 2 + 2 * 2 + 4 + 4  # domains, subdomains, claims+types, ideas, docs
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["documents"] >= 3
