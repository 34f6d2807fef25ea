"""Bin-packing segments into chunks by row count."""

from __future__ import annotations

import numpy as np

from manymodels.engines import plan_chunks
from manymodels.engines.chunking import MAX_CHUNK_SEGMENTS, MIN_CHUNK_ROWS


def covered(chunks: list[tuple[int, int]], n: int) -> bool:
    return [i for a, b in chunks for i in range(a, b)] == list(range(n))


def test_tiny_segments_share_a_chunk() -> None:
    chunks = plan_chunks(np.full(100, 10), workers=2)
    assert chunks == [(0, 100)]


def test_large_segment_gets_its_own_chunk() -> None:
    sizes = np.array([100] * 50 + [10 * MIN_CHUNK_ROWS] + [100] * 50)
    chunks = plan_chunks(sizes, workers=2)
    assert covered(chunks, 101)
    assert (50, 51) in chunks


def test_many_segments_spread_over_several_chunks_per_worker() -> None:
    chunks = plan_chunks(np.full(1000, 1000), workers=2)
    assert covered(chunks, 1000)
    assert len(chunks) >= 16
    assert max(b - a for a, b in chunks) <= MAX_CHUNK_SEGMENTS


def test_segment_cap_and_row_cap() -> None:
    assert all(b - a <= MAX_CHUNK_SEGMENTS for a, b in plan_chunks(np.ones(10_000, dtype=int), workers=1))
    capped = plan_chunks(np.full(10, 100), workers=1, max_chunk_rows=250)
    assert capped == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    assert plan_chunks(np.array([], dtype=int), workers=2) == []


def test_segment_labels_of_no_segments_is_an_empty_series() -> None:
    import pandas as pd

    from manymodels.engines import segment_labels

    labels = segment_labels(pd.DataFrame({"store": [], "region": []}))
    assert isinstance(labels, pd.Series) and labels.tolist() == []  # `train --segments-from` a run that flagged none


def test_heavy_fits_spread_a_small_fleet_over_every_worker() -> None:
    """A statistical model or tuning per segment costs far more than its rows say: 100 segments of 200 rows fit in
    one chunk by rows, and on 2 workers that left one idle; heavy, they are 16 chunks, 8 per worker."""
    sizes = np.full(100, 200)
    assert plan_chunks(sizes, workers=2) == [(0, 100)]
    heavy = plan_chunks(sizes, workers=2, heavy=True)
    assert covered(heavy, 100) and len(heavy) >= 16
    assert plan_chunks(np.full(3, 10), workers=2, heavy=True) == [(0, 1), (1, 2), (2, 3)]


def test_a_statistical_or_tuned_candidate_makes_a_spec_heavy() -> None:
    from manymodels.segment import SegmentSpec
    from manymodels.segment.spec import Candidate

    plain = SegmentSpec(segment_by=("s",), label="y", features=(), candidates=(Candidate("lgbm"),))
    assert not plain.heavy
    assert SegmentSpec(segment_by=("s",), label="y", features=(),
                       candidates=(Candidate("ets", "statsforecast", "AutoETS"),)).heavy
    assert SegmentSpec(segment_by=("s",), label="y", features=(),
                       candidates=(Candidate("lgbm", space={"num_leaves": {"choices": [4, 8]}}, trials=5),)).heavy
