"""HF checkpoint directories: lazy safetensors reading and streaming sharded writing.

Reading parses each shard's header (shapes, dtypes, byte ranges) and reads one tensor — or one
row range of it — at a time with plain file reads. Writing follows the safetensors
format (an 8-byte little-endian header length, a JSON header with each tensor's dtype, shape and
byte range, then the raw bytes) with the header computed up front from the planned tensor list,
so tensors are written as they are produced and never held together: peak memory is one tensor
group, not one shard. Shards are named and indexed as ``save_pretrained`` names them.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from msm_megatron.config import ConfigError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# Files of an HF model directory that are not weights (copied along on conversion).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")
WEIGHT_INDEXES = (INDEX, "pytorch_model.bin.index.json")

SAFETENSORS_DTYPES = {
    torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}
DTYPES_BY_NAME = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()}


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """A safetensors file's header (name -> dtype/shape/data_offsets) and where data starts."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        length = struct.unpack("<Q", raw)[0] if len(raw) == 8 else size
        if length > size - 8:
            raise ConfigError(f"{path}: not a safetensors file (or truncated)")
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: unreadable safetensors header ({exc})") from exc
    header.pop("__metadata__", None)
    end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    if 8 + length + end > size:
        raise ConfigError(f"{path}: truncated ({size} bytes, header promises {8 + length + end});"
                          " re-download it")
    return header, 8 + length


class HFCheckpoint:
    """An HF model directory's safetensors weights, read one tensor (or row range) at a time.

    Tensors are read with plain file reads into memory the caller owns — not memory-mapped —
    so a streaming conversion's resident memory is the tensors in flight, not the pages of
    every shard it has touched.

    Raises:
        ConfigError: no safetensors weights, an index naming missing shard files, truncated or
            unreadable shards. Messages name the directory and files.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise ConfigError(f"{self.path}: not a directory (expected an HF model directory)")
        index = self.path / INDEX
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ConfigError(f"{index}: not a safetensors index ({exc})") from exc
        elif (self.path / SINGLE).exists():
            weight_map = None
        else:
            bins = sorted(p.name for p in self.path.glob("*.bin"))
            hint = (f" (found {bins[0]}…: load it in transformers and save_pretrained with "
                    "safe_serialization to get safetensors)" if bins else "")
            raise ConfigError(f"{self.path}: no {SINGLE} or {INDEX}{hint}")
        files = sorted(set(weight_map.values())) if weight_map else [SINGLE]
        missing = [f for f in files if not (self.path / f).exists()]
        if missing:
            raise ConfigError(f"{self.path}: {len(missing)} of {len(files)} weight shards named "
                              f"in {INDEX} are missing: {', '.join(missing[:5])}"
                              f"{' …' if len(missing) > 5 else ''} (incomplete download?)")
        self._entries: dict[str, tuple[str, dict, int]] = {}
        for name in files:
            header, data_start = read_safetensors_header(self.path / name)
            for key, entry in header.items():
                self._entries[key] = (name, entry, data_start)

    def keys(self) -> list[str]:
        return list(self._entries)

    def file_of(self, name: str) -> str:
        return self._entries[name][0]

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name][1]["shape"])

    def dtype(self, name: str) -> torch.dtype:
        code = self._entries[name][1]["dtype"]
        if code not in DTYPES_BY_NAME:
            raise ConfigError(f"{self.path / self.file_of(name)}: {name} has dtype {code}, "
                              "which the converter does not handle")
        return DTYPES_BY_NAME[code]

    def get(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """Tensor ``name`` (or its rows ``[start, stop)``), in freshly allocated memory."""
        file, entry, data_start = self._entries[name]
        shape, dtype = list(entry["shape"]), self.dtype(name)
        begin, end = entry["data_offsets"]
        if rows is not None:
            row_bytes = (end - begin) // shape[0] if shape[0] else 0
            begin, end = begin + rows[0] * row_bytes, begin + rows[1] * row_bytes
            shape[0] = rows[1] - rows[0]
        buffer = torch.empty(end - begin, dtype=torch.uint8)
        with open(self.path / file, "rb") as f:
            f.seek(data_start + begin)
            if f.readinto(memoryview(buffer.numpy())) != end - begin:
                raise ConfigError(f"{self.path / file}: truncated while reading {name}")
        return buffer.view(dtype).reshape(shape)


@dataclass(frozen=True)
class PlannedTensor:
    """A tensor the writer will receive: name, shape, dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count * torch.empty((), dtype=self.dtype).element_size()


def parse_size(text: str | int) -> int:
    """``"5GB"``/``"500MB"``/bytes → bytes (decimal units, as ``save_pretrained``)."""
    if isinstance(text, int):
        return text
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "B": 1}
    s = str(text).strip().upper()
    for unit, factor in units.items():
        if s.endswith(unit) and s[: -len(unit)].strip().replace(".", "", 1).isdigit():
            return int(float(s[: -len(unit)]) * factor)
    if s.isdigit():
        return int(s)
    raise ConfigError(f"max shard size {text!r}: expected e.g. 5GB, 500MB or a byte count")


def _shard_plan(plan: list[PlannedTensor], max_bytes: int) -> list[list[PlannedTensor]]:
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for item in plan:
        if shards[-1] and size + item.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += item.nbytes
    return shards


class SafetensorsStreamWriter:
    """Writes planned tensors, in plan order, into sharded safetensors files plus the index.

    Each shard's header is written when its first tensor arrives; the bytes of each tensor go to
    disk immediately. ``close()`` writes the index (several shards) and checks completeness.
    """

    def __init__(self, out_dir: Path, plan: list[PlannedTensor], max_shard_bytes: int):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shards = _shard_plan(plan, max_shard_bytes)
        n = len(self.shards)
        self.files = [SINGLE] if n == 1 else [
            f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self.order = [item for shard in self.shards for item in shard]
        self.position = 0
        self._written = 0  # bytes of the current tensor written so far
        self._shard = -1
        self._stream = None
        self._starts = [0]
        for shard in self.shards:
            self._starts.append(self._starts[-1] + len(shard))

    def _open_shard(self, index: int) -> None:
        if self._stream is not None:
            self._stream.close()
        header: dict = {"__metadata__": {"format": "pt"}}
        offset = 0
        for item in self.shards[index]:
            header[item.name] = {"dtype": SAFETENSORS_DTYPES[item.dtype],
                                 "shape": list(item.shape),
                                 "data_offsets": [offset, offset + item.nbytes]}
            offset += item.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned
        self._stream = open(self.out_dir / self.files[index], "wb")
        self._stream.write(struct.pack("<Q", len(raw)))
        self._stream.write(raw)
        self._shard = index

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write the next planned tensor — whole, or as consecutive row blocks (each call one
        block) — matching the plan's name, dtype and trailing shape."""
        expected = self.order[self.position]
        if (name, tuple(tensor.shape[1:]), tensor.dtype) != (expected.name, expected.shape[1:],
                                                             expected.dtype):
            raise RuntimeError(f"writer expected {expected}, got {name} {tuple(tensor.shape)} "
                               f"{tensor.dtype}")
        if self._written == 0:
            shard = next(i for i in range(len(self.shards))
                         if self.position < self._starts[i + 1])
            if shard != self._shard:
                self._open_shard(shard)
        data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        self._stream.write(memoryview(data))
        self._written += data.nbytes
        if self._written > expected.nbytes:
            raise RuntimeError(f"{name}: more rows than planned {expected.shape}")
        if self._written == expected.nbytes:
            self.position += 1
            self._written = 0

    def write_all(self, pieces) -> None:
        """Write ``(name, tensor)`` pieces from an iterator and close; each write runs on a
        background thread while the next piece is produced (at most one piece waits), so
        reading and writing overlap at the cost of one extra piece in memory."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = None
            for name, tensor in pieces:
                if pending is not None:
                    pending.result()
                pending = pool.submit(self.write, name, tensor)
            if pending is not None:
                pending.result()
        self.close()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
        if self.position != len(self.order):
            raise RuntimeError(f"writer closed after {self.position} of {len(self.order)} tensors")
        if len(self.files) > 1:
            weight_map = {item.name: self.files[i]
                          for i, shard in enumerate(self.shards) for item in shard}
            total = sum(item.nbytes for item in self.order)
            (self.out_dir / INDEX).write_text(json.dumps(
                {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def asset_files(src: Path) -> list[Path]:
    """An HF directory's non-weight files (config, tokenizer, templates), sorted."""
    return [item for item in sorted(Path(src).iterdir())
            if item.is_file() and not item.name.endswith(WEIGHT_SUFFIXES)
            and item.name not in WEIGHT_INDEXES]


def copy_assets(src: Path, dst: Path, skip: Iterable[str] = ()) -> list[str]:
    """Copy an HF directory's non-weight files (:func:`asset_files`) into ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for item in asset_files(src):
        if item.name not in skip:
            shutil.copy2(item, dst / item.name)
            copied.append(item.name)
    return copied
