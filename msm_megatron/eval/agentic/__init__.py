"""Agentic misalignment (after Lynch et al. 2025): scenarios, factor grid, tool-block parsing."""
