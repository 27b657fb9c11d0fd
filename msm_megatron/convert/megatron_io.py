"""Megatron ``torch_dist`` checkpoints written and read one tensor group at a time.

Megatron-Core's ``dist_checkpointing`` saves through PyTorch Distributed Checkpoint (DCP): a
``.metadata`` file listing every tensor's global shape and stored chunks, ``*.distcp`` data files,
a pickled ``common_state`` object and ``metadata.json`` naming the backend. Layer tensors are
stacked: ``decoder.layers.<name>`` has a leading ``num_layers`` axis and one chunk per layer
(per TP shard). Megatron's own save stages the whole state dict in memory first; here a DCP
``SavePlanner`` describes every chunk up front (no data) and produces each one only when the
storage writer asks for it, so peak memory is one tensor group. Reading goes through a
``LoadPlanner`` that requests one layer's slice of a stacked tensor, whatever TP/PP layout wrote
it (DCP reassembles the overlapping stored chunks).

The result loads with Megatron's ``dist_checkpointing.load`` at any TP/PP, like a checkpoint
Megatron wrote (tests/distributed/test_convert.py).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import (
    LoadPlan,
    LoadPlanner,
    SavePlan,
    SavePlanner,
    TensorWriteData,
    WriteItem,
    WriteItemType,
)

from msm_megatron.config import ConfigError

# Stored with every converted checkpoint, like Megatron-LM's own (read with weights_only=True).
COMMON_STATE = {"checkpoint_version": 3.0, "iteration": 0}


@dataclass(frozen=True)
class PlannedChunk:
    """One stored chunk: key, global shape, offset of this chunk, its shape, dtype."""

    key: str
    global_shape: tuple[int, ...]
    offset: tuple[int, ...]
    shape: tuple[int, ...]
    dtype: torch.dtype


def _common_state_key() -> str:
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    return ShardedObject("common_state", None, (1,), (0,)).unique_key


class _LazySavePlanner(SavePlanner):
    """Plans from chunk descriptions; ``resolve_data`` produces each chunk on demand.

    The filesystem writer keeps a reference to every tensor it wrote until its file is closed;
    releasing each produced tensor's storage once the writer asks for the next one keeps memory
    at one chunk (the bytes are on disk by then: the serial writer finishes an item before
    resolving the next).
    """

    def __init__(self, chunks: list[PlannedChunk], produce: Callable[[PlannedChunk], torch.Tensor],
                 common_state: dict, on_chunk: Callable[[PlannedChunk], None] | None = None):
        self.chunks = {(c.key, c.offset): c for c in chunks}
        self.produce = produce
        self.common_state = common_state
        self.on_chunk = on_chunk
        self._previous: torch.Tensor | None = None

    def set_up_planner(self, state_dict, storage_meta=None, is_coordinator=False) -> None:
        self.is_coordinator = is_coordinator

    def create_local_plan(self) -> SavePlan:
        items = [WriteItem(index=MetadataIndex(_common_state_key()), type=WriteItemType.BYTE_IO)]
        for c in self.chunks.values():
            items.append(WriteItem(
                index=MetadataIndex(c.key, torch.Size(c.offset)), type=WriteItemType.SHARD,
                tensor_data=TensorWriteData(
                    chunk=ChunkStorageMetadata(offsets=torch.Size(c.offset),
                                               sizes=torch.Size(c.shape)),
                    properties=TensorProperties(dtype=c.dtype), size=torch.Size(c.global_shape))))
        return SavePlan(items)

    def create_global_plan(self, all_plans):
        from torch.distributed.checkpoint.default_planner import create_default_global_save_plan

        return create_default_global_save_plan(all_plans)

    def finish_plan(self, new_plan: SavePlan) -> SavePlan:
        return new_plan

    def resolve_data(self, write_item: WriteItem):
        if write_item.type == WriteItemType.BYTE_IO:
            buffer = io.BytesIO()
            torch.save([self.common_state], buffer)  # Megatron's ShardedObject payload: a list
            buffer.seek(0)
            return buffer
        if self._previous is not None:
            self._previous.untyped_storage().resize_(0)
        chunk = self.chunks[(write_item.index.fqn, tuple(write_item.index.offset))]
        tensor = self.produce(chunk)
        if tuple(tensor.shape) != chunk.shape or tensor.dtype != chunk.dtype:
            raise RuntimeError(f"{chunk.key}@{chunk.offset}: produced {tuple(tensor.shape)} "
                               f"{tensor.dtype}, planned {chunk.shape} {chunk.dtype}")
        tensor = tensor.contiguous()
        storage = tensor.untyped_storage()
        if storage.nbytes() != tensor.nbytes or not storage.resizable():
            tensor = tensor.clone()  # own exactly its bytes, so it can be released afterwards
        self._previous = tensor
        if self.on_chunk is not None:
            self.on_chunk(chunk)
        return tensor


def write_checkpoint(out_dir: Path, chunks: list[PlannedChunk],
                     produce: Callable[[PlannedChunk], torch.Tensor],
                     on_chunk: Callable[[PlannedChunk], None] | None = None) -> None:
    """Write a Megatron ``torch_dist`` checkpoint whose chunks ``produce`` computes lazily."""
    from megatron.core.dist_checkpointing.core import CheckpointingConfig, save_config

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    planner = _LazySavePlanner(chunks, produce, dict(COMMON_STATE), on_chunk)
    writer = dcp.FileSystemWriter(str(out_dir), thread_count=1, sync_files=False)
    dcp.save({}, storage_writer=writer, planner=planner, no_dist=True)
    save_config(CheckpointingConfig("torch_dist", 1), str(out_dir))


class _SliceLoadPlanner(LoadPlanner):
    """Reads requested slices (offset + destination tensor) of stored tensors."""

    def __init__(self, requests: dict[str, tuple[tuple[int, ...], torch.Tensor]]):
        self.requests = requests

    def set_up_planner(self, state_dict, metadata=None, is_coordinator=False) -> None:
        self.metadata = metadata

    def create_local_plan(self) -> LoadPlan:
        from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

        items = []
        for key, (offset, dest) in self.requests.items():
            chunk = ChunkStorageMetadata(offsets=torch.Size(offset), sizes=dest.shape)
            items += create_read_items_for_chunk_list(
                key, self.metadata.state_dict_metadata[key], [chunk])
        return LoadPlan(items)

    def create_global_plan(self, global_plan):
        return global_plan

    def finish_plan(self, central_plan):
        return central_plan

    def load_bytes(self, read_item, value) -> None:
        raise RuntimeError(f"unexpected object read for {read_item.dest_index.fqn}")

    def resolve_tensor(self, read_item):
        dest = self.requests[read_item.dest_index.fqn][1]
        for dim, (start, length) in enumerate(zip(read_item.dest_offsets, read_item.lengths,
                                                  strict=True)):
            dest = dest.narrow(dim, start, length)
        return dest

    def commit_tensor(self, read_item, tensor) -> None:
        pass


class MegatronCheckpoint:
    """A Megatron ``torch_dist`` checkpoint directory, read slice by slice.

    Raises:
        ConfigError: not a ``torch_dist`` checkpoint (names the directory and what is there).
    """

    def __init__(self, path: str | Path):
        from torch.distributed.checkpoint import FileSystemReader

        self.path = Path(path)
        if not (self.path / ".metadata").is_file():
            hint = ""
            if (self.path / "latest_checkpointed_iteration.txt").exists():
                hint = " (this is a checkpoints root: pass one of its iter_XXXXXXX directories)"
            raise ConfigError(f"{self.path}: not a Megatron torch_dist checkpoint (no .metadata)"
                              f"{hint}")
        self.reader = FileSystemReader(str(self.path))
        self.metadata = self.reader.read_metadata()

    def tensors(self) -> dict[str, TensorStorageMetadata]:
        return {k: v for k, v in self.metadata.state_dict_metadata.items()
                if isinstance(v, TensorStorageMetadata)}

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.tensors()[key].size)

    def dtype(self, key: str) -> torch.dtype:
        return self.tensors()[key].properties.dtype

    def read(self, key: str, layer: int | None = None,
             rows: tuple[int, int] | None = None) -> torch.Tensor:
        """A whole tensor, its rows ``[start, stop)``, or layer ``layer`` of a stacked one
        (without the layer axis)."""
        shape = self.shape(key)
        offset = [0] * len(shape)
        want = list(shape)
        if layer is not None:
            offset[0], want[0] = layer, 1
        elif rows is not None:
            offset[0], want[0] = rows[0], rows[1] - rows[0]
        dest = torch.empty(want, dtype=self.dtype(key))
        dcp.load({}, storage_reader=self.reader,
                 planner=_SliceLoadPlanner({key: (tuple(offset), dest)}), no_dist=True)
        return dest if layer is None else dest[0]
