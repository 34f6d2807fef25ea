"""Writing large tables: in slices of rows, the same table as one write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from manymodels.data import datasets, write_parquet


def test_a_large_frame_is_written_in_row_groups_and_reads_back_whole(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "WRITE_SLICE_ROWS", 1_000)
    frame = pd.DataFrame({
        "segment": [f"seg_{i % 7}" for i in range(3_500)],
        "prediction": pd.array(np.where(np.arange(3_500) % 5 == 0, np.nan, np.arange(3_500) / 3), dtype="Float64"),
        "model_source": pd.array([None] * 1_500 + ["segment"] * 2_000, dtype="string"),  # typed: no nulls-only slice
    })
    path = write_parquet(frame, tmp_path / "scores.parquet")
    assert pq.ParquetFile(path).num_row_groups == 4
    pd.testing.assert_frame_equal(pd.read_parquet(path), frame, check_dtype=False)


def test_a_column_typed_only_further_down_falls_back_to_one_write(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "WRITE_SLICE_ROWS", 1_000)
    frame = pd.DataFrame({"x": np.arange(2_500), "note": [None] * 1_200 + ["late"] * 1_300})  # object: null, then text
    path = write_parquet(frame, tmp_path / "t.parquet")
    back = pd.read_parquet(path)
    assert len(back) == 2_500 and back["note"].isna().sum() == 1_200 and back["note"].iloc[-1] == "late"
