"""A pack's shard files read one model at a time, and the checks a model's bytes pass before they are loaded."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq

from manymodels.errors import RegistryError
from manymodels.registry.manifest import (
    SEGMENT_INDEX,
    PackLayout,
)
from manymodels.segment.shards import (
    checksum,
    group_models,
    read_bytes,
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



class ShardFile:
    """One shard file kept open to read single models: only the row group holding a segment is read, and
    the last one read is kept (segments asked together are often neighbours)."""

    def __init__(self, path: Path | str, root: Path | str, name: str) -> None:
        self.name, self.root, self.path = name, root, path
        self._last: dict[int, tuple[str, bytes]] = {}  # the last row group read (about ROW_GROUP_BYTES)
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
        """The segment's (format, bytes), None when the file lacks it. With `lenient`, a row group whose page fails
        its CRC is read again unchecked (the caller checks the model's own checksum).

        Raises:
            OSError, ValueError: the row group does not read (a page failing its CRC among them, unless lenient).
        """
        if segment in self._last:  # a neighbour of the last model read: its row group is at hand
            return self._last[segment]
        for g, span in enumerate(self.ranges):
            if span is not None and not span[0] <= segment <= span[1]:
                continue
            try:
                models = group_models(self.file, g)
            except (OSError, ValueError):
                if not lenient:
                    raise
                self._unchecked = self._unchecked or pq.ParquetFile(self.path)
                models = group_models(self._unchecked, g)
                if segment in models:
                    return models[segment]  # not kept for neighbours: each is read (and checked) on its own
                continue
            if segment in models:
                self._last = models
                return models[segment]
        return None

    def close(self) -> None:
        self.file.close()
        if self._unchecked is not None:
            self._unchecked.close()


def check_name(root: Path | str, name: str) -> None:
    if Path(name).name != name:  # shard names come from our manifest; refuse anything path-like
        raise RegistryError(f"{root}: bad shard name {name!r} in manifest")



def first_line(exc: BaseException) -> str:
    """An error's first line, without the file path Arrow repeats (the caller names the file)."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return re.sub(r"^Could not open Parquet input source '[^']*': ", "", line)


