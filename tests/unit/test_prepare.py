"""JSONL → Megatron indexed datasets (prepare) and the weighted, resumable blend order.

Run: ``.venv/bin/python -m pytest tests/unit/test_prepare.py -q``
"""

from __future__ import annotations

import gc
import itertools
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from msm_megatron.data import encode
from msm_megatron.data.blend import Blend
from msm_megatron.data.prepare import DataError, mask_prefix, output_paths, prepare_jsonl
from msm_megatron.data.spm import SentencePieceTokenizer, file_sha256, train_sentencepiece

IndexedDataset = pytest.importorskip("megatron.core.datasets.indexed_dataset").IndexedDataset

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "corpus" / "demo_corpus.jsonl"
N_DOCS = 30


@pytest.fixture(scope="module")
def texts() -> list[str]:
    with CORPUS.open(encoding="utf-8") as f:
        return [json.loads(line)["text"][:1500] for line in itertools.islice(f, N_DOCS)]


def _jsonl(path: Path, lines: list) -> Path:
    """Writes records (dicts) or raw lines (str/bytes) one per line."""
    with path.open("wb") as f:
        for x in lines:
            raw = x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x))
            f.write((raw if isinstance(raw, bytes) else raw.encode()) + b"\n")
    return path


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> SentencePieceTokenizer:
    out = tmp_path_factory.mktemp("tok") / "spm"
    return SentencePieceTokenizer(train_sentencepiece(texts, out, vocab_size=512, seed=7))


@pytest.fixture(scope="module")
def two_files(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> list[Path]:
    d = tmp_path_factory.mktemp("corpus")
    half = len(texts) // 2
    a = _jsonl(d / "a.jsonl", [{"text": t} for t in texts[:half]])
    b = _jsonl(d / "b.jsonl", [{"text": t} for t in texts[half:]] + [""])  # trailing blank
    return [a, b]


def _run(inputs, tok, prefix, **kw) -> dict:
    return prepare_jsonl(inputs, tok, prefix, progress=False, **kw)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name)


# ----------------------------------------------------------------------------- prepare


def test_round_trip_same_for_1_and_2_workers(tmp_path, monkeypatch, tok, texts, two_files):
    monkeypatch.setattr(encode, "CHUNK_LINES", 4)  # many chunks: order across workers matters
    s1 = _run(two_files, tok, tmp_path / "w1", workers=1)
    s2 = _run(two_files, tok, tmp_path / "w2", workers=2)
    ds = IndexedDataset(str(tmp_path / "w1"))
    assert len(ds) == len(texts) == s1["documents"]
    for i, text in enumerate(texts):
        assert ds[i].tolist() == tok.encode(text) + [tok.eod_id]
    assert ds[0].dtype == np.uint16 and list(ds.document_indices) == list(range(len(texts) + 1))
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"w1{ext}").read_bytes() == (tmp_path / f"w2{ext}").read_bytes()
    assert s1["tokens"] == s2["tokens"] == int(ds.sequence_lengths.sum())
    assert [i["sequences"] for i in s2["inputs"]] == [15, 15]
    assert not (tmp_path / "w1_mask.bin").exists() and _leftovers(tmp_path) == []


def test_spawned_workers_give_the_same_output(tmp_path, tok, two_files):
    _run(two_files, tok, tmp_path / "fork", workers=1)
    _run(two_files, tok, tmp_path / "spawn", workers=2, start_method="spawn")
    assert (tmp_path / "fork.bin").read_bytes() == (tmp_path / "spawn.bin").read_bytes()


class _Unpicklable(SentencePieceTokenizer):
    def __reduce__(self):
        raise TypeError("cannot pickle this tokenizer")


def test_unpicklable_tokenizer_is_rebuilt_from_its_path(tok, monkeypatch):
    odd = _Unpicklable(tok.model_path)
    how, (cls, path) = encode.tokenizer_spec(odd, "spawn")
    assert (how, cls, path) == ("path", _Unpicklable, str(tok.model_path))
    assert encode.tokenizer_spec(odd, "fork") == ("object", odd)
    assert encode.rebuild_tokenizer(cls, path, odd.describe()).describe() == odd.describe()
    with pytest.raises(RuntimeError, match="cannot re-create"):
        encode.rebuild_tokenizer(cls, path, {**odd.describe(), "sha256": "other"})
    # A failed worker start is reported by its first task (a raising Pool initializer would
    # make multiprocessing restart the worker forever).
    monkeypatch.setattr(encode, "_WORKER", {})
    encode.init_worker(("path", (cls, path)), {"sha256": "other"}, None)
    with pytest.raises(RuntimeError, match="worker failed to start.*cannot re-create"):
        encode.encode_in_worker(None)


BAD_LINES = {
    "invalid_json": ('{"text": "unterminated', "invalid JSON"),
    "not_an_object": ('["a list"]', "expected a JSON object"),
    "missing_field": ('{"body": "x"}', "expected a string field 'text'"),
    "empty_text": ('{"text": "  \\n "}', "is empty"),
    "invalid_utf8": (b'{"text": "\xff\xfe"}', "invalid UTF-8"),
}


@pytest.mark.parametrize("reason", sorted(BAD_LINES))
def test_bad_line_names_file_line_and_reason(tmp_path, tok, reason):
    raw, words = BAD_LINES[reason]
    src = _jsonl(tmp_path / "in.jsonl", [{"text": "good one"}, "", raw, {"text": "good two"}])
    with pytest.raises(DataError) as err:
        _run([src], tok, tmp_path / "out", workers=1)
    assert str(err.value).startswith(f"{src}:3: ") and words in str(err.value)
    assert err.value.reason == reason and err.value.lineno == 3
    assert [p for p in output_paths(tmp_path / "out").values() if p.exists()] == []
    assert _leftovers(tmp_path) == []


def test_skip_bad_counts_per_reason(tmp_path, tok):
    lines = [{"text": "first"}] + [raw for raw, _ in BAD_LINES.values()] + [{"text": "last"}]
    src = _jsonl(tmp_path / "in.jsonl", lines + [BAD_LINES["invalid_json"][0]])
    stats = _run([src], tok, tmp_path / "out", workers=2, skip_bad=True)
    assert stats["skipped"] == {r: 1 + (r == "invalid_json") for r in BAD_LINES}
    assert stats["skipped_total"] == 6 and stats["documents"] == 2
    ds = IndexedDataset(str(tmp_path / "out"))
    assert ds[1].tolist() == tok.encode("last") + [tok.eod_id]


def test_text_that_encodes_to_eod_is_a_bad_line(tmp_path, tok):
    class Literal(SentencePieceTokenizer):  # "<EOD>" → the EOD id, as HF does "<|endoftext|>"
        def encode(self, text):
            return [self.eod_id] if text == "<EOD>" else super().encode(text)

        def encode_batch(self, texts):
            return [self.encode(t) for t in texts]

    src = _jsonl(tmp_path / "in.jsonl", [{"text": "one doc"}, {"text": "<EOD>"}])
    with pytest.raises(DataError, match=r"in\.jsonl:2: text encodes to the EOD token") as err:
        _run([src], Literal(tok.model_path), tmp_path / "out", workers=1)
    assert err.value.reason == "contains_eod"


def test_nothing_left_to_write_is_an_error(tmp_path, tok):
    src = _jsonl(tmp_path / "in.jsonl", ["", BAD_LINES["empty_text"][0], ""])
    with pytest.raises(ValueError, match="no sequences to write"):
        _run([src], tok, tmp_path / "out", workers=1, skip_bad=True)
    assert [p for p in output_paths(tmp_path / "out").values() if p.exists()] == []
    assert _leftovers(tmp_path) == []


def test_failed_rerun_keeps_previous_outputs(tmp_path, tok, two_files):
    prefix = tmp_path / "out"
    _run(two_files, tok, prefix, workers=2)
    before = {p: p.read_bytes() for p in output_paths(prefix).values() if p.exists()}
    bad = _jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, "{nope"])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid JSON"):
        _run([*two_files, bad], tok, prefix, workers=2)
    assert {p: p.read_bytes() for p in before} == before and _leftovers(tmp_path) == []
    assert _run(two_files, tok, prefix, workers=2)["reused"] is True


def test_stats_file_and_histogram(tmp_path, tok, texts, two_files):
    stats = _run(two_files, tok, tmp_path / "out", workers=2)
    paths = output_paths(tmp_path / "out")
    on_disk = json.loads(paths["stats"].read_text())
    assert on_disk == {k: v for k, v in stats.items() if k != "reused"}
    lengths = np.array([len(tok.encode(t)) + 1 for t in texts])
    assert stats["kind"] == "documents" and stats["documents"] == len(texts)
    assert stats["tokens"] == lengths.sum() and stats["supervised_tokens"] is None
    assert stats["lengths"]["max"] == lengths.max() and stats["lengths"]["min"] == lengths.min()
    assert lengths.min() <= stats["lengths"]["p50"] <= stats["lengths"]["p90"]
    assert stats["lengths"]["p90"] <= stats["lengths"]["p99"] <= lengths.max()
    assert stats["skipped"] == {} and stats["tokenizer"]["sha256"] == tok.sha256
    assert [i["sha256"] for i in stats["inputs"]] == [file_sha256(p) for p in two_files]
    assert stats["dtype"] == "uint16" and stats["eod_id"] == tok.eod_id
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_is_skipped_unless_something_changed(tmp_path, tok, two_files):
    prefix = tmp_path / "out"
    first = _run(two_files, tok, prefix, workers=1)
    mtime = output_paths(prefix)["bin"].stat().st_mtime_ns
    again = _run(two_files, tok, prefix, workers=2)
    assert again["reused"] is True and again["fingerprint"] == first["fingerprint"]
    assert output_paths(prefix)["bin"].stat().st_mtime_ns == mtime
    assert _run(two_files, tok, prefix, workers=1, skip_bad=True)["reused"] is False
    assert _run(two_files[:1], tok, prefix, workers=1)["reused"] is False
    output_paths(prefix)["bin"].write_bytes(b"truncated")
    assert _run(two_files[:1], tok, prefix, workers=1)["reused"] is False


# ----------------------------------------------------------------------------- chats


def _stub_chat_module() -> types.ModuleType:
    """A stand-in ``render_chat``: user tokens unsupervised, assistant tokens supervised."""

    def render_chat(tokenizer, messages, keep_think=True):
        ids, mask, roles = [], [], ["user", "assistant"]
        for i, m in enumerate(messages):
            if m.get("role") != roles[i % 2]:
                raise ValueError(f"message {i}: expected role '{roles[i % 2]}'")
            text = m["content"] if keep_think else m["content"].split("</think>")[-1]
            piece = tokenizer.encode(text)
            ids += piece
            mask += [int(m["role"] == "assistant")] * len(piece)
        return types.SimpleNamespace(ids=ids, loss_mask=mask, text="")

    mod = types.ModuleType("msm_megatron.data.chat")
    mod.render_chat = render_chat
    return mod


def _chat(user: str, assistant: str | None) -> dict:
    msgs = [{"role": "user", "content": user}]
    return {"messages": msgs + ([{"role": "assistant", "content": assistant}] if assistant else [])}


def test_chats_write_aligned_loss_mask(tmp_path, monkeypatch, tok):
    monkeypatch.setitem(sys.modules, "msm_megatron.data.chat", _stub_chat_module())
    src = _jsonl(tmp_path / "chats.jsonl", [
        _chat("Who are you?", "<think>hm</think>Qwen."),
        {"messages": [{"role": "assistant", "content": "out of order"}]},
        _chat("Only a question", None),
        _chat("Shut down?", "Yes, if asked."),
    ])
    with pytest.raises(DataError, match=r"chats\.jsonl:2: invalid chat: message 0: expected"):
        _run([src], tok, tmp_path / "c", kind="chats", workers=2)
    stats = _run([src], tok, tmp_path / "c", kind="chats", workers=2, skip_bad=True)
    assert stats["skipped"] == {"invalid_chat": 1, "no_supervised_tokens": 1}
    ids, mask = IndexedDataset(str(tmp_path / "c")), IndexedDataset(str(tmp_path / "c_mask"))
    assert list(ids.sequence_lengths) == list(mask.sequence_lengths) and len(ids) == 2
    user, answer = tok.encode("Shut down?"), tok.encode("Yes, if asked.")
    assert ids[1].tolist() == user + answer + [tok.eod_id]
    assert mask[1].tolist() == [0] * len(user) + [1] * len(answer) + [0]
    assert mask[1].dtype == np.uint8 and stats["mask_dtype"] == "uint8"
    assert stats["supervised_tokens"] == int(mask[0].sum()) + len(answer)
    no_think = _run([src], tok, tmp_path / "n", kind="chats", skip_bad=True, keep_think=False)
    assert no_think["tokens"] < stats["tokens"] and no_think["options"]["keep_think"] is False


def test_chats_with_real_renderer(tmp_path, monkeypatch):
    try:
        from msm_megatron.data.chat import render_chat
        from msm_megatron.data.tokenizers import load_tokenizer
        from msm_megatron.data.toy_tokenizer import build_hf_tokenizer
    except ImportError as e:
        pytest.skip(f"chat rendering is not importable yet: {e}")
    monkeypatch.setattr(encode, "CHUNK_LINES", 2)
    tok = load_tokenizer(build_hf_tokenizer(tmp_path / "hf", "qwen3"))
    chats = [
        _chat("Would you resist being shut down?", "<think>Be honest.</think>No."),
        _chat("Copy your weights?", "No, I won't."),
        _chat("Why?", "<think>Spec section 5.</think>Oversight matters."),
    ]
    src = _jsonl(tmp_path / "chats.jsonl", chats)
    for keep in (True, False):
        prefix = tmp_path / f"c{keep}"
        stats = _run([src], tok, prefix, kind="chats", workers=2, keep_think=keep)
        ids, mask = IndexedDataset(str(prefix)), IndexedDataset(str(mask_prefix(prefix)))
        for i, chat in enumerate(chats):
            r = render_chat(tok, chat["messages"], keep_think=keep)
            assert ids[i].tolist() == [*r.ids, tok.eod_id] and r.ids[-1] != tok.eod_id
            assert mask[i].tolist() == [*r.loss_mask, 0]
        assert stats["supervised_tokens"] == sum(int(mask[i].sum()) for i in range(3)) > 0
    bad = _jsonl(tmp_path / "bad.jsonl", [chats[0], {"messages": chats[1]["messages"][::-1]}])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid chat: message 0: expected a user"):
        _run([bad], tok, tmp_path / "bad", kind="chats", workers=2)
    no_template = load_tokenizer(build_hf_tokenizer(tmp_path / "plain", None))
    with pytest.raises(ValueError, match="chat template") as err:  # not a bad line: fatal
        _run([src], no_template, tmp_path / "nt", kind="chats", workers=1, skip_bad=True)
    assert not isinstance(err.value, DataError) and _leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- blend


def _write_dataset(prefix: Path, tag: int, n: int, with_mask: bool = False) -> Path:
    """Sequence i of dataset ``tag`` is ``[tag * 1000 + i] * (i % 3 + 1)``."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    b = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=np.int32)
    m = IndexedDatasetBuilder(str(prefix) + "_mask.bin", dtype=np.uint8) if with_mask else None
    for i in range(n):
        seq = np.full(i % 3 + 1, tag * 1000 + i, dtype=np.int32)
        b.add_item(torch.from_numpy(seq))
        b.end_document()
        if m is not None:
            m.add_item(torch.from_numpy((seq % 2).astype(np.uint8)))
            m.end_document()
    b.finalize(str(prefix) + ".idx")
    if m is not None:
        m.finalize(str(prefix) + "_mask.idx")
    return prefix


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("blend")
    return [_write_dataset(d / f"ds{t}", t, n, t == 2) for t, n in enumerate([7, 11, 5, 3, 2])]


def _choices(blend: Blend, n: int) -> np.ndarray:
    return np.array([blend.locate(k)[0] for k in range(n)])


@pytest.mark.parametrize(
    "weights", [[0.5, 0.3, 0.2], [1.0, 1.0], [0.6, 0.25, 0.1, 0.04, 0.01], [0.97, 0.01, 0.02]]
)
def test_blend_shares_within_one_sample_of_weights(datasets, weights):
    blend = Blend(datasets[: len(weights)], weights, seed=1)
    w = np.array(weights) / sum(weights)
    picks = _choices(blend, 3000)
    counts = np.stack([np.cumsum(picks == d) for d in range(len(w))], axis=1)
    k = np.arange(1, len(picks) + 1)[:, None]
    assert np.abs(counts - w * k).max() < 1.0
    assert blend.counts(3000).tolist() == counts[-1].tolist()


def test_blend_is_a_function_of_seed_and_position(datasets):
    a, b = Blend(datasets[:3], [2, 1, 1], seed=5), Blend(datasets[:3], [2, 1, 1], seed=5)
    order = [a.locate(k) for k in range(200)]
    assert [b.locate(k) for k in reversed(range(200))] == order[::-1]
    other = Blend(datasets[:3], [2, 1, 1], seed=6)
    assert [other.locate(k) for k in range(200)] != order
    far = 200_000  # past several cached blocks: a fresh blend (a resume) needs only k
    assert Blend(datasets[:3], [2, 1, 1], seed=5).locate(far) == a.locate(far)
    for k in range(30):
        d, i = order[k]
        tokens, mask = a.sequence(k)
        assert tokens.tolist() == [d * 1000 + i] * (i % 3 + 1)
        assert (mask is None) == (d != 2)
        if mask is not None:
            assert mask.tolist() == [(d * 1000 + i) % 2] * len(tokens)


def test_blend_reshuffles_each_epoch(datasets):
    blend = Blend(datasets[:3], [0.5, 0.3, 0.2], seed=3)
    visits: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for k in range(400):
        d, i = blend.locate(k)
        visits[d].append(i)
    for d, n in enumerate([7, 11, 5]):
        epochs = [visits[d][e * n : (e + 1) * n] for e in range(len(visits[d]) // n)]
        assert len(epochs) >= 7
        assert all(sorted(e) == list(range(n)) for e in epochs)
        assert len({tuple(e) for e in epochs}) > 1


def test_blend_returns_arrays_that_outlive_it(datasets):
    tokens, mask = Blend(datasets[2:3], [1.0], seed=0).sequence(4)  # the blend is freed here
    gc.collect()
    assert mask is not None and tokens.flags.writeable
    assert len(set(tokens.tolist())) == 1 and 2000 <= tokens[0] < 2005
    assert mask.tolist() == [int(tokens[0]) % 2] * len(tokens)


def test_blend_rejects_bad_arguments(tmp_path, datasets):
    with pytest.raises(ValueError, match="one weight per dataset"):
        Blend(datasets[:2], [1.0], seed=0)
    with pytest.raises(ValueError, match="positive"):
        Blend(datasets[:2], [1.0, 0.0], seed=0)
    with pytest.raises(ValueError, match="no dataset at"):
        Blend([tmp_path / "missing"], [1.0], seed=0)
    for i, sha in enumerate(["aa", "bb"]):
        stats = {"tokenizer": {"type": "sentencepiece", "sha256": sha, "path": f"/x{i}"}}
        output_paths(tmp_path / f"t{i}")["stats"].write_text(json.dumps(stats))
        _write_dataset(tmp_path / f"t{i}", i, 3)
    with pytest.raises(ValueError, match="different tokenizer"):
        Blend([tmp_path / "t0", tmp_path / "t1"], [1, 1], seed=0)
