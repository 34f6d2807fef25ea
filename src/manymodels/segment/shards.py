"""Model shards: many serialized models in one Parquet file, written by the worker that fitted them."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SHARD_SCHEMA = pa.schema([("segment_index", pa.int64()), ("format", pa.string()), ("model", pa.large_binary())])


def shard_name(chunk_id: int) -> str:
    """A shard's file name: from the chunk number only, never from segment values."""
    return f"shard-{chunk_id:05d}.parquet"


def write_shard(path: Path, indices: list[int], formats: list[str], blobs: list[bytes]) -> None:
    """Write one shard atomically (a temp file renamed into place)."""
    table = pa.table({"segment_index": indices, "format": formats, "model": blobs}, schema=SHARD_SCHEMA)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def read_shard(path: Path | str) -> dict[int, tuple[str, bytes]]:
    """All models of a shard by segment index: (format, bytes)."""
    table = pq.read_table(path)
    indices = table.column("segment_index").to_pylist()
    formats = table.column("format").to_pylist()
    blobs = table.column("model").to_pylist()
    return {i: (f, b) for i, f, b in zip(indices, formats, blobs, strict=True)}
