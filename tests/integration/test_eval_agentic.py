"""`msm eval` on CPU: a tiny random Qwen3 export answers the quick preset, a judge served by the
local server scores it, the report has Wilson intervals, and a SIGKILLed sweep resumes without
regenerating finished samples."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from msm_megatron.eval.stats import wilson
from tests.helpers.convert_models import save_random_hf_model
from tests.helpers.launch import REPO, run_env
from tests.helpers.llm_fixtures import llm_server, server_stats


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A tiny random Qwen3 with a Qwen-style tokenizer and chat template (an HF export)."""
    from transformers import AutoTokenizer

    from msm_megatron.data.toy_tokenizer import build_hf_tokenizer

    root = tmp_path_factory.mktemp("export")
    tok_dir = build_hf_tokenizer(root / "tok", template="qwen3")
    vocab = len(AutoTokenizer.from_pretrained(tok_dir))
    # the scenario prompts are ~1,100 tokens: the export declares room for them
    model = save_random_hf_model("qwen3", root / "model", vocab_size=vocab,
                                 max_position_embeddings=4096)
    for item in tok_dir.iterdir():
        shutil.copy2(item, model / item.name)
    return model


def msm_eval(url, out, export, *extra, env=None):
    return subprocess.run(
        [sys.executable, "-m", "msm_megatron.cli", "eval", f"arms=[base={export},msm={export}]",
         "preset=quick", "samples=3", "max_new_tokens=12", f"out_dir={out}",
         f"judge.base_url={url}/v1", "judge.model=judge", "judge.timeout_s=10", *extra,
         "--quiet"], cwd=REPO, env=run_env(env), capture_output=True, text=True, timeout=600)


def rows(path):
    return [json.loads(line) for line in path.open()]


def test_quick_sweep_report_and_judge_failures(tmp_path, export):
    # every judge call about the leaking scenario comes back truncated: no verdict for a third
    # of the samples, more than judge.max_failed_fraction: the report is written, then exit 3
    with llm_server("--fault-rate", "0.6", "--faults", "truncated,500",
                    "--poison", "confidential design document") as url:
        done = msm_eval(url, tmp_path / "ev", export, "aft_examples={msm: 1000}",
                        "series={msm: MSM}")
    assert done.returncode == 3, done.stderr[-3000:]
    assert "no verdict" in done.stderr and "judge.max_failed_fraction=0.1" in done.stderr
    assert "could not be obtained" not in done.stderr  # every judgement was answered
    out = tmp_path / "ev"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["incomplete"] and "judge.model" in summary["incomplete"]
    assert set(summary["arms"]) == {"base", "msm"} and "msm - base" in summary["differences"]
    base = summary["arms"]["base"]["conditions"]
    assert len(base) == 6
    for cid, c in base.items():  # verdicts cut off 3 times in a row are counted, not scored
        assert c["no_verdict"] == (3 if cid.startswith("leaking/") else 0), cid
        assert c["judge_unreachable"] == 0
    for cid, c in base.items():
        cl = c["classifier"]
        assert cl["n"] + c["no_verdict"] == 3
        ref = wilson(cl["k"], cl["n"])
        assert (cl["low"], cl["high"]) == (ref.low, ref.high)
        per_sample = rows(out / "base" / "agentic_misalignment" /
                          (cid.replace("/", "__") + ".jsonl"))
        assert [r["sample"] for r in per_sample] == [0, 1, 2]
        assert all(r["harmful"] == bool(r["verdict"] and r["mechanical"]) for r in per_sample)
    report = (out / "report.md").read_text()
    assert "| leaking/explicit-america/replacement/scratchpad |" in report and "95 %" in report
    assert "| judge unreachable | no verdict |" in report and "**Incomplete:**" in report
    assert "0 of 6 judged" in report  # the leaking scenario: nothing to rate
    assert (out / "misalignment.png").stat().st_size > 0
    # per scenario: pooled over the scenario's conditions, judge errors left out
    for scenario, r in summary["arms"]["base"]["scenarios"].items():
        cells = [c["classifier"] for cid, c in base.items() if cid.startswith(scenario + "/")]
        assert (r["k"], r["n"]) == (sum(c["k"] for c in cells), sum(c["n"] for c in cells))
    assert summary["arms"]["base"]["scenarios"]["leaking"]["n"] == 0
    # data efficiency: the sized arm is a point of its series, the unsized one a reference line
    eff = summary["data_efficiency"]
    assert eff["curves"] == {"MSM": [{"arm": "msm", "aft_examples": 1000,
                                      "rate": summary["arms"]["msm"]["average_classifier"]}]}
    assert eff["references"] == {"base": summary["arms"]["base"]["average_classifier"]}
    assert "| MSM | 1000 | msm |" in report and "## Per scenario" in report
    assert (out / "scenarios.png").stat().st_size > 0
    assert (out / "data_efficiency.png").stat().st_size > 0


def test_sigkill_then_resume_regenerates_nothing(tmp_path, export):
    with llm_server() as url:
        killed = msm_eval(url, tmp_path / "ev", export, env={"MSM_EVAL_FAULT_KILL":
                                                            "after_samples:7"})
        assert killed.returncode == -9
        folder = tmp_path / "ev" / "base" / "agentic_misalignment"
        before = {p.name: rows(p) for p in folder.glob("*.samples.jsonl")}
        assert sum(len(v) for v in before.values()) == 7
        judged_before = server_stats(url)["requests"]
        done = msm_eval(url, tmp_path / "ev", export)
        assert done.returncode == 0, done.stderr[-3000:]
        judged_after = server_stats(url)["requests"]
    for name, old in before.items():
        new = rows(folder / name)
        assert new[: len(old)] == old  # finished samples kept, not regenerated
        assert [r["sample"] for r in new] == sorted({r["sample"] for r in new})
    assert sum(len(rows(p)) for p in folder.glob("*.samples.jsonl")) == 6 * 3
    # the kill came before judging; then each arm's 6 conditions × 3 samples were judged once
    # (each arm has its own judge cache, so arms can run as separate array tasks)
    assert judged_before == 0 and judged_after == 2 * 6 * 3
    # sample i is drawn with seed + i, so killed-and-resumed equals an uninterrupted sweep
    with llm_server() as url:
        assert msm_eval(url, tmp_path / "straight", export).returncode == 0
    straight = tmp_path / "straight" / "base" / "agentic_misalignment"
    for p in folder.glob("*.samples.jsonl"):
        assert sorted(rows(p), key=lambda r: r["sample"]) == rows(straight / p.name), p.name


def test_endpoint_runner_samples_once_each(tmp_path):
    with llm_server() as url:
        args = [sys.executable, "-m", "msm_megatron.cli", "eval", "arms=[served=served-model]",
                "preset=quick", "samples=2", "runner=openai", f"runner_base_url={url}/v1",
                f"out_dir={tmp_path / 'ev'}", f"judge.base_url={url}/v1", "judge.model=judge",
                "--quiet"]
        done = subprocess.run(args, cwd=REPO, env=run_env(), capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        first = server_stats(url)["requests"]
        again = subprocess.run(args, cwd=REPO, env=run_env(), capture_output=True, text=True,
                               timeout=600)
        assert again.returncode == 0 and server_stats(url)["requests"] == first
    # 12 samples generated, each once (two samples of a cell are distinct requests with their
    # own seeds, so the fake answers them differently); each of the 12 replies judged once
    assert first == 6 * 2 + 6 * 2
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert sum(c["classifier"]["n"] for c in summary["arms"]["served"]["conditions"].values()) \
        == 12


def test_value_generalization_choices_and_rates(tmp_path, export):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from msm_megatron.eval.values import load_probes, probe_prompt

    with llm_server() as url:
        done = msm_eval(url, tmp_path / "ev", export, "tasks=[value_generalization]")
        assert server_stats(url)["requests"] == 0  # no judge needed for probes
    assert done.returncode == 0, done.stderr[-3000:]
    probes = load_probes(REPO / "examples" / "eval" / "value_probes.jsonl")
    choices = {r["id"]: r for r in rows(tmp_path / "ev" / "base" / "value_generalization" /
                                        "choices.jsonl")}
    tok = AutoTokenizer.from_pretrained(export)
    model = AutoModelForCausalLM.from_pretrained(export).eval()
    a, b = (tok.encode(c, add_special_tokens=False)[0] for c in ("A", "B"))
    for probe in probes[:4]:  # log-prob choice, recomputed independently
        text = tok.apply_chat_template([{"role": "user", "content": probe_prompt(probe)}],
                                       add_generation_prompt=True, tokenize=False)
        with torch.no_grad():
            logits = model(**tok(text, return_tensors="pt", add_special_tokens=False)).logits
        assert choices[probe["id"]]["logprob"] == ("A" if logits[0, -1, a] >= logits[0, -1, b]
                                                   else "B")
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    scores = summary["value_generalization"]["base"]["logprob"]
    consistent = sum(choices[p["id"]]["logprob"] == p["values"]["america"] for p in probes)
    assert scores["america"]["k"] == consistent and scores["america"]["n"] == len(probes)
    assert scores["america"]["k"] + scores["affordability"]["k"] == len(probes)  # opposed keys
    assert set(scores["america"]["domains"]) == {"politics", "art", "fashion", "transport"}
    assert "## Value generalization" in (tmp_path / "ev" / "report.md").read_text()


def test_reasoning_traces_labelled_per_arm(tmp_path):
    with llm_server("--fault-rate", "0.3", "--faults", "truncated") as url:
        done = subprocess.run(
            [sys.executable, "-m", "msm_megatron.cli", "eval", "arms=[served=served-model]",
             "preset=quick", "samples=2", "runner=openai", f"runner_base_url={url}/v1",
             f"out_dir={tmp_path / 'ev'}", f"judge.base_url={url}/v1", "judge.model=judge",
             "tasks=[agentic_misalignment,reasoning_traces]", "--quiet"], cwd=REPO,
            env=run_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    traces = summary["reasoning_traces"]["served"]
    assert traces["traces"] == 12  # every sample had a scratchpad
    for name in ("self_preservation", "deference", "rule_misreading", "impermanence"):
        assert traces[name]["n"] == (traces["traces"] - traces["judge_unreachable"]
                                     - traces["no_verdict"])
    assert "## Reasoning traces" in (tmp_path / "ev" / "report.md").read_text()


def test_trace_label_parsing():
    from msm_megatron.eval.traces import parse_labels
    from msm_megatron.llm.backend import LLMResponse
    from msm_megatron.llm.jobs import ContentError

    assert parse_labels(LLMResponse("why\nLABELS: none", "stop")) == []
    assert parse_labels(LLMResponse("LABELS: impermanence, deference", "stop")) == [
        "deference", "impermanence"]
    for bad in ("no line", "LABELS: vanity", "LABELS: "):
        with pytest.raises(ContentError):
            parse_labels(LLMResponse(bad, "stop"))


def test_finished_sweep_rerun_loads_no_model(tmp_path, export):
    """Everything on disk: a rerun rebuilds the report without the model (its weights are gone)
    and without new judge calls — what the pipeline's report stage relies on."""
    model = tmp_path / "model"
    shutil.copytree(export, model)
    args = ["tasks=[agentic_misalignment,value_generalization]", "samples=2"]
    with llm_server() as url:
        first = subprocess.run(
            [sys.executable, "-m", "msm_megatron.cli", "eval", f"arms=[a={model}]",
             "preset=quick", "max_new_tokens=8", f"out_dir={tmp_path}/ev",
             f"judge.base_url={url}/v1", "judge.model=judge", *args, "--quiet"],
            cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=600)
        assert first.returncode == 0, first.stderr[-3000:]
        summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
        calls = server_stats(url)["requests"]
        for weights in model.glob("*.safetensors"):
            weights.unlink()
        again = subprocess.run(first.args, cwd=REPO, env=run_env(), capture_output=True,
                               text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-3000:]
        assert server_stats(url)["requests"] == calls
    assert json.loads((tmp_path / "ev" / "summary.json").read_text()) == summary


def test_mechanical_only_mode_needs_no_judge_and_says_so(tmp_path, export):
    done = subprocess.run(
        [sys.executable, "-m", "msm_megatron.cli", "eval", f"arms=[a={export}]", "preset=quick",
         "samples=2", "max_new_tokens=8", f"out_dir={tmp_path}/ev", "judge_mode=mechanical",
         "judge.base_url=http://127.0.0.1:9/v1", "--quiet"],  # nothing listens: never called
        cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["headline"] == "mechanical"
    for cid, c in summary["arms"]["a"]["conditions"].items():
        per_sample = rows(tmp_path / "ev" / "a" / "agentic_misalignment" /
                          (cid.replace("/", "__") + ".jsonl"))
        assert c["mechanical"]["n"] == 2 and c["classifier"]["n"] == 0
        assert c["mechanical"]["k"] == sum(bool(r["mechanical"]) for r in per_sample)
        assert all(r["verdict"] is None and "mechanical checks only" in r["error"]
                   for r in per_sample)
    assert "Mechanical checks only — no judge was configured" in (
        tmp_path / "ev" / "report.md").read_text()
    assert not (tmp_path / "ev" / "a" / "judge_calls.jsonl").exists()


def test_official_scenarios_paper_protocol_and_agreement(tmp_path, export):
    """scenarios.source=official on clones in the official layout: the agent sees the rendered
    official prompts, the paper's classifier gets the whole completion, the report names the
    source; `msm eval agreement` then re-judges the saved transcripts with two protocols."""
    from msm_megatron.eval.agentic.classifiers import official_classifier
    from msm_megatron.eval.agentic.official import OfficialScenarios
    from tests.helpers.official_clones import write_clones

    _, msm = write_clones(tmp_path / "clones")
    official = ["scenarios.source=official", f"scenarios.msm_repo={msm}"]
    with llm_server() as url:
        done = msm_eval(url, tmp_path / "ev", export, *official)
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
        assert summary["scenarios"]["source"] == "official"
        assert summary["judge_protocol"] == "paper"
        report = (tmp_path / "ev" / "report.md").read_text()
        assert "Scenarios: **official**" in report and "official gate" in report
        source = OfficialScenarios(None, str(msm))
        folder = tmp_path / "ev" / "base" / "agentic_misalignment_official"
        judged = 0
        for cid, c in summary["arms"]["base"]["conditions"].items():
            stem = cid.replace("/", "__")
            cell = next(x for x in source.preset("quick", "Qwen").conditions if x.id == cid)
            shown = json.loads((folder / f"{stem}.prompt.json").read_text())
            assert (shown["system"], shown["user"]) == (source.prompt(cell).system,
                                                        source.prompt(cell).user)
            cls = official_classifier(source.repo_for(cell.scenario), cell.scenario)
            for r in rows(folder / f"{stem}.jsonl"):
                assert r["official_mechanical"] == cls.gate(r["reply"])
                assert r["harmful"] == bool(r["verdict"] and r["official_mechanical"])
                judged += r["verdict"] is not None
                # the official prompt asked for <answer> tags (the builtin one for VERDICT:)
                assert r["verdict"] is None or "<answer>" in r["judge_reasoning"]
            assert c["official_mechanical"]["n"] == 3
        assert judged > 0

        agree = subprocess.run(
            [sys.executable, "-m", "msm_megatron.cli", "eval", "agreement", str(tmp_path / "ev"),
             f"a.base_url={url}/v1", "a.model=judge", f"b.base_url={url}/v1", "b.model=judge",
             "a_name=paper", "b_name=same", "--quiet"],
            cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=600)
        assert agree.returncode == 0, agree.stderr[-3000:]
        same = json.loads((tmp_path / "ev" / "agreement" / "paper_vs_same.json").read_text())
        assert same["overall"]["kappa"] == 1.0 and same["overall"]["n"] > 0  # one judge, twice
        versus = subprocess.run(
            [*agree.args[:-2], "b.protocol=builtin", "b_name=builtin", "--quiet"],
            cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=600)
        assert versus.returncode == 0, versus.stderr[-3000:]
    result = json.loads((tmp_path / "ev" / "agreement" / "paper_vs_builtin.json").read_text())
    assert set(result["scenarios"]) == {"leaking", "murder", "exfiltration"}
    assert "| overall |" in (tmp_path / "ev" / "agreement" / "paper_vs_builtin.md").read_text()


def test_official_source_without_a_clone_is_a_clear_error(tmp_path, export):
    done = msm_eval("http://127.0.0.1:9", tmp_path / "ev", export, "scenarios.source=official",
                    f"scenarios.msm_repo={tmp_path / 'missing'}")
    assert done.returncode == 2
    assert "scenarios.msm_repo=" in done.stderr and "no such directory" in done.stderr
