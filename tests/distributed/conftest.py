"""Shared fixtures: a tokenizer, the demo corpus through `msm data prepare`, a toy config."""

from __future__ import annotations

from pathlib import Path

import pytest

from msm_megatron.config import apply_overrides, save_yaml
from msm_megatron.recipes import get_recipe

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "examples" / "corpus" / "demo_corpus.jsonl"


@pytest.fixture(scope="session")
def token_data(tmp_path_factory) -> tuple[Path, int]:
    """SentencePiece (vocab 512) trained on the demo corpus, and the corpus prepared with it."""
    from msm_megatron.data.prepare import prepare_jsonl
    from msm_megatron.data.spm import train_sentencepiece
    from msm_megatron.data.tokenizers import load_tokenizer

    root = tmp_path_factory.mktemp("data")
    tokenizer = load_tokenizer(train_sentencepiece(CORPUS, root / "spm", vocab_size=512))
    prefix = root / "corpus"
    prepare_jsonl([CORPUS], tokenizer, prefix, workers=1, progress=False)
    return prefix, tokenizer.vocab_size


@pytest.fixture(scope="session")
def toy_config(token_data, tmp_path_factory) -> Path:
    """The toy Qwen3 (tied embeddings, GQA, head_dim ≠ hidden/heads) in fp32 on short sequences."""
    tokens, vocab = token_data
    cfg = apply_overrides(get_recipe("qwen3_toy_midtrain"), [
        f"data.prepared=[{tokens}]", f"model.vocab_size={vocab}", "data.seq_length=64",
        "train.micro_batch_size=2", "train.global_batch_size=8", "train.precision=fp32",
        "train.steps=4", "log.progress_bar=false", "log.tensorboard=false", "log.interval=1",
        "checkpoint.save_interval=null",
    ])
    path = tmp_path_factory.mktemp("cfg") / "toy.yaml"
    save_yaml(cfg, path)
    return path


@pytest.fixture(scope="session")
def sft_config(tmp_path_factory) -> Path:
    """Toy SFT on the example chats: Qwen-like tokenizer with a chat template, packed rows."""
    from msm_megatron.data.prepare import prepare_jsonl
    from msm_megatron.data.tokenizers import load_tokenizer
    from msm_megatron.data.toy_tokenizer import build_hf_tokenizer

    root = tmp_path_factory.mktemp("sft")
    tokenizer = load_tokenizer(build_hf_tokenizer(root / "tok", template="qwen3"))
    chats = [REPO / "examples" / "chats" / n for n in ("aft_demo.jsonl", "it_mix_demo.jsonl")]
    prepare_jsonl(chats, tokenizer, root / "chats", kind="chats", workers=1, progress=False)
    cfg = apply_overrides(get_recipe("qwen3_toy_sft"), [
        f"data.prepared=[{root / 'chats'}]", f"model.vocab_size={tokenizer.vocab_size}",
        "train.global_batch_size=4", "log.progress_bar=false", "log.tensorboard=false",
        "log.interval=1",
    ])
    path = root / "sft.yaml"
    save_yaml(cfg, path)
    return path
