"""A pack's shard files read one model at a time, and the checks a model's bytes pass before they are loaded."""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import pyarrow.parquet as pq

from manymodels.errors import RegistryError
from manymodels.registry.manifest import (
    SEGMENT_INDEX,
    PackLayout,
)
from manymodels.segment.shards import (
    checksum,
    group_blobs,
    read_bytes,
    unpack_model,
)


def read_shared_model(layout: PackLayout, digest: str) -> bytes:
    """A pooled model's bytes (`shared/<checksum>.model`), checked against the checksum that names it.

    Raises:
        OSError: the file is missing or does not read.
        ValueError: its bytes do not match its name.
    """
    blob = read_bytes(layout.shared_model(digest))
    if checksum(blob) != digest:
        raise ValueError("its bytes do not match its checksum")
    return blob


def model_problem(found: tuple[str, bytes] | None, expected: str | None, trouble: str | None = None) -> str | None:
    """Why a model's bytes must not be loaded (None: fine): missing from its shard (`trouble`: the shard's part
    that did not read), or failing its checksum."""
    if found is None:
        return trouble or "its shard does not hold it"
    if expected is not None and checksum(found[1]) != expected:
        return "its bytes fail their checksum (they changed after it was trained)"
    return None



class RowGroups:
    """The row groups of a pack's shards read last, as stored (each model still compressed), up to `limit` bytes:
    a server asked for random segments reads a row group (about a megabyte, hundreds of models) once, then
    decompresses only the model asked for, instead of reading and decompressing the whole group for each model.
    Not safe between threads on its own: the pack reads one model at a time."""

    def __init__(self, limit: int = 64 << 20) -> None:
        self.limit = limit
        self._groups: OrderedDict[tuple[str, int], tuple[dict[int, tuple[str, bytes, int | None]], int]] = OrderedDict()
        self.bytes = 0

    def get(self, key: tuple[str, int]) -> dict[int, tuple[str, bytes, int | None]] | None:
        found = self._groups.get(key)
        if found is None:
            return None
        self._groups.move_to_end(key)
        return found[0]

    def put(self, key: tuple[str, int], group: dict[int, tuple[str, bytes, int | None]]) -> None:
        size = sum(len(blob) for _, blob, _ in group.values())
        self._groups[key] = (group, size)
        self.bytes += size
        while self.bytes > self.limit and len(self._groups) > 1:
            self.bytes -= self._groups.popitem(last=False)[1][1]


class ShardFile:
    """One shard file kept open to read single models: only the row group holding a segment is read, kept in the
    pack's `RowGroups` (segments asked later are often in it), and only the model asked for is decompressed."""

    def __init__(self, path: Path | str, root: Path | str, name: str, kept: RowGroups) -> None:
        self.name, self.root, self.path, self.kept = name, root, path, kept
        self._unchecked: pq.ParquetFile | None = None  # opened when a page fails its CRC
        try:
            self.file = pq.ParquetFile(path, page_checksum_verification=True)
            meta = self.file.metadata
            column = meta.schema.to_arrow_schema().get_field_index(SEGMENT_INDEX)
            self.ranges: list[tuple[int, int] | None] = []
            for g in range(meta.num_row_groups):
                stats = meta.row_group(g).column(column).statistics
                has = stats is not None and stats.has_min_max
                self.ranges.append((int(stats.min), int(stats.max)) if has else None)
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{root}: cannot read shard {name}: {first_line(exc)}") from exc

    def model(self, segment: int, lenient: bool = False) -> tuple[str, bytes] | None:
        """The segment's (format, bytes), None when the file lacks it (or its bytes do not decompress). With
        `lenient`, a row group whose page fails its CRC is read again unchecked (the caller checks the model's own
        checksum).

        Raises:
            OSError, ValueError: the row group does not read (a page failing its CRC among them, unless lenient).
        """
        for g, span in enumerate(self.ranges):
            if span is not None and not span[0] <= segment <= span[1]:
                continue
            group = self.kept.get((self.name, g))
            if group is None:
                try:
                    group = group_blobs(self.file, g)
                except (OSError, ValueError):
                    if not lenient:
                        raise
                    self._unchecked = self._unchecked or pq.ParquetFile(self.path)
                    unchecked = group_blobs(self._unchecked, g)  # not kept: each model is read (and checked) alone
                    if segment in unchecked:
                        return unpack_model(unchecked[segment])
                    continue
                self.kept.put((self.name, g), group)
            if segment in group:
                return unpack_model(group[segment])
        return None

    def close(self) -> None:
        self.file.close()
        if self._unchecked is not None:
            self._unchecked.close()


def intact(location: Path | str, expected: str | None) -> bool:
    """Whether a shard file's bytes match the checksum taken when it was written (False: unknown, or unread)."""
    if expected is None:
        return False
    try:
        return checksum(read_bytes(location)) == expected
    except OSError:
        return False


def check_name(root: Path | str, name: str) -> None:
    if Path(name).name != name:  # shard names come from our manifest; refuse anything path-like
        raise RegistryError(f"{root}: bad shard name {name!r} in manifest")



def first_line(exc: BaseException) -> str:
    """An error's first line, without the file path Arrow repeats (the caller names the file)."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return re.sub(r"^Could not open Parquet input source '[^']*': ", "", line)


