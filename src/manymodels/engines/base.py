"""What every engine shares: the data grouped by segment once, and the engine interface."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from manymodels.segment import SegmentResult, SegmentSpec


@dataclass
class PreparedData:
    """A dataset grouped by segment: rows sorted so each segment is one contiguous slice.

    Attributes:
        frame: the rows, segment after segment, each segment's rows in their original order.
        keys: one row per segment: its segment_by values, in segment-index order.
        starts: where each segment's rows begin in `frame` (length: segments + 1).
    """

    frame: pd.DataFrame
    keys: pd.DataFrame
    starts: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        """Rows per segment."""
        return np.diff(self.starts)

    def __len__(self) -> int:
        return len(self.keys)


def prepare(frame: pd.DataFrame, segment_by: list[str]) -> PreparedData:
    """Group a dataset by its segment columns in one pass (a stable sort, no per-segment copies)."""
    codes = frame.groupby(segment_by, sort=True, dropna=False, observed=True).ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=int(codes.max()) + 1 if len(codes) else 0)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    ordered = frame.take(order).reset_index(drop=True)
    keys = ordered[segment_by].iloc[starts[:-1]].reset_index(drop=True)
    return PreparedData(ordered, keys, starts)


Progress = Callable[[int], None]


class Engine(Protocol):
    """Maps the per-chunk fit over a prepared dataset's segments."""

    workers: int

    def fit(
        self,
        data: PreparedData,
        spec: SegmentSpec,
        shard_dir: str,
        on_progress: Progress | None = None,
    ) -> list[SegmentResult]:
        """Fit every segment; models go to shards in `shard_dir`; results come back in segment order."""
        ...
