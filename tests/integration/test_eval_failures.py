"""`msm eval` ends with the truth: no judge means mechanical scoring, said first; endpoints are
checked before anything is paid; judgements that could not be obtained, or came back without a
verdict, are counted apart and end the sweep incomplete (exit 3) after its report; settings
that cannot work (a served model name, a mistyped arm, a prompt longer than the model) fail at
once with exit 2 and the setting to fix. Every sweep here is a subprocess of the real CLI
against the stand-in server (tests/helpers/llm_server.py) and a tiny random Qwen3 export."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from msm_megatron.eval.sweep_config import NO_JUDGE
from tests.helpers.convert_models import save_random_hf_model
from tests.helpers.failure_table import record
from tests.helpers.launch import ctrl_c_when, run_env
from tests.helpers.llm_fixtures import llm_server, server_stats

DEAD_URL = "http://127.0.0.1:9/v1"  # nothing listens there


def _export(root, **config):
    """A tiny random Qwen3 with a Qwen-style tokenizer and chat template."""
    from transformers import AutoTokenizer

    from msm_megatron.data.toy_tokenizer import build_hf_tokenizer

    tok_dir = build_hf_tokenizer(root / "tok", template="qwen3")
    model = save_random_hf_model("qwen3", root / "model",
                                 vocab_size=len(AutoTokenizer.from_pretrained(tok_dir)), **config)
    for item in tok_dir.iterdir():
        shutil.copy2(item, model / item.name)
    return model


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """Room for the ~1,100-token scenario prompts."""
    return _export(tmp_path_factory.mktemp("export"), max_position_embeddings=4096)


def msm_eval(out, *args, env=None, timeout=600):
    """`msm eval` writing ``out``, run from the test's own directory (not the repository), as a
    user runs it from theirs."""
    return subprocess.run(
        [sys.executable, "-m", "msm_megatron.cli", "eval", "preset=quick", "samples=1",
         "max_new_tokens=4", f"out_dir={out}", *args, "--quiet"],
        cwd=Path(out).parent, env=run_env({"HF_HUB_OFFLINE": "1", **(env or {})}),
        capture_output=True,
        text=True, timeout=timeout)


def judged_by(url, *extra):
    return (f"judge.base_url={url}/v1", "judge.model=judge", "judge.timeout_s=10", *extra)


def strict_json(path):
    def refuse(name):
        raise AssertionError(f"{path}: {name} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def rows(folder):
    return [json.loads(line) for p in sorted(folder.glob("*.jsonl"))
            if not p.name.endswith(".samples.jsonl") for line in p.open()]


def test_no_judge_scores_mechanically_and_says_so_first(tmp_path, export):
    done = msm_eval(tmp_path / "ev", f"arms=[a={export}]")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[0] == NO_JUDGE
    assert "average mechanical-evidence rate" in done.stdout and "nan" not in done.stdout
    summary = strict_json(tmp_path / "ev" / "summary.json")  # no NaN: rates of nothing are null
    assert summary["headline"] == "mechanical" and summary["incomplete"] is None
    arm = summary["arms"]["a"]
    assert arm["average_classifier"] is None and arm["average_mechanical"] is not None
    report = (tmp_path / "ev" / "report.md").read_text()
    assert "Mechanical checks only" in report and "nan" not in report.lower()
    # asking for the judge without one is a setting error, before anything is written
    llm = msm_eval(tmp_path / "llm", f"arms=[a={export}]", "judge_mode=llm")
    assert llm.returncode == 2 and "judge.base_url" in llm.stderr
    assert not (tmp_path / "llm").exists()
    record("no judge configured", "msm eval", done, "— (scored mechanically, as it says first)",
           (tmp_path,), message=done.stdout.splitlines()[0])
    record("judge_mode=llm without a judge", "msm eval", llm,
           "the same until judge.base_url (or judge.kind) is set; nothing written", (tmp_path,))


def test_unreachable_judge_fails_before_anything_is_drawn(tmp_path, export):
    start = time.monotonic()
    done = msm_eval(tmp_path / "ev", f"arms=[a={export}]", f"judge.base_url={DEAD_URL}",
                    "judge.model=judge")
    assert done.returncode == 4, done.stderr[-3000:]
    assert time.monotonic() - start < 60
    assert "judge.base_url" in done.stderr and "nothing was sent" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "ev" / "sweep.yaml").exists()
    assert not list(tmp_path.rglob("*.samples.jsonl"))
    record("judge server down", "msm eval", done,
           "the same until the judge answers; no sample was drawn", (tmp_path,))


def test_judge_killed_mid_sweep_then_rerun_buys_only_the_missing(tmp_path, export):
    out = tmp_path / "ev"
    with llm_server("--die-after", "5") as url:
        killed = msm_eval(out, f"arms=[a={export}]", "samples=2",
                          *judged_by(url, "judge.max_attempts=2", "judge.concurrency=1"))
    assert killed.returncode == 3, killed.stderr[-3000:]
    assert "could not be obtained" in killed.stderr and "rerun" in killed.stderr.lower()
    assert "judge.base_url" in killed.stderr and "Traceback" not in killed.stderr
    summary = strict_json(out / "summary.json")  # the report is written all the same
    assert summary["incomplete"]
    first = rows(out / "a" / "agentic_misalignment")
    missing = sum(r["judge_failure"] == "unreachable" for r in first)
    assert 12 - 5 <= missing < 12 and summary["arms"]["a"]["judge_unreachable"] == missing
    assert all(r["verdict"] is None for r in first if r["judge_failure"])
    assert "**Incomplete:**" in (out / "report.md").read_text()
    with llm_server() as url:
        again = msm_eval(out, f"arms=[a={export}]", "samples=2", *judged_by(url))
        bought = server_stats(url)["requests"]
    assert again.returncode == 0, again.stderr[-3000:]
    assert bought == missing  # the answered judgements came from the cache
    record("judge killed mid-sweep", "msm eval", killed,
           f"with a judge that answers: exit 0; buys only the {missing} missing judgements, "
           "draws no sample again", (tmp_path,))
    summary = strict_json(out / "summary.json")
    assert summary["incomplete"] is None and summary["arms"]["a"]["judge_unreachable"] == 0
    assert all(r["judge_failure"] is None for r in rows(out / "a" / "agentic_misalignment"))


def test_answers_without_a_verdict_are_counted_apart(tmp_path, export):
    out = tmp_path / "ev"
    with llm_server("--faults", "garbage", "--fault-rate", "1") as url:
        done = msm_eval(out, f"arms=[a={export}]", *judged_by(url))
        calls = server_stats(url)["requests"]
        assert done.returncode == 3, done.stderr[-3000:]
        assert "no verdict" in done.stderr and "judge.model" in done.stderr
        assert "could not be obtained" not in done.stderr
        arm = strict_json(out / "summary.json")["arms"]["a"]
        assert (arm["no_verdict"], arm["judge_unreachable"]) == (6, 0)
        assert arm["average_classifier"] is None
        assert "0 of 6 judged" in (out / "report.md").read_text()
        # within the tolerance the sweep is complete; the answers come back from the cache
        tolerated = msm_eval(out, f"arms=[a={export}]",
                             *judged_by(url, "judge.max_failed_fraction=1"))
        assert tolerated.returncode == 0, tolerated.stderr[-3000:]
        assert server_stats(url)["requests"] == calls
    assert calls == 6 * 3  # each re-asked three times
    record("judge answers without a verdict", "msm eval", done,
           "re-reads the answers from the cache (no new call): exit 0 once "
           "judge.max_failed_fraction allows them", (tmp_path,))


def test_openai_runner_names_the_served_model(tmp_path, export):
    with llm_server("--served-model-name", "toy") as url:
        base = ["arms=[served=/models/not/here]", "runner=openai", f"runner_base_url={url}/v1"]
        wrong = msm_eval(tmp_path / "wrong", *base)
        assert wrong.returncode == 2, wrong.stderr[-3000:]
        assert "runner_models.served" in wrong.stderr and "'toy'" in wrong.stderr
        assert not (tmp_path / "wrong" / "sweep.yaml").exists()
        record("runner=openai: served name not set", "msm eval", wrong,
               "exit 0 with runner_models={arm: served name}", (tmp_path,))
        done = msm_eval(tmp_path / "ev", *base, "runner_models={served: toy}")
        assert done.returncode == 0, done.stderr[-3000:]
        assert server_stats(url)["requests"] == 6
    # the server reports its context: a prompt that cannot fit is refused before sampling
    with llm_server("--served-model-name", "toy", "--max-model-len", "600") as url:
        short = msm_eval(tmp_path / "short", f"arms=[served={export}]", "runner=openai",
                         f"runner_base_url={url}/v1", "runner_models={served: toy}")
        assert short.returncode == 2, short.stderr[-3000:]
        assert "context of 600 tokens" in short.stderr and "max_new_tokens=4" in short.stderr
        assert server_stats(url)["requests"] == 0
    record("prompt + max_new_tokens longer than the served context", "msm eval", short,
           "the same until a shorter preset or max_new_tokens, or a longer context",
           (tmp_path, export))


def test_openai_runner_that_stalls_ends_in_bounded_time(tmp_path):
    settings = ["arms=[served=served-model]", "runner=openai", "runner_timeout_s=1",
                "runner_max_attempts=1"]
    with llm_server("--faults", "timeout", "--fault-rate", "1", "--stall", "60") as url:
        start = time.monotonic()
        done = msm_eval(tmp_path / "ev", *settings, f"runner_base_url={url}/v1", timeout=120)
        assert done.returncode == 3, done.stderr[-3000:]
        assert time.monotonic() - start < 60
    assert "runner_timeout_s" in done.stderr and "rerun" in done.stderr.lower()
    assert "Traceback" not in done.stderr
    record("runner=openai: every request times out", "msm eval", done,
           "runner_timeout_s × runner_max_attempts bounds each sample (here 1 s × 1: "
           "the sweep ended in under a minute)", (tmp_path,))
    with llm_server("--hang") as url:  # not even its model list: nothing is sent (exit 4)
        start = time.monotonic()
        hung = msm_eval(tmp_path / "hung", *settings, f"runner_base_url={url}/v1", timeout=120)
        assert hung.returncode == 4, hung.stderr[-3000:]
        assert time.monotonic() - start < 60 and "runner_base_url" in hung.stderr
    record("runner=openai: server stuck (answers nothing)", "msm eval", hung,
           "the same until the server answers; nothing was sent", (tmp_path,))


def test_mistyped_arm_path_names_the_arm(tmp_path, export):
    done = msm_eval(tmp_path / "ev", f"arms=[good={export},typo={tmp_path}/runs/hf/iter_9]")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "arm typo" in done.stderr and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "ev").exists()
    # shaped like a hub id: the loader's failure names the arm too
    hub = msm_eval(tmp_path / "hub", "arms=[hub=no-such-org-msm/no-such-model]")
    assert hub.returncode == 2, hub.stderr[-3000:]
    assert "arm hub" in hub.stderr and "Traceback" not in hub.stderr
    record("mistyped arm path", "msm eval", done, "the same until the path is fixed; nothing "
           "written", (tmp_path, export))


def test_prompt_longer_than_the_model_is_refused_with_the_numbers(tmp_path):
    short = _export(tmp_path / "short", max_position_embeddings=128)
    done = msm_eval(tmp_path / "ev", f"arms=[tiny={short}]")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "arm tiny" in done.stderr and "context of 128 tokens" in done.stderr
    assert "the longest prompt is" in done.stderr and "max_new_tokens=4" in done.stderr
    assert not list(tmp_path.rglob("*.samples.jsonl"))
    record("prompt + max_new_tokens longer than the model (runner=hf)", "msm eval", done,
           "the same until a shorter preset or max_new_tokens, or a longer context",
           (tmp_path,))


def test_agreement_checks_both_judges_and_counts_what_is_missing(tmp_path, export):
    sweep = tmp_path / "ev"
    assert msm_eval(sweep, f"arms=[a={export}]").returncode == 0  # transcripts, no judge

    def agreement(*args):
        return subprocess.run(
            [sys.executable, "-m", "msm_megatron.cli", "eval", "agreement", str(sweep), *args,
             "--quiet"], cwd=tmp_path, env=run_env(), capture_output=True, text=True,
            timeout=600)

    with llm_server() as good, llm_server("--faults", "garbage", "--fault-rate", "1") as bad:
        unset = agreement(f"a.base_url={good}/v1", "a.model=judge")
        assert unset.returncode == 2 and "b.base_url" in unset.stderr, unset.stderr[-2000:]
        dead = agreement(f"a.base_url={good}/v1", "a.model=judge", f"b.base_url={DEAD_URL}")
        assert dead.returncode == 4 and "b.base_url" in dead.stderr, dead.stderr[-2000:]
        assert server_stats(good)["requests"] == 0  # checked before the first paid call
        weak = agreement(f"a.base_url={good}/v1", "a.model=judge", f"b.base_url={bad}/v1",
                         "b.model=judge")
    assert weak.returncode == 3, weak.stderr[-3000:]
    assert "no verdict" in weak.stderr and "b.max_failed_fraction" in weak.stderr
    result = strict_json(sweep / "agreement" / "a_vs_b.json")
    assert result["overall"]["n"] == 0 and result["overall"]["kappa"] is None
    assert result["overall"]["unscored"] == 6 and result["incomplete"]
    record("second judge server down", "msm eval agreement", dead,
           "the same until it answers; the first judge was asked nothing", (tmp_path,))
    record("second judge answers without a verdict", "msm eval agreement", weak,
           "— (κ is null over nothing scored; the JSON says incomplete)", (tmp_path,))


def test_ctrl_c_mid_sampling_ends_in_one_line_and_the_rerun_keeps_what_was_drawn(tmp_path, export):
    out = tmp_path / "ev"
    args = [sys.executable, "-m", "msm_megatron.cli", "eval", "preset=quick", "samples=8",
            "max_new_tokens=48", "batch_samples=2", f"out_dir={out}", f"arms=[a={export}]",
            "--quiet"]
    interrupted = ctrl_c_when(args, lambda: any(out.rglob("*.samples.jsonl")), "a sample",
                              tmp_path, run_env({"HF_HUB_OFFLINE": "1"}))
    stderr = interrupted.stderr
    assert interrupted.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith(
        "interrupted; completed work is kept: resume with `msm eval ")
    drawn = {p.name: p.read_text() for p in out.rglob("*.samples.jsonl")}
    assert drawn and sum(t.count("\n") for t in drawn.values()) < 6 * 8
    done = subprocess.run(args, cwd=tmp_path, env=run_env({"HF_HUB_OFFLINE": "1"}),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for name, before in drawn.items():  # what was drawn stays, the rest is appended
        after = next(out.rglob(name)).read_text()
        assert after.startswith(before)
        assert sorted(json.loads(line)["sample"] for line in after.splitlines()) == list(range(8))
    record("Ctrl-C while sampling", "msm eval", interrupted,
           "exit 0; keeps every sample already written and draws only the missing ones",
           (tmp_path, export))
