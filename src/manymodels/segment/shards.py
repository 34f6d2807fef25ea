"""Model shards: many serialized models in one Parquet file, written by the worker that fitted them."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# Models per Parquet row group: about this many bytes of models, so a server reads one model without its shard.
ROW_GROUP_BYTES = 1 << 20
# Each model is compressed on its own (zstd; `raw_size` is its size before) and its page is not compressed again: a
# damaged byte then costs the one model it hits, not the row group a compressed page would hold. Shards written
# before this have no `raw_size` and zstd pages; they read as they are.
RAW_SIZE = "raw_size"
SHARD_SCHEMA = pa.schema(
    [("segment_index", pa.int64()), ("format", pa.string()), ("model", pa.large_binary()), (RAW_SIZE, pa.int64())]
)
_CODEC = "zstd"
_COLUMN_CODECS = {"segment_index": "zstd", "format": "zstd", "model": "none", RAW_SIZE: "zstd"}


def checksum(data: bytes | memoryview) -> str:
    """The checksum kept in the manifest for a model's bytes and for a shard file (BLAKE2b, 128 bits, hex)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def shard_name(chunk_id: int) -> str:
    """A shard's file name: from the chunk number only, never from segment values."""
    return f"shard-{chunk_id:05d}.parquet"


def is_url(location: str | Path) -> bool:
    """Whether a location is a URL (`s3://bucket/x`, `file:///x`) rather than a local path."""
    return "://" in str(location)


def join_location(folder: str | Path, name: str) -> str | Path:
    """`name` inside a folder that is a local path or an fsspec URL."""
    return f"{str(folder).rstrip('/')}/{name}" if is_url(folder) else Path(folder) / name


def write_shard(where: str | Path, indices: list[int], formats: list[str], blobs: list[bytes]) -> str:
    """Write one shard: a local file atomically (a temp file renamed into place), a URL with fsspec.

    Pages carry CRC checksums (checked on every read), so a damaged page is an error, not other bytes.
    An object store has no rename, but writes one object whole: a retried task rewrites the
    same shard name with the same models.

    Returns:
        The file's checksum (`checksum` of its bytes), for the manifest.
    """
    codec = pa.Codec(_CODEC)
    packed = [codec.compress(b, asbytes=True) for b in blobs]
    table = pa.table(
        {"segment_index": indices, "format": formats, "model": packed, RAW_SIZE: [len(b) for b in blobs]},
        schema=SHARD_SCHEMA,
    )
    mean = sum(len(b) for b in packed) / max(1, len(packed))
    group = max(1, int(ROW_GROUP_BYTES / max(mean, 1.0)))
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression=_COLUMN_CODECS, use_dictionary=["format"], row_group_size=group,
                   write_page_checksum=True)
    data = buffer.getbuffer()
    write_file(where, data)
    return checksum(data)


def write_file(where: str | Path, data: bytes | memoryview) -> None:
    """Write a whole file: a local one atomically (a temp file renamed into place), a URL's object with fsspec."""
    if is_url(where):
        fs, key = _filesystem(str(where))
        with fs.open(key, "wb") as out:
            out.write(data)
        return
    path = Path(where)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def list_files(folder: str | Path, pattern: str) -> list[str]:
    """The names of the files in a folder (local or URL) matching a glob pattern, sorted; none if it is missing."""
    if not is_url(folder):
        return sorted(p.name for p in Path(folder).glob(pattern) if p.is_file())
    fs, path = _filesystem(str(folder))
    return sorted(str(found).rsplit("/", 1)[-1] for found in fs.glob(f"{path.rstrip('/')}/{pattern}"))


def remove_files(folder: str | Path, names: list[str]) -> None:
    """Delete these files of a folder (local or URL); missing ones are fine."""
    if not is_url(folder):
        for name in names:
            (Path(folder) / name).unlink(missing_ok=True)
        return
    fs, path = _filesystem(str(folder))
    for name in names:
        key = f"{path.rstrip('/')}/{name}"
        if fs.exists(key):
            fs.rm(key)


def make_folder(folder: str | Path) -> None:
    """Create a local folder or an fsspec URL's folder (object stores need none)."""
    if is_url(folder):
        fs, path = _filesystem(str(folder))
        fs.makedirs(path, exist_ok=True)
    else:
        Path(folder).mkdir(parents=True, exist_ok=True)


def fetch_shards(source: str | Path, dest: Path) -> int:
    """Copy the shard files of `source` (a local folder or URL) into local folder `dest`; returns how many."""
    dest.mkdir(parents=True, exist_ok=True)
    if not is_url(source):
        names = sorted(p.name for p in Path(source).glob("shard-*.parquet"))
        for name in names:
            shutil.copyfile(Path(source) / name, dest / name)
        return len(names)
    fs, path = _filesystem(str(source))
    found = [f for f in fs.glob(f"{path.rstrip('/')}/shard-*.parquet")]
    for remote in found:
        fs.get_file(remote, str(dest / remote.rsplit("/", 1)[-1]))
    return len(found)


def read_bytes(location: str | Path) -> bytes:
    """A whole file, local or at an fsspec URL."""
    if not is_url(location):
        return Path(location).read_bytes()
    fs, key = _filesystem(str(location))
    return bytes(fs.cat_file(key))


def exists(location: str | Path) -> bool:
    """Whether a file or folder exists, local or at an fsspec URL."""
    if not is_url(location):
        return Path(location).exists()
    fs, key = _filesystem(str(location))
    return bool(fs.exists(key))


def put_file(local: Path, dest: str | Path) -> None:
    """Copy a local file to a local path or an fsspec URL (its folder created as needed)."""
    if not is_url(dest):
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, dest)
        return
    fs, key = _filesystem(str(dest))
    fs.makedirs(key.rsplit("/", 1)[0], exist_ok=True)
    fs.put_file(str(local), key)


def remove_folder(folder: str | Path) -> None:
    """Delete a staging folder, local or URL; missing is fine."""
    if not is_url(folder):
        shutil.rmtree(folder, ignore_errors=True)
        return
    fs, path = _filesystem(str(folder))
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _filesystem(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover - fsspec comes with the spark extra
        raise OSError(f"{url}: writing to a URL needs fsspec (pip install 'manymodels[spark]')") from exc
    fs, path = fsspec.core.url_to_fs(url)
    return fs, str(path)


def read_shard(path: Path | str) -> dict[int, tuple[str, bytes]]:
    """All models of a shard by segment index: (format, bytes); `path` may be an fsspec URL.

    Raises:
        OSError, ValueError: the file is missing or damaged (a page failing its CRC among them).
    """
    models, trouble, _ = models_of(read_bytes(path))
    if trouble:
        raise ValueError(trouble)
    return models


def models_of(data: bytes, lenient: bool = False) -> tuple[dict[int, tuple[str, bytes]], str | None, set[int]]:
    """The models of a shard file's bytes by segment index, read row group by row group (pages' CRCs checked
    where written), and why some did not read (None: all did): a damaged row group costs only its models.

    With `lenient`, a row group whose page fails its CRC is read again without the check: what still reads is
    returned too, its segment indices in the third item (unverified: usable only where each model's own checksum
    is known and matches, so one flipped bit costs the model it hit, not the row group's).

    Raises:
        OSError, ValueError: the file's footer does not read.
    """
    checked = pq.ParquetFile(io.BytesIO(data), page_checksum_verification=True)
    unchecked = None
    models: dict[int, tuple[str, bytes]] = {}
    unverified: set[int] = set()
    trouble = None
    for group in range(checked.metadata.num_row_groups):
        try:
            found = group_models(checked, group)
            models.update(found)
            rows = checked.metadata.row_group(group).num_rows
            if len(found) < rows:
                trouble = trouble or f"{rows - len(found)} model(s) of row group {group} do not decompress"
            continue
        except (OSError, ValueError, KeyError) as exc:
            trouble = trouble or f"row group {group} does not read: {str(exc).strip().splitlines()[0][:200]}"
        if lenient:
            try:
                unchecked = unchecked or pq.ParquetFile(io.BytesIO(data))
                found = group_models(unchecked, group)
            except (OSError, ValueError, KeyError):
                continue
            models.update(found)
            unverified.update(found)
    return models, trouble, unverified


def group_models(file: pq.ParquetFile, group: int) -> dict[int, tuple[str, bytes]]:
    """One row group's models by segment index: (format, bytes).

    Raises:
        OSError, ValueError: the row group does not read (a page failing its CRC, where the file checks them).
    """
    models = {}
    for index, stored in group_blobs(file, group).items():
        found = unpack_model(stored)
        if found is not None:  # else a damaged model: left out, as a model its shard does not hold
            models[index] = found
    return models


def group_blobs(file: pq.ParquetFile, group: int) -> dict[int, tuple[str, bytes, int | None]]:
    """One row group's models by segment index as stored: (format, bytes, size once decompressed; None for a shard
    from before models were compressed one by one). `unpack_model` gives a model's own bytes.

    Raises:
        OSError, ValueError: the row group does not read (a page failing its CRC, where the file checks them).
    """
    table = file.read_row_group(group)
    indices = table.column("segment_index").to_pylist()
    formats = table.column("format").to_pylist()
    blobs = table.column("model").to_pylist()
    sizes = table.column(RAW_SIZE).to_pylist() if RAW_SIZE in table.column_names else [None] * len(indices)
    return dict(zip(indices, zip(formats, blobs, sizes, strict=True), strict=True))


def unpack_model(stored: tuple[str, bytes, int | None]) -> tuple[str, bytes] | None:
    """A stored model's (format, bytes), decompressed; None when its bytes do not decompress (damaged)."""
    fmt, blob, size = stored
    if size is None:
        return fmt, blob
    try:
        return fmt, pa.Codec(_CODEC).decompress(blob, decompressed_size=size, asbytes=True)
    except (OSError, ValueError, TypeError, pa.ArrowException):
        return None
