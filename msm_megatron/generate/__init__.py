"""Synthetic data generation: the MSM pipelines (spec → documents, AFT chats, spec variants).

They call LLMs through the client layer, :mod:`msm_megatron.llm` (backends, the call cache, the
runner, batch stages).
"""
