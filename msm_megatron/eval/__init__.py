"""Evaluation: agentic misalignment scenarios, statistics, (planned) runners, judges, reports.

Eval never imports Megatron: it reads HF exports, so it can run in vLLM's own environment.
"""
