"""A content-addressed record of completed LLM calls: paid work is never paid for twice.

Each completed call is one JSON line appended to ``calls.jsonl`` and flushed before the caller
sees the response, keyed by :meth:`LLMRequest.key` (a hash of the backend, model and request).
An interrupted run (even SIGKILL) loses at most the calls in flight; a half-written last line is
ignored on reload. Every completed call is kept, including those whose content the pipeline
later rejects, so a re-run re-judges them instead of re-buying them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from msm_megatron.llm.backend import LLMResponse


class CallCache:
    """``key -> LLMResponse`` backed by an append-only JSONL file."""

    def __init__(self, path: str | Path, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._entries: dict[str, LLMResponse] = {}
        self.ignored_lines = 0
        if self.path.exists():
            self._load()
        self._file = self.path.open("a", encoding="utf-8")

    def _load(self) -> None:
        good_end = 0
        with self.path.open("rb") as f:
            for raw in f:
                try:
                    row = json.loads(raw)
                    self._entries[row["key"]] = LLMResponse(
                        row["text"], row["finish_reason"], row["input_tokens"],
                        row["output_tokens"])
                except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                    self.ignored_lines += 1  # a line cut short by a kill
                    continue
                good_end = f.tell()
                if not raw.endswith(b"\n"):  # complete record, newline lost: restore it
                    with self.path.open("ab") as out:
                        out.write(b"\n")
                    good_end += 1
        if self.path.stat().st_size != good_end:  # drop a torn tail so appends start clean
            with self.path.open("r+b") as f:
                f.truncate(good_end)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> LLMResponse | None:
        return self._entries.get(key)

    def put(self, key: str, response: LLMResponse) -> None:
        row = {"key": key, "text": response.text, "finish_reason": response.finish_reason,
               "input_tokens": response.input_tokens, "output_tokens": response.output_tokens}
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())
        self._entries[key] = response

    def close(self) -> None:
        self._file.close()
