"""The LLM client layer: backends, retries, the call cache, the job runner and batch stages.

What generation (:mod:`msm_megatron.generate`) and evaluation (:mod:`msm_megatron.eval`) both
use to call LLMs. It imports neither of them (nor pipeline, train, convert or the CLI):

- :mod:`~msm_megatron.llm.backend`: the backend contract (request, response, errors, usage);
- :mod:`~msm_megatron.llm.retry`: backoff with full jitter and ``Retry-After``;
- :mod:`~msm_megatron.llm.http_backends`: OpenAI-compatible and Anthropic HTTP clients;
- :mod:`~msm_megatron.llm.vllm_engine`: the one place that starts and stops vLLM engines;
- :mod:`~msm_megatron.llm.vllm_offline`: vLLM's offline engine as a backend;
- :mod:`~msm_megatron.llm.cache`: the content-addressed call cache;
- :mod:`~msm_megatron.llm.jobs`: jobs, their results, stage reports, content errors;
- :mod:`~msm_megatron.llm.runner`: concurrent jobs through the cache, content re-asks;
- :mod:`~msm_megatron.llm.batches`: bulk stages (Anthropic Message Batches, in-process engines);
- :mod:`~msm_megatron.llm.config`: :class:`BackendConfig`, the backend it describes, and
  config loading (defaults, YAML, dotlist overrides).
"""
