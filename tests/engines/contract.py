"""The engine contract: every engine fits the same segments to the same results.

Each engine's test module subclasses EngineContract.Tests with an `engine` fixture.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from helpers import segment_frame
from manymodels.engines import Engine, LocalEngine, prepare
from manymodels.segment import SegmentSpec, read_shard

SPEC = SegmentSpec(segment_by=("segment",), label="label", features=("f0", "f1", "f2"),
                   params={"num_boost_round": 15, "min_data_in_leaf": 5}, min_rows=10)


def fleet() -> pd.DataFrame:
    frame = segment_frame(segments=12, rows=50, seed=4)
    thin = segment_frame(names=["thin"], rows=3, seed=5)  # fails: below min_rows
    flat = segment_frame(names=["flat"], rows=40, seed=6).assign(label=1.0)  # fails: constant label
    return pd.concat([frame, thin, flat], ignore_index=True)


# Real data's holes and words: a text feature (a LightGBM category) and missing values.
TEXT_SPEC = SegmentSpec(segment_by=("segment",), label="label", features=("f0", "f1", "channel"),
                        params={"num_boost_round": 15, "min_data_in_leaf": 5}, min_rows=10)


def text_fleet() -> pd.DataFrame:
    frame = segment_frame(segments=6, rows=60, seed=8)
    frame["channel"] = np.array(["web", "shop", "phone"], dtype=object)[frame["record_id"] % 3]
    frame["label"] = frame["label"] + frame["channel"].map({"web": 4.0, "shop": 0.0, "phone": -4.0})
    frame.loc[frame["record_id"] % 7 == 0, "f1"] = np.nan
    return frame


def reference(tmp_path: Path, frame: pd.DataFrame | None = None,
              spec: SegmentSpec = SPEC) -> dict[str, tuple[str, float, str]]:
    """Results of the plainest engine: one process, no pool."""
    data = prepare(fleet() if frame is None else frame, ["segment"])
    shards = tmp_path / "reference-shards"
    shards.mkdir(exist_ok=True)
    results = LocalEngine(workers=1).fit(data, spec, str(shards))
    keys = data.keys["segment"].tolist()
    return {keys[r.index]: (r.status, r.metrics.get("rmse", np.nan), r.fingerprint) for r in results}


class EngineContract:
    class Tests:
        @pytest.fixture
        def engine(self) -> Engine:
            raise NotImplementedError

        def load(self, engine: Engine, tmp_path: Path) -> Any:
            path = tmp_path / "fleet.parquet"
            fleet().to_parquet(path, index=False)
            return engine.load(path, "parquet", SPEC)

        def test_same_segments_statuses_and_metrics(self, engine: Engine, tmp_path: Path) -> None:
            data = self.load(engine, tmp_path)
            progress: list[int] = []
            results = engine.fit(data, SPEC, str(tmp_path), progress.append)
            assert [r.index for r in results] == list(range(len(data)))
            assert sum(progress) == len(data)
            keys = data.keys["segment"].tolist()
            got = {keys[r.index]: (r.status, r.metrics.get("rmse", np.nan), r.fingerprint) for r in results}
            want = reference(tmp_path)
            assert got.keys() == want.keys()
            for seg, (status, rmse, fingerprint) in want.items():
                assert got[seg][0] == status, seg
                assert got[seg][2] == fingerprint, seg
                if status == "ok":
                    assert got[seg][1] == pytest.approx(rmse, abs=1e-9), seg
            failed = {keys[r.index]: r.error for r in results if r.status != "ok"}
            assert failed == {"thin": "segment has 3 row(s); min_rows is 10",
                              "flat": "label 'label' is constant (1 in all 40 rows): nothing to learn"}

        def test_text_categories_and_missing_values(self, engine: Engine, tmp_path: Path) -> None:
            path = tmp_path / "text.parquet"
            text_fleet().to_parquet(path, index=False)
            data = engine.load(path, "parquet", TEXT_SPEC)
            results = engine.fit(data, TEXT_SPEC, str(tmp_path))
            keys = data.keys["segment"].tolist()
            got = {keys[r.index]: (r.status, r.metrics.get("rmse", np.nan), r.fingerprint) for r in results}
            want = reference(tmp_path, text_fleet(), TEXT_SPEC)
            assert {seg: status for seg, (status, _, _) in got.items()} == dict.fromkeys(want, "ok")
            for seg, (_, rmse, fingerprint) in want.items():
                assert got[seg][1] == pytest.approx(rmse, abs=1e-9) and got[seg][2] == fingerprint, seg

        def test_models_land_in_shards_not_in_results(self, engine: Engine, tmp_path: Path) -> None:
            data = self.load(engine, tmp_path)
            shards = tmp_path / "shards"
            shards.mkdir()
            results = engine.fit(data, SPEC, str(shards))
            ok = [r for r in results if r.status == "ok"]
            assert all(r.model is None and r.shard for r in ok)
            stored: dict[int, tuple[str, bytes]] = {}
            for shard in shards.glob("shard-*.parquet"):
                stored.update(read_shard(shard))
            assert sorted(stored) == sorted(r.index for r in ok)
            assert all(fmt == "lightgbm-text" for fmt, _ in stored.values())

        def test_only_the_named_segments(self, engine: Engine, tmp_path: Path) -> None:
            path = tmp_path / "fleet.parquet"
            fleet().to_parquet(path, index=False)
            data = engine.load(path, "parquet", SPEC, segments=["seg_003", "thin"])
            assert data.keys["segment"].tolist() == ["seg_003", "thin"]
            results = engine.fit(data, SPEC, str(tmp_path))
            assert [r.status for r in results] == ["ok", "failed"]
