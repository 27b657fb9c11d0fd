"""Which LLM to call (:class:`BackendConfig`) and the backend it describes.

:class:`BackendConfig` is the ``backend`` group of a generation run and the ``judge`` group of
an eval sweep (a subclass there); :func:`backend_from` builds its client.

Example::

    cfg = load_config(DocsGenConfig, "docs.yaml", ["backend.model=Qwen/Qwen3-32B"])
    backend = backend_from(cfg.backend)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(kw_only=True, slots=True)
class BackendConfig:
    """Which LLM writes, and how hard to push it. The key comes from ``api_key_env``."""

    kind: Literal["openai", "anthropic", "vllm"] = "openai"
    base_url: str | None = "http://127.0.0.1:8000/v1"
    model: str = "Qwen/Qwen3-32B"
    api_key_env: str | None = None
    concurrency: int = 64
    timeout_s: float = 600.0
    max_attempts: int = 8
    temperature: float = 1.0
    # a stage (or a sweep's judging) whose failed jobs exceed this fraction ends the command
    # with exit 3 and a summary (msm_megatron.llm.outcome); a stage that produced nothing always
    max_failed_fraction: float = 0.1
    usd_per_mtok_in: float = 0.0
    usd_per_mtok_out: float = 0.0
    batch: bool = False  # anthropic only: stages go out as Message Batches (resumable)
    batch_poll_s: float = 60.0
    tensor_parallel_size: int = 1  # vllm only
    max_model_len: int | None = None  # vllm only: default the model's
    gpu_memory_utilization: float = 0.9  # vllm only (on CPU: the share of host memory)


def knobs(group: str, content: str | None = None):
    """The settings of a :class:`BackendConfig` group named ``group`` (``backend``,
    ``judge``) as users write them, for messages (:class:`~msm_megatron.llm.outcome.Knobs`)."""
    from msm_megatron.llm.outcome import Knobs

    return Knobs(f"{group}.base_url", f"{group}.timeout_s", f"{group}.model", content)


def backend_from(b: BackendConfig, group: str = "backend"):
    """The backend a :class:`BackendConfig` describes (HTTP, or vLLM's offline engine);
    ``group`` is the config key it sits under, named in its error messages."""
    from msm_megatron.llm.http_backends import make_backend
    from msm_megatron.llm.retry import RetryPolicy

    if b.kind == "vllm":
        from msm_megatron.llm.vllm_offline import VLLMOfflineBackend

        return VLLMOfflineBackend(b.model, tensor_parallel_size=b.tensor_parallel_size,
                                  max_model_len=b.max_model_len,
                                  gpu_memory_utilization=b.gpu_memory_utilization)
    return make_backend(b.kind, b.model, base_url=b.base_url, api_key_env=b.api_key_env,
                        timeout_s=b.timeout_s, max_connections=b.concurrency,
                        retry=RetryPolicy(max_attempts=b.max_attempts),
                        setting=f"{group}.base_url")
