r"""Small SentencePiece tokenizers for the CPU demo and tests.

Real runs use the base model's own (HF) tokenizer; this module trains a tiny BPE vocabulary on a
corpus so the demo model can be small. Training is deterministic: the same input and options give
a byte-identical ``.model`` file (one thread, fixed seed, no sentence sampling, and the model is
serialized in memory, so the output path is not recorded inside it)::

    from msm_megatron.data.spm import SentencePieceTokenizer, train_sentencepiece
    path = train_sentencepiece("examples/corpus/demo_corpus.jsonl", "runs/tok/spm", vocab_size=2048)
    tok = SentencePieceTokenizer(path)
    ids = tok.encode("Qwen defers to oversight.")  # no BOS/EOS added

Special-token ids are fixed, so token files and model configs can rely on them:

====  ==========  ===========================================================
id    piece       use
====  ==========  ===========================================================
0     ``<pad>``   padding (never produced by ``encode``)
1     ``<unk>``   unknown (not produced in practice: byte fallback covers all)
2     ``<s>``     BOS (not added by ``encode``; available for callers)
3     ``</s>``    EOS, used as the end-of-document (EOD) token in token files
4     ``\\n``      newline, a single user-defined piece so documents keep layout
====  ==========  ===========================================================

Text is not normalized (identity rule, no whitespace collapsing, no dummy prefix) and unseen
characters fall back to UTF-8 byte pieces, so ``decode(encode(text)) == text`` for any string.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import sentencepiece as spm

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
EOD_ID = EOS_ID
NEWLINE_PIECE = "\n"
DEFAULT_SEED = 1234

# Fixed trainer options: ids, lossless text handling, and determinism (one thread, every line
# used in order: no sentence sampling or shuffling).
TRAINER_OPTIONS: dict = {
    "pad_id": PAD_ID,
    "unk_id": UNK_ID,
    "bos_id": BOS_ID,
    "eos_id": EOS_ID,
    "user_defined_symbols": NEWLINE_PIECE,
    "byte_fallback": True,
    "character_coverage": 1.0,
    "normalization_rule_name": "identity",
    "remove_extra_whitespaces": False,
    "add_dummy_prefix": False,
    "allow_whitespace_only_pieces": True,
    "split_digits": True,
    "max_sentence_length": 1 << 16,
    "input_sentence_size": 0,
    "shuffle_input_sentence": False,
    "num_threads": 1,
    "minloglevel": 2,
}

TextSource = str | Path | Iterable[str]


def _iter_jsonl_texts(path: Path, field: str = "text") -> Iterator[str]:
    """Yields ``field`` of each non-blank line of a JSONL file (errors name file:line)."""
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"{path}:{lineno}: invalid JSON ({e.msg}, column {e.colno})"
                ) from None
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                raise ValueError(f"{path}:{lineno}: expected an object with a string '{field}'")
            yield record[field]


def _iter_lines(source: TextSource) -> Iterator[str]:
    """Splits documents into the non-empty lines SentencePiece trains on."""
    texts = _iter_jsonl_texts(Path(source)) if isinstance(source, (str, Path)) else source
    for text in texts:
        for line in text.split("\n"):
            if line:
                yield line


def train_sentencepiece(
    texts_or_jsonl_path: TextSource,
    out_prefix: str | Path,
    vocab_size: int = 2048,
    seed: int = DEFAULT_SEED,
    model_type: str = "bpe",
) -> Path:
    """Trains a SentencePiece model deterministically on CPU.

    Args:
        texts_or_jsonl_path: A JSONL file whose lines have a ``text`` field, or an iterable of
            document strings.
        out_prefix: Output prefix; writes ``<out_prefix>.model`` and ``<out_prefix>.vocab``
            (``piece<TAB>score`` per line, for reading only).
        vocab_size: Total vocabulary size, including the 4 special pieces, the newline piece and
            the 256 byte-fallback pieces (so it must be well above 261).
        seed: Seed of SentencePiece's random generator.
        model_type: ``"bpe"`` (default) or ``"unigram"``.

    Returns:
        Path of the ``.model`` file.

    Raises:
        ValueError: The input has no text, or the vocabulary size does not fit the data.
    """
    lines = list(_iter_lines(texts_or_jsonl_path))
    if not lines:
        raise ValueError(f"no text to train a tokenizer on in {texts_or_jsonl_path!r}")
    spm.set_random_generator_seed(seed)
    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=writer,
            model_type=model_type,
            vocab_size=vocab_size,
            **TRAINER_OPTIONS,
        )
    except RuntimeError as e:
        raise ValueError(
            f"SentencePiece training failed for vocab_size={vocab_size} on "
            f"{len(lines)} lines: {str(e).rstrip('.')}. Try a smaller vocab_size or more text."
        ) from e
    return _write_model(writer.getvalue(), Path(out_prefix))


def _write_model(proto: bytes, out_prefix: Path) -> Path:
    """Writes ``<prefix>.model`` and a readable ``<prefix>.vocab``; returns the model path."""
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    model_path = out_prefix.with_name(out_prefix.name + ".model")
    model_path.write_bytes(proto)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    vocab = "".join(
        f"{json.dumps(sp.id_to_piece(i), ensure_ascii=False)[1:-1]}\t{sp.get_score(i)}\n"
        for i in range(sp.get_piece_size())
    )
    out_prefix.with_name(out_prefix.name + ".vocab").write_text(vocab, encoding="utf-8")
    return model_path


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class SentencePieceTokenizer:
    """A trained SentencePiece model with the ids the data pipeline needs.

    Args:
        model_path: A ``.model`` file, e.g. from :func:`train_sentencepiece`.

    Raises:
        ValueError: The file is missing or has no EOS piece (needed as EOD).
    """

    def __init__(self, model_path: str | Path) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ValueError(
                f"tokenizer model {self.model_path} not found; train one with "
                "msm_megatron.data.spm.train_sentencepiece"
            )
        self._sp = spm.SentencePieceProcessor(model_file=str(self.model_path))
        if self._sp.eos_id() < 0:
            raise ValueError(f"{self.model_path} defines no EOS piece, which is used as EOD")
        self.sha256 = file_sha256(self.model_path)

    @property
    def vocab_size(self) -> int:
        """Number of pieces (all ids are below this)."""
        return self._sp.get_piece_size()

    @property
    def eod_id(self) -> int:
        """End-of-document id (the EOS piece)."""
        return self._sp.eos_id()

    @property
    def pad_id(self) -> int:
        """Padding id (-1 if the model defines none)."""
        return self._sp.pad_id()

    @property
    def bos_id(self) -> int:
        """Beginning-of-sequence id (-1 if the model defines none)."""
        return self._sp.bos_id()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without BOS or EOS."""
        return self._sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of several texts at once (faster than a Python loop)."""
        return self._sp.encode(texts)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a sequence of ids (special pieces decode to nothing)."""
        return self._sp.decode([int(i) for i in ids])

    def describe(self) -> dict:
        """Identity of this tokenizer, recorded in token-file sidecars."""
        return {
            "type": "sentencepiece",
            "path": str(self.model_path),
            "sha256": self.sha256,
            "vocab_size": self.vocab_size,
        }

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({str(self.model_path)!r}, vocab_size={self.vocab_size})"
