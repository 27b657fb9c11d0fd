"""Tokenizer training, token files and the TokenDataset sample order.

Run: ``.venv/bin/python -m pytest tests/unit/test_data_tokens.py -q``
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from msm_megatron.data.spm import SentencePieceTokenizer, train_sentencepiece
from msm_megatron.data.token_file import (
    TokenDataset,
    iter_documents,
    read_token_file_meta,
    token_file_paths,
    tokenize_jsonl_to_token_file,
    write_token_file,
)

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


def _synthetic_file(
    tmp_path: Path, num_tokens: int = 1000, eod: int = 0
) -> tuple[Path, np.ndarray]:
    """A token file whose stream is known; returns (path, flat token stream)."""
    rng = np.random.default_rng(0)
    docs, total = [], 0
    while total < num_tokens:
        n = int(rng.integers(1, 40))
        docs.append(rng.integers(1, 300, size=n).tolist())
        total += n + 1
    path = write_token_file(docs, tmp_path / "syn", eod_id=eod, vocab_size=300, meta={"x": 1})
    stream = np.concatenate([np.append(d, eod) for d in docs])
    return path, stream


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


def test_token_file_round_trip(
    tmp_path: Path, tokenizer: SentencePieceTokenizer, texts: list[str], small_jsonl: Path
) -> None:
    out = tokenize_jsonl_to_token_file(small_jsonl, tokenizer, tmp_path / "demo", progress=False)
    bin_path, sidecar = token_file_paths(out)
    assert out == bin_path and sidecar.is_file()
    expected = [tokenizer.encode(t) for t in texts]
    docs = list(iter_documents(out))
    assert [d.tolist() for d in docs] == expected
    assert [tokenizer.decode(d) for d in docs] == texts
    raw = np.fromfile(bin_path, dtype=np.uint16)
    assert raw.tolist() == [i for d in expected for i in d + [tokenizer.eod_id]]
    info = read_token_file_meta(tmp_path / "demo.json")
    assert info["dtype"] == "uint16" and info["num_tokens"] == raw.size
    assert info["num_documents"] == len(texts) and info["eod_id"] == tokenizer.eod_id
    assert info["meta"]["tokenizer"]["sha256"] == tokenizer.sha256


def test_uint32_for_large_vocab(tmp_path: Path) -> None:
    path = write_token_file(
        [[70000, 5], [1]], tmp_path / "big.bin", eod_id=2, vocab_size=80000, meta={}
    )
    assert read_token_file_meta(path)["dtype"] == "uint32"
    assert np.fromfile(path, dtype=np.uint32).tolist() == [70000, 5, 2, 1, 2]


@pytest.mark.parametrize(
    "docs, match",
    [([[1, 2], []], "document 1"), ([[1, 9]], "out of range"), ([[1, 0, 2]], "EOD")],
)
def test_write_token_file_rejects_bad_docs(tmp_path: Path, docs: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_token_file(docs, tmp_path / "bad", eod_id=0, vocab_size=5, meta={})
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


@pytest.mark.parametrize(
    "line, match",
    [
        ('{"text": "ok"', r"bad\.jsonl:3: invalid JSON"),
        ('{"body": "hi"}', r"bad\.jsonl:3: missing field 'text' \(keys: body\)"),
        ('{"text": "   "}', r"bad\.jsonl:3: field 'text' is empty"),
        ('{"text": 5}', r"bad\.jsonl:3: field 'text' must be a string"),
        ("[1, 2]", r"bad\.jsonl:3: expected a JSON object"),
    ],
)
def test_bad_jsonl_names_file_and_line(
    tmp_path: Path, tokenizer: SentencePieceTokenizer, line: str, match: str
) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "fine"}\n\n' + line + "\n", encoding="utf-8")  # line 2 blank
    with pytest.raises(ValueError, match=match):
        tokenize_jsonl_to_token_file(src, tokenizer, tmp_path / "out", progress=False)
    assert not (tmp_path / "out.json").exists()


# ----------------------------------------------------------------------------- TokenDataset


def test_sample_boundaries(tmp_path: Path) -> None:
    path, stream = _synthetic_file(tmp_path)
    s = 64
    ds = TokenDataset(path, seq_length=s, seed=1)
    assert len(ds) == (stream.size - 1) // s
    first = ds.sample(0)
    np.testing.assert_array_equal(first["tokens"], stream[:s])
    for i in (0, 3, len(ds) - 1):
        sample = ds.sample(i)
        np.testing.assert_array_equal(sample["tokens"], stream[i * s : i * s + s])
        np.testing.assert_array_equal(sample["labels"], stream[i * s + 1 : i * s + s + 1])
        np.testing.assert_array_equal(sample["labels"][:-1], sample["tokens"][1:])
        assert sample["tokens"].dtype == np.int64 and sample["labels"].dtype == np.int64
        assert sample["loss_mask"].dtype == np.float32 and sample["loss_mask"].sum() == s
    k = next(k for k in range(len(ds)) if ds.index_for(k) == 0)
    np.testing.assert_array_equal(ds.get(k)["tokens"], stream[:s])


def test_order_is_deterministic_and_epochs_are_permutations(tmp_path: Path) -> None:
    path, _ = _synthetic_file(tmp_path)
    a, b = TokenDataset(path, 32, seed=5), TokenDataset(path, 32, seed=5)
    n = len(a)
    order = [a.index_for(k) for k in range(3 * n)]
    assert order == [b.index_for(k) for k in range(3 * n)]
    resumed = TokenDataset(path, 32, seed=5)  # a resumed run only knows consumed_samples
    assert [resumed.index_for(k) for k in range(2 * n + 3, 3 * n)] == order[2 * n + 3 :]
    for e in range(3):
        assert sorted(order[e * n : (e + 1) * n]) == list(range(n))
    assert order[:n] != order[n : 2 * n] and order[:n] != list(range(n))
    other = TokenDataset(path, 32, seed=6)
    assert [other.index_for(k) for k in range(n)] != order[:n]


def test_batch_tensors(tmp_path: Path) -> None:
    path, _ = _synthetic_file(tmp_path)
    ds = TokenDataset(path, seq_length=16, seed=0)
    idx = [0, 1, 7, len(ds) + 2]
    batch = ds.batch(idx)
    assert batch["tokens"].shape == batch["labels"].shape == batch["loss_mask"].shape == (4, 16)
    assert batch["tokens"].dtype == torch.int64 and batch["labels"].dtype == torch.int64
    assert batch["loss_mask"].dtype == torch.float32
    for row, k in enumerate(idx):
        assert batch["tokens"][row].tolist() == ds.get(k)["tokens"].tolist()


def test_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"missing\.bin not found"):
        TokenDataset(tmp_path / "missing", seq_length=8, seed=0)
    path, stream = _synthetic_file(tmp_path, num_tokens=200)
    with pytest.raises(ValueError, match=rf"syn\.bin has {stream.size} tokens.*seq_length"):
        TokenDataset(path, seq_length=stream.size, seed=0)
    with pytest.raises(ValueError, match="seed"):
        TokenDataset(path, seq_length=8, seed=-1)
    path.write_bytes(path.read_bytes()[:-2])  # truncate by one uint16 token
    with pytest.raises(ValueError, match=r"syn\.bin has \d+ bytes but syn\.json says"):
        TokenDataset(path, seq_length=8, seed=0)
