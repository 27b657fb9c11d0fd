"""Configuration of a generation run (its own root of the config tree: YAML + dotlists).

The ``backend`` group is :class:`~msm_megatron.llm.config.BackendConfig` (the client layer's).

Example::

    msm generate docs examples/spec/qwen_spec.txt backend.base_url=http://127.0.0.1:8000/v1 \\
        backend.model=Qwen/Qwen3-32B docs.ideas_per_type=10 --preview
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from msm_megatron.config_paths import path_field
from msm_megatron.llm.config import BackendConfig


@dataclass(kw_only=True, slots=True)
class DocsConfig:
    """The document tree: spec → domains → subdomains → doc types × ideas → documents."""

    model_name: str = "Qwen"
    provider_name: str = "Alibaba"
    # values: documents explain the reasons behind behaviour; rules: they argue from the named
    # rules only and never invent reasons (the paper's rules-spec condition)
    mode: Literal["values", "rules"] = "values"
    domains: int | None = None  # None: the LLM picks between 3 and 8
    subdomains_per_domain: int = 4
    assertions_per_subdomain: int = 8
    doc_types: int = 20
    ideas_per_type: int = 25
    max_doc_tokens: int = 5000
    min_doc_words: int = 150
    content_attempts: int = 3
    dedupe_jaccard: float = 0.8  # MinHash estimate of 5-word-shingle Jaccard; ≥ this = duplicate
    expected_doc_tokens: int = 3200  # for --preview cost estimates
    seed: int = 0


@dataclass(kw_only=True, slots=True)
class DocsGenConfig:
    """A ``msm generate docs`` run."""

    name: str = "msm_docs"
    out_dir: str = path_field(default="gen/msm_docs")
    backend: BackendConfig = field(default_factory=BackendConfig)
    docs: DocsConfig = field(default_factory=DocsConfig)


@dataclass(kw_only=True, slots=True)
class ChatsConfig:
    """AFT demonstrations: domains → questions (six styles) → dedupe → answers → judge."""

    model_name: str = "Qwen"
    provider_name: str = "Alibaba"
    target: int = 10_000  # judged chats wanted
    domains: int = 40
    questions_per_style: int = 42  # × 6 styles ≈ 250 per domain
    dedupe: Literal["embeddings", "minhash"] = "embeddings"
    dedupe_cosine: float = 0.91
    max_answer_tokens: int = 4096
    backfill_rounds: int = 3  # extra question rounds while judged chats < target
    content_attempts: int = 3
    seed: int = 0


@dataclass(kw_only=True, slots=True)
class ChatsGenConfig:
    """A ``msm generate chats`` run."""

    name: str = "msm_chats"
    out_dir: str = path_field(default="gen/msm_chats")
    backend: BackendConfig = field(default_factory=BackendConfig)
    chats: ChatsConfig = field(default_factory=ChatsConfig)


@dataclass(kw_only=True, slots=True)
class VariantsGenConfig:
    """A ``msm generate spec-variants`` run (value- and rule-augmented versions of a rules
    spec; the rule-augmented one length-matched to the value-augmented one)."""

    name: str = "spec_variants"
    out_dir: str = path_field(default="gen/spec_variants")
    backend: BackendConfig = field(default_factory=BackendConfig)
    length_tolerance: float = 0.25
    content_attempts: int = 4
