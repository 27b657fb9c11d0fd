"""Who answers the eval prompts: an HF checkpoint in transformers, or an OpenAI-compatible server.

Every runner turns (system, user, sample index) into one reply. Sample ``i`` of a prompt is a
distinct request (``LLMRequest.attempt = i``), so with the HTTP runner each sample has its own
cache entry and an interrupted sweep never pays for a finished sample again.
(The vLLM offline runner of issue 6 is not written yet.)
"""

from __future__ import annotations

from pathlib import Path


class HFRunner:
    """transformers ``generate`` on CPU (or the current CUDA device): tests and small models."""

    def __init__(self, model_dir: str | Path, max_new_tokens: int, temperature: float,
                 seed: int = 0):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if self.tokenizer.chat_template is None:
            from msm_megatron.config import ConfigError

            raise ConfigError(f"{model_dir}: the tokenizer has no chat template; export the "
                              "checkpoint with its tokenizer (msm convert export --hf-assets)")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()
        self.max_new_tokens, self.temperature, self.seed = max_new_tokens, temperature, seed

    def reply(self, system: str, user: str, sample: int) -> str:
        import torch

        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}]
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                 return_tensors="pt", return_dict=True)
        ids = {k: v.to(self.model.device) for k, v in ids.items()}
        torch.manual_seed(self.seed * 1_000_003 + sample)
        sampling = ({"do_sample": True, "temperature": self.temperature} if self.temperature > 0
                    else {"do_sample": False})
        with torch.no_grad():
            out = self.model.generate(**ids, max_new_tokens=self.max_new_tokens,
                                      pad_token_id=self.tokenizer.pad_token_id
                                      or self.tokenizer.eos_token_id, **sampling)
        return self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


class EndpointRunner:
    """An OpenAI-compatible server (e.g. ``vllm serve`` of the export), through the call cache."""

    def __init__(self, backend, cache, max_new_tokens: int, temperature: float):
        from msm_megatron.generate.runner import CallRunner

        self.calls = CallRunner(backend, cache, concurrency=1, content_attempts=1,
                                progress=False)
        self.max_new_tokens, self.temperature = max_new_tokens, temperature

    def reply(self, system: str, user: str, sample: int) -> str:
        from msm_megatron.generate.llm import LLMRequest, TransientError
        from msm_megatron.generate.runner import Job

        request = LLMRequest.user(user, system=system or None, max_tokens=self.max_new_tokens,
                                  temperature=self.temperature, attempt=sample)
        (result,) = self.calls.run([Job(str(sample), request)], stage="sample")
        if not result.ok:
            raise TransientError(f"sample {sample}: {result.error}")
        return result.value
