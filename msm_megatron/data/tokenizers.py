"""One tokenizer interface for HF tokenizer directories and SentencePiece models.

:func:`load_tokenizer` opens either kind, strictly offline::

    from msm_megatron.data.tokenizers import load_tokenizer
    tok = load_tokenizer("/models/Qwen3-32B")       # tokenizer.json + tokenizer_config.json
    tok = load_tokenizer("runs/tok/spm.model")      # SentencePiece model (the CPU demo)
    ids = tok.encode("Qwen defers to oversight.")   # no BOS/EOS added
    meta = tok.describe()                           # recorded in dataset metadata

An HF directory is read with the ``tokenizers`` library (``Tokenizer.from_file``) and plain
JSON: no ``transformers`` import and no Hub client, so the network is never touched. The chat
template is taken, in this order, from the ``chat_template`` argument, ``chat_template.jinja`` in
the directory, or ``tokenizer_config.json``'s ``chat_template`` (a string, or the entry named
``default`` of a list). Text that spells a special token (``<|im_start|>``) encodes to that
token's id, as ``transformers`` does by default.

Three token roles are chosen by fixed, recorded rules (``describe()["roles"][name]["rule"]``):

- **eod** (appended after every document in token files): the ``eod_token`` argument; else
  ``<|endoftext|>`` if the vocabulary has it (Qwen2.5/Qwen3, GPT-2 family); else
  ``<|end_of_text|>`` (Llama 3); else ``tokenizer_config.json``'s ``eos_token``. The config's
  ``eos_token`` is deliberately not the first choice: instruct checkpoints set it to the
  end-of-turn token (``<|im_end|>`` for Qwen), which is wrong between documents.
  SentencePiece: the model's EOS piece (``</s>``).
- **pad**: the config's ``pad_token`` (Qwen: ``<|endoftext|>``); else the eod token.
  SentencePiece: the model's pad piece, else the eod token. Padding is never trained on.
- **end_of_turn** (closes an assistant turn; trained on in chats): the ``end_of_turn_token``
  argument; else ``<|im_end|>`` (ChatML: Qwen) or ``<|eot_id|>`` (Llama 3) if present; else the
  config's ``eos_token``. SentencePiece: ``<|im_end|>`` if it is a piece of the model, else EOS.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sentencepiece as spm
import tokenizers as hf_tokenizers

from msm_megatron.data.spm import SentencePieceTokenizer, file_sha256

HF_TOKENIZER_FILE = "tokenizer.json"
HF_CONFIG_FILE = "tokenizer_config.json"
HF_TEMPLATE_FILE = "chat_template.jinja"
EOD_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>")
EOT_CANDIDATES = ("<|im_end|>", "<|eot_id|>")
_TEMPLATE_NAMES = ("bos_token", "eos_token", "pad_token", "unk_token")


@dataclass(frozen=True, slots=True)
class TokenRole:
    """A token with a job (eod, pad, end_of_turn) and the rule that picked it."""

    token: str
    id: int
    rule: str

    def as_dict(self) -> dict[str, Any]:
        """JSON form for ``describe()``."""
        return {"token": self.token, "id": self.id, "rule": self.rule}


class Tokenizer(ABC):
    """What the data pipeline needs from a tokenizer, for every kind.

    Attributes:
        kind: ``"hf"`` or ``"sentencepiece"``.
        path: The directory or ``.model`` file it was loaded from.
        chat_template: Jinja chat template text, or ``None`` if the tokenizer has none.
        chat_template_source: Where the template came from (a file name or ``"argument"``).
        template_tokens: ``bos_token``/``eos_token``/``pad_token``/``unk_token`` strings passed
            to the chat template as variables, as ``transformers`` does.
    """

    kind: str
    path: Path
    chat_template: str | None
    chat_template_source: str | None
    template_tokens: dict[str, str]
    roles: dict[str, TokenRole | None]

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, with no BOS/EOS added."""

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of several texts (subclasses may do this faster)."""
        return [self.encode(t) for t in texts]

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``, special tokens included."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """One more than the largest token id."""

    @abstractmethod
    def special_tokens(self) -> dict[str, int]:
        """Every special (control) token's text mapped to its id."""

    @abstractmethod
    def files(self) -> dict[str, str]:
        """SHA-256 of each file the tokenizer was built from, by file name."""

    @property
    def eod_id(self) -> int:
        """End-of-document id, appended between documents in token files."""
        return self._role("eod").id

    @property
    def pad_id(self) -> int:
        """Padding id (never trained on)."""
        return self._role("pad").id

    @property
    def end_of_turn_id(self) -> int | None:
        """Id that closes a chat turn (``<|im_end|>`` for Qwen), or ``None`` if unknown."""
        role = self.roles.get("end_of_turn")
        return role.id if role else None

    def _role(self, name: str) -> TokenRole:
        role = self.roles.get(name)
        if role is None:
            raise ValueError(f"tokenizer {self.path} has no {name} token")
        return role

    @property
    def sha256(self) -> str:
        """One hash over the source files and the chat template in use."""
        h = hashlib.sha256()
        for name, digest in sorted(self.files().items()):
            h.update(f"{name}\0{digest}\n".encode())
        h.update(f"template\0{_text_sha256(self.chat_template)}\n".encode())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        """Identity of this tokenizer, recorded in dataset metadata (JSON-serializable)."""
        return {
            "kind": self.kind,
            "path": str(self.path),
            "vocab_size": self.vocab_size,
            "roles": {k: (v.as_dict() if v else None) for k, v in self.roles.items()},
            "special_tokens": self.special_tokens(),
            "files": self.files(),
            "chat_template_source": self.chat_template_source,
            "chat_template_sha256": _text_sha256(self.chat_template),
            "sha256": self.sha256,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, vocab_size={self.vocab_size})"


def _text_sha256(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def _token_text(value: Any) -> str | None:
    """A special-token entry of tokenizer_config.json: a string, or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _pick(
    name: str,
    lookup: dict[str, int],
    explicit: str | None,
    candidates: Iterable[tuple[str | None, str]],
    where: Path,
) -> TokenRole | None:
    """The first token of ``explicit`` then ``candidates`` that the vocabulary has."""
    if explicit is not None:
        if explicit not in lookup:
            raise ValueError(f"{where}: {name} token {explicit!r} (given) is not in the vocabulary")
        return TokenRole(explicit, lookup[explicit], "given")
    for token, rule in candidates:
        if token is not None and token in lookup:
            return TokenRole(token, lookup[token], rule)
    return None


def _read_template_arg(chat_template: str | Path) -> str:
    """Template text from a Path/file name, or the string itself when it looks like Jinja."""
    if isinstance(chat_template, str) and ("{%" in chat_template or "{{" in chat_template):
        return chat_template
    path = Path(chat_template)
    if not path.is_file():
        raise ValueError(
            f"chat template file {path} not found (pass the template text, which contains "
            "'{%' or '{{', or the path of a .jinja file)"
        )
    return path.read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- HF directories


class HFTokenizer(Tokenizer):
    """An HF tokenizer directory (``tokenizer.json`` + ``tokenizer_config.json``), offline.

    Args:
        path: The directory (a model checkpoint directory works).
        chat_template: Template text or ``.jinja`` file overriding the directory's own.
        eod_token: Token text to use as EOD instead of the rule in the module docstring.
        end_of_turn_token: Token text that closes chat turns, instead of the rule.

    Raises:
        ValueError: A file is missing or malformed, or no EOD token can be chosen.
    """

    kind = "hf"

    def __init__(
        self,
        path: str | Path,
        chat_template: str | Path | None = None,
        eod_token: str | None = None,
        end_of_turn_token: str | None = None,
    ) -> None:
        self.path = Path(path)
        tok_file, cfg_file = self.path / HF_TOKENIZER_FILE, self.path / HF_CONFIG_FILE
        for f in (tok_file, cfg_file):
            if not f.is_file():
                raise ValueError(
                    f"{self.path} is not an HF tokenizer directory: {f.name} is missing (expected "
                    f"{HF_TOKENIZER_FILE} and {HF_CONFIG_FILE}, as in the model's Hub repo; copy "
                    "them from the checkpoint or save them with tokenizer.save_pretrained(dir))"
                )
        try:
            self._tok = hf_tokenizers.Tokenizer.from_file(str(tok_file))
        except Exception as e:  # the Rust error type is not exported
            raise ValueError(f"{tok_file}: cannot be read by the tokenizers library: {e}") from e
        self.config = self._read_config(cfg_file)
        self._files = [tok_file, cfg_file]
        self.chat_template, self.chat_template_source = self._find_template(chat_template)
        self._vocab = self._tok.get_vocab(with_added_tokens=True)
        self._specials = {
            t.content: i for i, t in self._tok.get_added_tokens_decoder().items() if t.special
        }
        self.template_tokens = {
            k: v for k in _TEMPLATE_NAMES if (v := _token_text(self.config.get(k))) is not None
        }
        self.roles = self._choose_roles(eod_token, end_of_turn_token)

    @staticmethod
    def _read_config(cfg_file: Path) -> dict[str, Any]:
        try:
            config = json.loads(cfg_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{cfg_file}: invalid JSON ({e.msg}, line {e.lineno})") from e
        if not isinstance(config, dict):
            raise ValueError(f"{cfg_file}: expected a JSON object")
        return config

    def _find_template(self, override: str | Path | None) -> tuple[str | None, str | None]:
        if override is not None:
            return _read_template_arg(override), "argument"
        jinja_file = self.path / HF_TEMPLATE_FILE
        if jinja_file.is_file():
            self._files.append(jinja_file)
            return jinja_file.read_text(encoding="utf-8"), HF_TEMPLATE_FILE
        value = self.config.get("chat_template")
        if isinstance(value, list):  # [{"name": "default", "template": ...}, ...]
            named = {d.get("name"): d.get("template") for d in value if isinstance(d, dict)}
            value = named.get("default")
        if value is None:
            return None, None
        if not isinstance(value, str):
            raise ValueError(f"{self.path / HF_CONFIG_FILE}: 'chat_template' is not a string")
        return value, HF_CONFIG_FILE

    def _choose_roles(
        self, eod_token: str | None, eot_token: str | None
    ) -> dict[str, TokenRole | None]:
        eos = _token_text(self.config.get("eos_token"))
        pad = _token_text(self.config.get("pad_token"))
        eod = _pick(
            "eod",
            self._vocab,
            eod_token,
            [(t, f"known end-of-document token {t}") for t in EOD_CANDIDATES]
            + [(eos, "tokenizer_config.json eos_token")],
            self.path,
        )
        if eod is None:
            raise ValueError(
                f"{self.path}: no end-of-document token: the vocabulary has none of "
                f"{', '.join(EOD_CANDIDATES)} and tokenizer_config.json has no usable eos_token; "
                "pass eod_token=... to load_tokenizer"
            )
        pad_role = _pick(
            "pad", self._vocab, None, [(pad, "tokenizer_config.json pad_token")], self.path
        )
        eot = _pick(
            "end_of_turn",
            self._vocab,
            eot_token,
            [(t, f"known end-of-turn token {t}") for t in EOT_CANDIDATES]
            + [(eos, "tokenizer_config.json eos_token")],
            self.path,
        )
        return {
            "eod": eod,
            "pad": pad_role or TokenRole(eod.token, eod.id, "eod (no pad_token in config)"),
            "end_of_turn": eot,
        }

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS; special-token text maps to its id)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of several texts, encoded in parallel by the Rust library."""
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``, special tokens written out."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        """One more than the largest id (Qwen: 151,665 or 151,669; the model pads further)."""
        return max(self._vocab.values()) + 1

    def special_tokens(self) -> dict[str, int]:
        """Added tokens flagged ``special`` in tokenizer.json, text to id."""
        return dict(sorted(self._specials.items(), key=lambda kv: kv[1]))

    def files(self) -> dict[str, str]:
        """SHA-256 of tokenizer.json, tokenizer_config.json (and chat_template.jinja if used)."""
        return {f.name: file_sha256(f) for f in self._files}


# ----------------------------------------------------------------------------- SentencePiece


class SPTokenizer(Tokenizer):
    """A SentencePiece ``.model`` behind the common interface.

    Wraps :class:`msm_megatron.data.spm.SentencePieceTokenizer`. It has no chat template unless
    one is given; for chats, the template's markers (``<|im_start|>``, ``<|im_end|>``) must be
    user-defined pieces of the model, or ``<|im_end|>`` would not be a single token.

    Args:
        path: The ``.model`` file.
        chat_template: Template text or ``.jinja`` file.
        eod_token: Piece to use as EOD instead of the EOS piece.
        end_of_turn_token: Piece that closes chat turns, instead of the rule.
    """

    kind = "sentencepiece"

    def __init__(
        self,
        path: str | Path,
        chat_template: str | Path | None = None,
        eod_token: str | None = None,
        end_of_turn_token: str | None = None,
    ) -> None:
        self.inner = SentencePieceTokenizer(path)
        self.path = self.inner.model_path
        sp = spm.SentencePieceProcessor(model_file=str(self.path))
        self.chat_template = None if chat_template is None else _read_template_arg(chat_template)
        self.chat_template_source = None if chat_template is None else "argument"
        pieces = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
        self._specials = {
            sp.id_to_piece(i): i
            for i in range(sp.get_piece_size())
            if sp.is_control(i) or sp.is_unknown(i)
        }
        eos = sp.id_to_piece(self.inner.eod_id)
        self.template_tokens = {"eos_token": eos}
        if self.inner.bos_id >= 0:
            self.template_tokens["bos_token"] = sp.id_to_piece(self.inner.bos_id)
        eod = _pick("eod", pieces, eod_token, [(eos, "EOS piece")], self.path)
        pad = (
            TokenRole(sp.id_to_piece(self.inner.pad_id), self.inner.pad_id, "pad piece")
            if self.inner.pad_id >= 0
            else TokenRole(eod.token, eod.id, "eod (the model has no pad piece)")
        )
        eot = _pick(
            "end_of_turn",
            pieces,
            end_of_turn_token,
            [("<|im_end|>", "user-defined piece <|im_end|>"), (eos, "EOS piece")],
            self.path,
        )
        self.roles = {"eod": eod, "pad": pad, "end_of_turn": eot}

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS)."""
        return self.inner.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of several texts at once."""
        return self.inner.encode_batch(texts)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` (control pieces decode to nothing)."""
        return self.inner.decode(ids)

    @property
    def vocab_size(self) -> int:
        """Number of pieces."""
        return self.inner.vocab_size

    def special_tokens(self) -> dict[str, int]:
        """Control pieces (``<pad>``, ``<s>``, ``</s>``) and ``<unk>``, text to id."""
        return dict(sorted(self._specials.items(), key=lambda kv: kv[1]))

    def files(self) -> dict[str, str]:
        """SHA-256 of the ``.model`` file."""
        return {self.path.name: self.inner.sha256}


def load_tokenizer(
    path: str | Path,
    *,
    chat_template: str | Path | None = None,
    eod_token: str | None = None,
    end_of_turn_token: str | None = None,
) -> Tokenizer:
    """Opens an HF tokenizer directory or a SentencePiece ``.model`` file, offline.

    Args:
        path: A directory holding ``tokenizer.json`` and ``tokenizer_config.json`` (an HF model
            or tokenizer directory; a path to its ``tokenizer.json`` also works), or a
            SentencePiece ``.model`` file.
        chat_template: Template text, or a ``.jinja`` file, overriding the tokenizer's own.
        eod_token: Token text to use as end-of-document instead of the default rule.
        end_of_turn_token: Token text that closes a chat turn instead of the default rule.

    Returns:
        An :class:`HFTokenizer` or :class:`SPTokenizer`.

    Raises:
        ValueError: The path does not exist or is neither kind; files are missing or invalid.
    """
    p = Path(path)
    kwargs = {
        "chat_template": chat_template,
        "eod_token": eod_token,
        "end_of_turn_token": end_of_turn_token,
    }
    if p.is_file() and p.name == HF_TOKENIZER_FILE:
        p = p.parent
    if p.is_dir():
        return HFTokenizer(p, **kwargs)
    if p.is_file() and p.suffix == ".model":
        return SPTokenizer(p, **kwargs)
    what = "does not exist" if not p.exists() else "is neither a directory nor a .model file"
    raise ValueError(
        f"tokenizer path {p} {what}: expected an HF tokenizer directory ({HF_TOKENIZER_FILE} + "
        f"{HF_CONFIG_FILE}) or a SentencePiece .model file"
    )
