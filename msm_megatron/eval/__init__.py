"""Evaluation: agentic misalignment scenarios, statistics, runners, judges, reports.

Eval never imports Megatron: it reads HF exports, so it can run in vLLM's own environment. It
calls LLMs (judges, served exports) through the client layer :mod:`msm_megatron.llm` only, never
through the generation pipelines (:mod:`msm_megatron.generate`).
"""
