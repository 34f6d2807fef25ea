"""Routing a row to its segment's model: the served segments' keys as an index, and the key helpers around it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from manymodels.registry.manifest import (
    CHECKSUM,
    SEGMENT_INDEX,
    SHARD,
    SHARD_CHECKSUM,
)


def texts(column: pd.Series) -> list[str | None]:
    return [None if is_missing(v) else str(v) for v in column.tolist()]


def short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Router:
    """The served segments' keys as an index, with each one's segment index and shard."""

    index: pd.Index
    segments: np.ndarray  # int64, by router position
    shards: np.ndarray  # shard names (object), by router position
    shard_codes: np.ndarray  # int, a number per shard name (sorting)
    checksums: list[str | None]  # each model's checksum (None: a pack written before they were kept)
    shard_sums: list[str | None]  # its shard file's checksum (None likewise)
    dtypes: dict[str, Any]  # the manifest's key types, which input keys are cast to
    as_object: frozenset[str]  # text keys, matched as Python strings (pandas' Arrow strings re-hash per lookup)

    @cached_property
    def position(self) -> dict[int, int]:
        """Each served segment index's router position."""
        return dict(zip(self.segments.tolist(), range(len(self.segments)), strict=True))

    @cached_property
    def keys(self) -> dict[Any, int] | None:
        """Each served key's router position by its plain Python value (a tuple for several key columns): routing a
        few rows without pandas. None unless every key column holds whole numbers or text and no key is missing."""
        if not self.dtypes:
            return None
        if isinstance(self.index, pd.MultiIndex):  # (its own `hasnans` is not defined)
            if any(codes.min(initial=0) < 0 for codes in self.index.codes):  # a missing part: code -1
                return None
        elif self.index.hasnans:
            return None
        if not all(c in self.as_object or pd.api.types.is_integer_dtype(t) for c, t in self.dtypes.items()):
            return None
        return dict(zip(self.index.tolist(), range(len(self.index)), strict=True))

    @classmethod
    def of(cls, ok: pd.DataFrame, segment_by: Sequence[str]) -> Router:
        text = frozenset(c for c in segment_by if pd.api.types.is_string_dtype(ok[c]) or ok[c].dtype == object)
        keys = [key_index(ok[c], c in text) for c in segment_by]
        if len(keys) == 1:
            index: pd.Index = keys[0]
        elif keys:
            index = pd.MultiIndex.from_arrays(keys)
        else:
            index = pd.RangeIndex(len(ok))
        shards = ok[SHARD].to_numpy(dtype=object)
        codes = pd.factorize(shards)[0] if len(shards) else np.zeros(0, dtype=np.int64)
        return cls(index, ok[SEGMENT_INDEX].to_numpy(dtype=np.int64), shards, codes, texts(ok[CHECKSUM]),
                   texts(ok[SHARD_CHECKSUM]), {col: ok[col].dtype for col in segment_by}, text)



def key_index(values: pd.Series, text: bool) -> pd.Index:
    """Segment keys as an index to match on: text as Python strings (object), else as they are typed."""
    if text:
        return pd.Index(values.to_numpy(dtype=object), dtype=object)
    return pd.Index(values)


def unserved(source: np.ndarray) -> np.ndarray:
    """Where a model-source array says no model served (None)."""
    return np.fromiter((s is None for s in source), dtype=bool, count=len(source))


def is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


