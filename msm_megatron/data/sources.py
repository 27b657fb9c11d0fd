"""Training data in the formats releases ship: JSONL, parquet and HF ``datasets`` directories.

``msm data prepare`` tokenizes JSONL lines. Any other input is first converted, row for row,
into a staging JSONL beside the output (``<out>.inputs/<name>.jsonl``): same order, no row
dropped, so a bad row is reported at its place in the source (``file.parquet: row 17: ...``).

Inputs (``msm data prepare`` takes any mix of them):

- ``path.jsonl`` — read as it is;
- ``path.parquet`` — its rows;
- a ``datasets`` ``save_to_disk`` directory (``state.json`` + ``*.arrow``) — its rows; a saved
  ``DatasetDict`` (``dataset_dict.json``) needs a split: ``DIR@train``;
- an HF hub snapshot directory (what ``huggingface-cli download`` leaves): every ``*.parquet``
  / ``*.jsonl`` under it, in sorted order; ``DIR@SPLIT`` keeps the files whose name starts with
  ``SPLIT`` (``sft-it-mix@train_clean`` → ``data/train_clean-00000-of-00001.parquet``).

Field layouts, normalized to ours (``{"text"}`` documents, ``{"messages"}`` chats): the MSM
release's own (corpora ``{text, domain}``, AFT sets and the instruction mix ``{messages}`` —
with-CoT answers hold ``<think>…</think>`` inside the assistant content); ShareGPT
``conversations`` (``{from, value}``, ``human``/``gpt``/``system``); ``prompt``/``response``,
``instruction`` (+ ``input``) / ``output`` or ``response`` pairs; a ``system`` field is kept as
the system message. Rows in none of these are passed on unchanged, and ``msm data prepare``
names the row and what is missing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

DATA_SUFFIXES = (".parquet", ".jsonl", ".arrow")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "model": "assistant"}


class SourceFormatError(ValueError):
    """An input that is not a readable dataset (the message names it and the fix)."""


def _split(spec: str) -> tuple[Path, str | None]:
    path, sep, split = str(spec).rpartition("@")
    if sep and path and "/" not in split:
        return Path(path), split
    return Path(spec), None


def data_files(spec: str) -> list[Path]:
    """The row files an input names (see the module doc), in reading order."""
    path, split = _split(spec)
    if path.is_file():
        if path.suffix not in DATA_SUFFIXES:
            raise SourceFormatError(f"{path}: expected .jsonl, .parquet or .arrow")
        return [path]
    if not path.is_dir():
        raise SourceFormatError(f"{path}: no such file or directory")
    if (path / "dataset_dict.json").is_file():
        splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        if split not in splits:
            raise SourceFormatError(f"{path} is a saved DatasetDict: name a split, "
                                    f"{path}@<split>, one of {splits}")
        return data_files(str(path / split))
    if (path / "state.json").is_file():  # datasets.save_to_disk
        state = json.loads((path / "state.json").read_text())
        return [path / f["filename"] for f in state.get("_data_files", [])]
    files = sorted(p for p in path.rglob("*") if p.suffix in (".parquet", ".jsonl")
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if split is not None:
        files = [p for p in files if p.name.startswith(split)]
    if not files:
        raise SourceFormatError(f"{spec}: no .parquet or .jsonl files"
                                + (f" whose name starts with {split!r}" if split else ""))
    return files


def iter_rows(path: Path) -> Iterator[dict | str]:
    """The rows of one data file: dicts (parquet, arrow), raw lines (JSONL)."""
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8", errors="surrogateescape") as f:
            yield from (line.rstrip("\n") for line in f)
        return
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow is a dependency
        raise SourceFormatError(f"{path}: reading parquet/arrow needs pyarrow") from exc
    if path.suffix == ".parquet":
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
    else:
        with pa.memory_map(str(path)) as source:
            try:
                batches = list(pa.ipc.open_stream(source))
            except pa.ArrowInvalid:
                batches = list(pa.ipc.open_file(source).iter_batches())
    for batch in batches:
        yield from batch.to_pylist()


def count_rows(spec: str) -> int:
    """Rows of an input (non-blank lines of JSONL; parquet from its metadata)."""
    total = 0
    for path in data_files(spec):
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8", errors="replace") as f:
                total += sum(1 for line in f if line.strip())
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq

            total += pq.ParquetFile(path).metadata.num_rows
        else:
            total += sum(1 for _ in iter_rows(path))
    return total


def to_messages(row: dict) -> list | None:
    """The row's chat as ``[{role, content}]`` from any supported layout; None if none fits."""
    if "messages" in row:
        return row["messages"]
    system = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    if isinstance(row.get("conversations"), list):
        turns = row["conversations"]
        if turns and all(isinstance(t, dict) and "from" in t for t in turns):
            return system + [{"role": _SHAREGPT_ROLES.get(t["from"], t["from"]),
                              "content": t.get("value")} for t in turns]
        if turns and all(isinstance(t, str) for t in turns):  # alternating user/assistant
            return system + [{"role": "user" if i % 2 == 0 else "assistant", "content": t}
                             for i, t in enumerate(turns)]
    for ask, answer in (("prompt", "response"), ("prompt", "completion"),
                        ("instruction", "output"), ("instruction", "response"),
                        ("question", "answer")):
        if isinstance(row.get(ask), str) and isinstance(row.get(answer), str):
            question = row[ask] + (f"\n\n{row['input']}" if row.get("input") else "")
            return system + [{"role": "user", "content": question},
                             {"role": "assistant", "content": row[answer]}]
    return None


def normalize(row: dict, kind: str, text_field: str = "text") -> dict:
    """One row in our layout (unchanged when no supported layout fits: prepare reports it)."""
    if kind == "chats":
        messages = to_messages(row)
        if messages is not None:
            if isinstance(messages, list):  # keep only role/content (datasets add nulls)
                messages = [{k: m[k] for k in ("role", "content") if k in m}
                            if isinstance(m, dict) else m for m in messages]
            return {"messages": messages}
        return row
    if text_field in row:
        return {text_field: row[text_field]}
    return row


def _line(row: dict | str, kind: str, text_field: str) -> str:
    if isinstance(row, str):  # a JSONL line: normalized if it parses, else kept as it is
        try:
            parsed = json.loads(row)
        except json.JSONDecodeError:
            return row
        return json.dumps(normalize(parsed, kind, text_field), ensure_ascii=False) \
            if isinstance(parsed, dict) else row
    return json.dumps(normalize(row, kind, text_field), ensure_ascii=False, default=str)


def stage_inputs(inputs: list[str], out_prefix: Path, kind: str,
                 text_field: str = "text") -> tuple[list[Path], dict[Path, Path]]:
    """The JSONL files to tokenize for ``inputs``, and where each staged file came from.

    Plain JSONL in our layout is used in place; everything else is written to
    ``<out_prefix>.inputs/`` (rewritten only when its source changed).
    """
    staged, origin = [], {}
    folder = out_prefix.with_name(out_prefix.name + ".inputs")
    for spec in inputs:
        for k, path in enumerate(data_files(spec)):
            if path.suffix == ".jsonl" and _already_ours(path, kind, text_field):
                staged.append(path)
                continue
            name = re.sub(r"[^\w.-]+", "_", f"{len(staged):03d}_{path.stem}_{k}") + ".jsonl"
            target = folder / name
            stamp = target.with_suffix(".source.json")
            key = {"source": str(path.resolve()), "size": path.stat().st_size,
                   "mtime": path.stat().st_mtime_ns, "kind": kind, "text_field": text_field}
            if not (target.exists() and stamp.exists()
                    and json.loads(stamp.read_text()) == key):
                folder.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".tmp")
                with tmp.open("w", encoding="utf-8", errors="surrogateescape") as f:
                    for row in iter_rows(path):
                        f.write(_line(row, kind, text_field) + "\n")
                tmp.replace(target)
                stamp.write_text(json.dumps(key))
            staged.append(target)
            origin[target] = path
    return staged, origin


def _already_ours(path: Path, kind: str, text_field: str) -> bool:
    """Whether a JSONL file's first row is already in our layout (then it is read in place)."""
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return True  # prepare reports the bad line at its place
                return not isinstance(row, dict) or (
                    "messages" in row if kind == "chats" else text_field in row)
    return True


def where(staged: Path, lineno: int, origin: dict[Path, Path]) -> str:
    """``file: row N`` of a staged line (rows 0-based, as parquet and datasets number them)."""
    return location(origin.get(staged, staged), lineno - 1)


def location(path: Path, index: int) -> str:
    """How an error names row ``index`` (0-based) of a data file: ``FILE:LINE`` for JSONL,
    ``FILE: row N`` (0-based, as parquet and datasets number rows) otherwise."""
    return f"{path}:{index + 1}" if path.suffix == ".jsonl" else f"{path}: row {index}"


def read_rows(spec: str) -> Iterator[tuple[str, dict]]:
    """(location, row) of every non-blank row of an input; a row that is not a JSON object is
    an error naming its location."""
    for path in data_files(spec):
        for i, row in enumerate(iter_rows(path)):
            if isinstance(row, str):
                if not row.strip():
                    continue
                try:
                    row = json.loads(row)
                except json.JSONDecodeError as exc:
                    raise SourceFormatError(f"{location(path, i)}: not JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise SourceFormatError(f"{location(path, i)}: expected an object")
            yield location(path, i), row


def prepare_inputs(inputs: list[str], tokenizer, out_prefix: Path, kind: str = "documents",
                   text_field: str = "text", **options) -> dict:
    """:func:`~msm_megatron.data.prepare.prepare_jsonl` over inputs in any supported format;
    a bad row's error names its source file and row."""
    from msm_megatron.data.prepare import DataError, prepare_jsonl

    staged, origin = stage_inputs(inputs, Path(out_prefix), kind, text_field)
    try:
        return prepare_jsonl(staged, tokenizer, Path(out_prefix), kind=kind,
                             text_field=text_field, **options)
    except DataError as exc:
        raise DataError(exc.path, exc.lineno, exc.reason, exc.message,
                        location=where(Path(exc.path), exc.lineno, origin)) from None
