"""Bin-pack segments into chunks by row count: tiny segments share a task, large ones get their own."""

from __future__ import annotations

import numpy as np
import pandas as pd

MIN_CHUNK_ROWS = 20_000
MAX_CHUNK_SEGMENTS = 2_000
CHUNKS_PER_WORKER = 8


def plan_chunks(sizes: np.ndarray, workers: int, max_chunk_rows: int | None = None,
                heavy: bool = False) -> list[tuple[int, int]]:
    """Split segments 0..n-1 (in order) into contiguous runs of similar total rows.

    Args:
        sizes: the row count of each segment.
        workers: how many fits run at once; there are several chunks per worker so the
            pool stays busy to the end and progress moves smoothly.
        max_chunk_rows: an upper bound on a chunk's rows (a segment larger than it stays whole).
        heavy: each segment's fit costs far more than its rows say (statistical models, tuning per segment): no
            floor of MIN_CHUNK_ROWS, so a small fleet is still spread over every worker.

    Returns:
        (first segment, end segment) of each chunk, covering every segment once.
    """
    n = len(sizes)
    if n == 0:
        return []
    total = int(sizes.sum())
    target = max(1 if heavy else MIN_CHUNK_ROWS, total // max(1, workers * CHUNKS_PER_WORKER))
    if max_chunk_rows is not None:
        target = min(target, max_chunk_rows)
    chunks: list[tuple[int, int]] = []
    start, rows = 0, 0
    for i, size in enumerate(sizes.tolist()):
        if i > start and (rows + size > target or i - start >= MAX_CHUNK_SEGMENTS):
            chunks.append((start, i))
            start, rows = i, 0
        rows += size
    chunks.append((start, n))
    return chunks


def segment_order(frame: pd.DataFrame, segment_by: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Row positions grouped by segment (stable), and each segment's row count."""
    if not segment_by or len(frame) == 0:
        return np.arange(len(frame), dtype=np.int64), np.array([len(frame)] if len(frame) else [], dtype=np.int64)
    codes = frame.groupby(segment_by, sort=True, dropna=False, observed=True).ngroup().to_numpy()
    return np.argsort(codes, kind="stable").astype(np.int64), np.bincount(codes).astype(np.int64)
