"""HF checkpoint directories: lazy safetensors reading and streaming sharded writing.

Reading opens every shard with ``safetensors.safe_open`` and loads one tensor at a time; shapes
and dtypes come from the shard headers without reading data. Writing follows the safetensors
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


class HFCheckpoint:
    """An HF model directory's safetensors weights, read lazily.

    Raises:
        ConfigError: no safetensors weights, an index naming missing shard files, unreadable
            shards. Messages name the directory and files.
    """

    def __init__(self, path: str | Path):
        from safetensors import safe_open

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
        self._handles = {}
        self._where: dict[str, str] = {}
        for name in files:
            try:
                handle = safe_open(str(self.path / name), framework="pt")
            except Exception as exc:  # safetensors raises its own error types
                raise ConfigError(f"{self.path / name}: unreadable safetensors file ({exc})"
                                  ) from exc
            self._handles[name] = handle
            for key in handle.keys():
                self._where[key] = name

    def keys(self) -> list[str]:
        return list(self._where)

    def file_of(self, name: str) -> str:
        return self._where[name]

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handles[self._where[name]].get_slice(name).get_shape())

    def dtype(self, name: str) -> torch.dtype:
        return DTYPES_BY_NAME[self._handles[self._where[name]].get_slice(name).get_dtype()]

    def get(self, name: str) -> torch.Tensor:
        return self._handles[self._where[name]].get_tensor(name)


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
        """Write the next planned tensor (must match the plan's name, shape and dtype)."""
        expected = self.order[self.position]
        if (name, tuple(tensor.shape), tensor.dtype) != (expected.name, expected.shape,
                                                         expected.dtype):
            raise RuntimeError(f"writer expected {expected}, got {name} {tuple(tensor.shape)} "
                               f"{tensor.dtype}")
        shard = next(i for i in range(len(self.shards)) if self.position < self._starts[i + 1])
        if shard != self._shard:
            self._open_shard(shard)
        data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        self._stream.write(memoryview(data))
        self.position += 1

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


def copy_assets(src: Path, dst: Path, skip: Iterable[str] = ()) -> list[str]:
    """Copy an HF directory's non-weight files (config, tokenizer, templates) into ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for item in sorted(Path(src).iterdir()):
        if (not item.is_file() or item.name.endswith(WEIGHT_SUFFIXES)
                or item.name in WEIGHT_INDEXES or item.name in skip):
            continue
        shutil.copy2(item, dst / item.name)
        copied.append(item.name)
    return copied
