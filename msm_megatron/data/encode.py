"""Encoding workers for ``msm data prepare``: numbered input chunks → token ids (+ loss masks).

Workers get a picklable :class:`Options` and a tokenizer (inherited with fork; pickled, or rebuilt
from its path and checked against ``describe()``, with spawn). :func:`ordered_map` keeps output in
input order whatever the number of workers, so the written dataset does not depend on it.
"""

from __future__ import annotations

import collections
import importlib
import json
import pickle
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CHUNK_LINES = 256
CHUNK_BYTES = 1 << 20


# What workers need to know (small and picklable), and a chunk of numbered raw input lines.
Options = collections.namedtuple("Options", "kind text_field keep_think eod_id vocab_size dtype")
Chunk = collections.namedtuple("Chunk", "file_index lines nbytes")


@dataclass(slots=True)
class Encoded:
    """One chunk's good sequences (concatenated) and its bad lines ``(lineno, reason, msg)``."""

    file_index: int
    nbytes: int
    ids: np.ndarray
    lengths: np.ndarray
    mask: np.ndarray | None
    bad: list[tuple[int, str, str]]


class BadLine(Exception):
    """``BadLine(reason, message)``: one input line cannot be used."""


class Encoder:
    """Turns chunks of raw lines into token ids (and masks); runs in each worker."""

    def __init__(self, tokenizer: Any, opts: Options, batch: bool = True) -> None:
        # In worker processes ``batch=False``: the workers are the parallelism, and a
        # tokenizer's own batch threads (SentencePiece, HF) would oversubscribe the cores.
        self.tok, self.opts, self.batch = tokenizer, opts, batch
        self.render = None
        if opts.kind == "chats":  # imported here: only chats need it
            chat = importlib.import_module("msm_megatron.data.chat")
            self.render = chat.render_chat
            # Only errors about the chat are bad lines; others (no chat template) are fatal.
            self.chat_error = getattr(chat, "ChatFormatError", ValueError)

    def __call__(self, chunk: Chunk) -> Encoded:
        bad: list[tuple[int, str, str]] = []
        records: list[tuple[int, Any]] = []
        for lineno, raw in chunk.lines:
            try:
                records.append((lineno, self._parse(raw)))
            except BadLine as e:
                bad.append((lineno, *e.args))
        if self.render is None:
            return self._pack(chunk, self._encode_texts(records, bad), None, sorted(bad))
        seqs, masks = [], []
        for lineno, messages in records:
            try:
                ids, mask = self._render(messages)
            except BadLine as e:
                bad.append((lineno, *e.args))
                continue
            seqs.append(ids)
            masks.append(mask)
        return self._pack(chunk, seqs, masks, sorted(bad))

    def _parse(self, raw: bytes) -> Any:
        """The text (documents) or message list (chats) of one line, or raises ``BadLine``."""
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadLine("invalid_utf8", f"invalid UTF-8 at byte {e.start}") from None
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadLine("invalid_json", f"invalid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(record, dict):
            raise BadLine("not_an_object", f"expected a JSON object, got {type(record).__name__}")
        if self.opts.kind == "chats":
            messages = record.get("messages")
            if not isinstance(messages, list) or not messages:
                raise BadLine("missing_field", "expected a non-empty list 'messages'")
            return messages
        text = record.get(self.opts.text_field)
        if not isinstance(text, str):
            raise BadLine("missing_field", f"expected a string field '{self.opts.text_field}'")
        if not text.strip():
            raise BadLine("empty_text", f"field '{self.opts.text_field}' is empty")
        return text

    def _encode_texts(self, records: list[tuple[int, str]], bad: list) -> list[list[int]]:
        """Token ids + EOD of each text; texts that already contain EOD go to ``bad``."""
        texts = [t for _, t in records]
        batch = getattr(self.tok, "encode_batch", None) if self.batch else None
        ids = batch(texts) if batch is not None else [self.tok.encode(t) for t in texts]
        eod, seqs = self.opts.eod_id, []
        for (lineno, _), x in zip(records, ids, strict=True):
            if eod in x:  # e.g. literal "<|endoftext|>" in the text: a false document boundary
                bad.append((lineno, "contains_eod", f"text encodes to the EOD token (id {eod})"))
            else:
                seqs.append([*x, eod])
        return seqs

    def _render(self, messages: list) -> tuple[list[int], list[int]]:
        try:
            chat = self.render(self.tok, messages, keep_think=self.opts.keep_think)
        except self.chat_error as e:
            raise BadLine("invalid_chat", f"invalid chat: {e}") from None
        ids, mask = [int(i) for i in chat.ids], [int(m) for m in chat.loss_mask]
        if len(ids) != len(mask):
            raise RuntimeError(f"render_chat returned {len(ids)} ids but {len(mask)} mask values")
        if not any(mask):
            raise BadLine("no_supervised_tokens", "chat has no supervised (assistant) tokens")
        if not ids or ids[-1] != self.opts.eod_id:
            ids.append(self.opts.eod_id)
            mask.append(0)
        return ids, mask

    def _pack(
        self, chunk: Chunk, seqs: list[list[int]], masks: list[list[int]] | None, bad: list
    ) -> Encoded:
        ids = np.array([t for s in seqs for t in s], dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.opts.vocab_size):
            raise ValueError(
                f"tokenizer produced ids outside [0, {self.opts.vocab_size}): "
                f"{ids.min()}..{ids.max()}; is vocab_size right?"
            )
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        mask = None if masks is None else np.array([m for s in masks for m in s], np.uint8)
        return Encoded(chunk.file_index, chunk.nbytes, ids.astype(self.opts.dtype), lengths,
                        mask, bad)


_WORKER: dict[str, Any] = {}


def rebuild_tokenizer(cls: type, path: str, expected: dict) -> Any:
    """Re-creates an unpicklable tokenizer from its file in a spawned worker."""
    from msm_megatron.data.tokenizers import load_tokenizer

    for make in (cls, load_tokenizer):
        try:
            tok = make(path)
        except Exception:  # try the next way
            continue
        if tok.describe() == expected:
            return tok
    raise RuntimeError(f"cannot re-create the tokenizer {expected} from {path} in a worker")


def init_worker(spec: tuple[str, Any], expected: dict, opts: Options) -> None:
    # Never raise here: multiprocessing.Pool would restart the failing worker forever.
    try:
        how, what = spec
        tok = rebuild_tokenizer(*what, expected) if how == "path" else what
        _WORKER["encoder"] = Encoder(tok, opts, batch=False)
    except Exception as e:  # reported by the first task instead
        _WORKER["error"] = f"{type(e).__name__}: {e}"


def encode_in_worker(chunk: Chunk) -> Encoded:
    if "error" in _WORKER:
        raise RuntimeError(f"tokenizer worker failed to start: {_WORKER['error']}")
    return _WORKER["encoder"](chunk)


def tokenizer_spec(tokenizer: Any, start_method: str) -> tuple[str, Any]:
    """How workers get the tokenizer: inherited (fork), pickled, or re-created from its path."""
    if start_method == "fork":
        return ("object", tokenizer)
    try:
        pickle.dumps(tokenizer)
        return ("object", tokenizer)
    except Exception:  # unpicklable objects raise many kinds
        path = tokenizer.describe().get("path")
        if not path:
            raise ValueError(
                f"{type(tokenizer).__name__} can be neither pickled nor re-created from a path "
                f"for {start_method} workers; use workers=1"
            ) from None
        return ("path", (type(tokenizer), str(path)))


def read_chunks(inputs: list[Path]) -> Iterator[Chunk]:
    """Yields numbered non-blank lines in chunks of ≲256 lines / 1 MiB, file by file."""
    for file_index, path in enumerate(inputs):
        lines: list[tuple[int, bytes]] = []
        nbytes = 0
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                nbytes += len(raw)
                if raw.strip():
                    lines.append((lineno, raw))
                if len(lines) >= CHUNK_LINES or nbytes >= CHUNK_BYTES:
                    yield Chunk(file_index, lines, nbytes)
                    lines, nbytes = [], 0
        if lines or nbytes:
            yield Chunk(file_index, lines, nbytes)


def ordered_map(
    fn: Callable[[Chunk], Encoded], items: Iterable[Chunk], pool: Any, depth: int
) -> Iterator[Encoded]:
    """``pool.imap`` that keeps at most ``depth`` chunks in flight (bounded memory), in order."""
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= depth:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


# ----------------------------------------------------------------------------- writing


