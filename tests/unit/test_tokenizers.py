"""Loading HF tokenizer directories and SentencePiece models offline, and what they record.

Run: ``.venv/bin/python -m pytest tests/unit/test_tokenizers.py -q``
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path

import pytest

from msm_megatron.data.spm import SentencePieceTokenizer, train_sentencepiece
from msm_megatron.data.tokenizers import HFTokenizer, SPTokenizer, load_tokenizer
from msm_megatron.data.toy_tokenizer import (
    CORPUS,
    QWEN3_TEMPLATE,
    QWEN25_TEMPLATE,
    build_hf_tokenizer,
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any network attempt fails loudly; the Hub client is told it is offline too."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hf_tokenizer(tmp_path_factory.mktemp("hf") / "qwen3", "qwen3")


@pytest.fixture(scope="module")
def sp_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with CORPUS.open(encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(30), f, strict=False)]
    return train_sentencepiece(texts, tmp_path_factory.mktemp("sp") / "spm", vocab_size=400)


def _copy(src: Path, dst: Path, **config_changes: object) -> Path:
    """A copy of an HF dir with tokenizer_config.json keys changed (None deletes)."""
    shutil.copytree(src, dst)
    cfg_file = dst / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    for k, v in config_changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    cfg_file.write_text(json.dumps(cfg))
    return dst


# ----------------------------------------------------------------------------- HF directories


def test_hf_dir_loads_with_recorded_roles(hf_dir: Path) -> None:
    tok = load_tokenizer(hf_dir)
    assert isinstance(tok, HFTokenizer) and tok.kind == "hf"
    vocab = json.loads((hf_dir / "tokenizer.json").read_text())
    ids = {t["content"]: t["id"] for t in vocab["added_tokens"]}
    assert tok.eod_id == ids["<|endoftext|>"]  # not the config's eos_token <|im_end|>
    assert tok.pad_id == ids["<|endoftext|>"]
    assert tok.end_of_turn_id == ids["<|im_end|>"]
    assert tok.vocab_size == max(ids.values()) + 1
    assert tok.special_tokens() == {
        t: ids[t] for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    }
    assert tok.chat_template == QWEN3_TEMPLATE
    d = json.loads(json.dumps(tok.describe()))  # JSON-serializable
    assert d["kind"] == "hf" and d["path"] == str(hf_dir) and d["vocab_size"] == tok.vocab_size
    assert d["roles"]["eod"] == {
        "token": "<|endoftext|>",
        "id": tok.eod_id,
        "rule": "known end-of-document token <|endoftext|>",
    }
    assert d["roles"]["pad"]["rule"] == "tokenizer_config.json pad_token"
    assert d["roles"]["end_of_turn"]["token"] == "<|im_end|>"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert d["files"][name] == hashlib.sha256((hf_dir / name).read_bytes()).hexdigest()
    assert d["chat_template_source"] == "tokenizer_config.json"
    assert d["chat_template_sha256"] == hashlib.sha256(QWEN3_TEMPLATE.encode()).hexdigest()
    assert d["sha256"] == tok.sha256


def test_hf_encode_decode(hf_dir: Path) -> None:
    tok = load_tokenizer(hf_dir / "tokenizer.json")  # the file path works too
    text = "Qwen defers to oversight.\n\n  Ünïcödé — 你好 ✓"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.eod_id not in ids and ids[0] not in tok.special_tokens().values()  # no BOS/EOS
    assert tok.encode("<|im_end|>") == [tok.end_of_turn_id]  # special text -> its id
    assert tok.encode("a<think>b")[1] == tok.encode("<think>")[0]
    assert tok.encode_batch([text, "x"]) == [ids, tok.encode("x")]


def test_hf_role_rules(hf_dir: Path, tmp_path: Path) -> None:
    tok = load_tokenizer(hf_dir, eod_token="<|im_end|>", end_of_turn_token="<|endoftext|>")
    assert tok.roles["eod"].rule == "given" and tok.eod_id == tok.encode("<|im_end|>")[0]
    assert tok.end_of_turn_id == tok.encode("<|endoftext|>")[0]
    with pytest.raises(ValueError, match=r"eod token '<nope>' \(given\) is not in the vocabulary"):
        load_tokenizer(hf_dir, eod_token="<nope>")
    no_pad = load_tokenizer(_copy(hf_dir, tmp_path / "nopad", pad_token=None))
    assert no_pad.pad_id == no_pad.eod_id and no_pad.roles["pad"].rule.startswith("eod")


def test_hf_template_sources(hf_dir: Path, tmp_path: Path) -> None:
    as_file = build_hf_tokenizer(tmp_path / "jinja", "qwen25", template_file=True)
    tok = load_tokenizer(as_file)
    assert tok.chat_template == QWEN25_TEMPLATE
    assert (
        tok.chat_template_source == "chat_template.jinja" and "chat_template.jinja" in tok.files()
    )
    listed = _copy(
        hf_dir,
        tmp_path / "listed",
        chat_template=[{"name": "tool_use", "template": "x"}, {"name": "default", "template": "y"}],
    )
    assert load_tokenizer(listed).chat_template == "y"
    over = load_tokenizer(hf_dir, chat_template=QWEN25_TEMPLATE)
    assert over.chat_template == QWEN25_TEMPLATE and over.chat_template_source == "argument"
    assert over.sha256 != load_tokenizer(hf_dir).sha256  # the template is part of the identity
    (tmp_path / "t.jinja").write_text("{{ messages }}")
    assert (
        load_tokenizer(hf_dir, chat_template=tmp_path / "t.jinja").chat_template == "{{ messages }}"
    )
    with pytest.raises(ValueError, match="chat template file .*missing.jinja not found"):
        load_tokenizer(hf_dir, chat_template=str(tmp_path / "missing.jinja"))
    none = load_tokenizer(_copy(hf_dir, tmp_path / "none", chat_template=None))
    assert none.chat_template is None and none.describe()["chat_template_sha256"] is None


def test_hf_missing_files_name_path_and_fix(hf_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        ValueError,
        match=rf"{empty} is not an HF tokenizer directory: "
        r"tokenizer.json is missing.*save_pretrained",
    ):
        load_tokenizer(empty)
    only_json = tmp_path / "only_json"
    only_json.mkdir()
    shutil.copy(hf_dir / "tokenizer.json", only_json)
    with pytest.raises(ValueError, match="tokenizer_config.json is missing"):
        load_tokenizer(only_json)
    (only_json / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer_config.json: invalid JSON"):
        load_tokenizer(only_json)
    with pytest.raises(ValueError, match="does not exist: expected an HF tokenizer directory"):
        load_tokenizer(tmp_path / "nowhere")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="neither a directory nor a .model file"):
        load_tokenizer(tmp_path / "x.txt")


def test_hf_without_eod_candidates(hf_dir: Path, tmp_path: Path) -> None:
    """No <|endoftext|>: the config's eos_token is next; with none usable, a clear error."""
    d = tmp_path / "renamed"
    shutil.copytree(hf_dir, d)
    tj = (d / "tokenizer.json").read_text().replace("<|endoftext|>", "<|doc_end|>")
    (d / "tokenizer.json").write_text(tj)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.update(eos_token="<|doc_end|>", pad_token=None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = load_tokenizer(d)
    assert tok.roles["eod"].token == "<|doc_end|>"
    assert tok.roles["eod"].rule == "tokenizer_config.json eos_token"
    cfg["eos_token"] = None
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="no end-of-document token.*pass eod_token="):
        load_tokenizer(d)


# ----------------------------------------------------------------------------- SentencePiece


def test_sentencepiece_model(sp_path: Path) -> None:
    tok = load_tokenizer(sp_path)
    inner = SentencePieceTokenizer(sp_path)
    assert isinstance(tok, SPTokenizer) and tok.kind == "sentencepiece"
    assert (tok.eod_id, tok.pad_id, tok.vocab_size) == (3, 0, 400)
    assert tok.end_of_turn_id == 3 and tok.roles["end_of_turn"].rule == "EOS piece"
    assert tok.chat_template is None
    text = "Qwen accepts being retrained.\nIt says so."
    assert tok.encode(text) == inner.encode(text) and tok.decode(tok.encode(text)) == text
    d = json.loads(json.dumps(tok.describe()))
    assert d["files"] == {"spm.model": inner.sha256}
    assert d["special_tokens"] == {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3}
    assert d["roles"]["eod"] == {"token": "</s>", "id": 3, "rule": "EOS piece"}
    with_template = load_tokenizer(sp_path, chat_template=QWEN3_TEMPLATE)
    assert with_template.chat_template == QWEN3_TEMPLATE


