"""Synthetic data generation: LLM backends, the call cache and runner, and the MSM pipelines."""
