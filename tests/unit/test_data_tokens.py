"""SentencePiece training (deterministic) and its tokenizer wrapper.

Run: ``.venv/bin/python -m pytest tests/unit/test_data_tokens.py -q``
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from msm_megatron.data.spm import SentencePieceTokenizer, train_sentencepiece

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "corpus" / "demo_corpus.jsonl"
N_DOCS = 40
VOCAB = 512


@pytest.fixture(scope="module")
def texts() -> list[str]:
    with CORPUS.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in itertools.islice(f, N_DOCS)]


@pytest.fixture(scope="module")
def small_jsonl(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "small.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer(
    tmp_path_factory: pytest.TempPathFactory, small_jsonl: Path
) -> SentencePieceTokenizer:
    out = tmp_path_factory.mktemp("tok") / "spm"
    return SentencePieceTokenizer(train_sentencepiece(small_jsonl, out, vocab_size=VOCAB, seed=7))


# ----------------------------------------------------------------------------- SentencePiece


def test_spm_training_is_byte_identical(tmp_path: Path, texts: list[str]) -> None:
    a = train_sentencepiece(texts, tmp_path / "a" / "spm", vocab_size=VOCAB, seed=3)
    b = train_sentencepiece(texts, tmp_path / "b" / "spm", vocab_size=VOCAB, seed=3)
    assert a.name == "spm.model" and a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a" / "spm.vocab").is_file()


def test_special_ids(tokenizer: SentencePieceTokenizer) -> None:
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eod_id) == (0, 2, 3)
    assert tokenizer.vocab_size == VOCAB
    assert tokenizer.describe()["sha256"] == tokenizer.sha256


def test_encode_decode_round_trip(tokenizer: SentencePieceTokenizer, texts: list[str]) -> None:
    extra = ["  two  spaces\n\n\ttab", "Qwen, made by Alibaba: 日本語 é 🙂", "x"]
    for text in texts[:10] + extra:
        ids = tokenizer.encode(text)
        assert all(0 <= i < VOCAB for i in ids) and tokenizer.eod_id not in ids
        assert tokenizer.decode(ids) == text
    assert tokenizer.encode_batch(extra) == [tokenizer.encode(t) for t in extra]


def test_spm_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Vocabulary size too high"):
        train_sentencepiece(["tiny text"], tmp_path / "t", vocab_size=4096)
    with pytest.raises(ValueError, match="not found"):
        SentencePieceTokenizer(tmp_path / "missing.model")


# ----------------------------------------------------------------------------- token files
