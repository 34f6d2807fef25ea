"""The engine contract: every engine fits the same segments to the same results.

Each engine subclasses EngineContract.Tests; the Spark engine will join it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from helpers import segment_frame
from manymodels.engines import Engine, LocalEngine, prepare
from manymodels.engines.spark import SparkEngine
from manymodels.segment import SegmentSpec, read_shard

SPEC = SegmentSpec(segment_by=("segment",), label="label", features=("f0", "f1", "f2"),
                   params={"num_boost_round": 15, "min_data_in_leaf": 5}, min_rows=10)


def fleet() -> pd.DataFrame:
    frame = segment_frame(segments=12, rows=50, seed=4)
    thin = segment_frame(names=["thin"], rows=3, seed=5)  # fails: below min_rows
    flat = segment_frame(names=["flat"], rows=40, seed=6).assign(label=1.0)  # fails: constant label
    return pd.concat([frame, thin, flat], ignore_index=True)


def reference(tmp_path: Path) -> dict[str, tuple[str, float, str]]:
    """Results of the plainest engine: one process, no pool."""
    data = prepare(fleet(), ["segment"])
    shards = tmp_path / "reference-shards"
    shards.mkdir()
    results = LocalEngine(workers=1).fit(data, SPEC, str(shards))
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


class TestLocalInProcess(EngineContract.Tests):
    @pytest.fixture
    def engine(self) -> Engine:
        return LocalEngine(workers=1)


@pytest.mark.slow
class TestLocalPool(EngineContract.Tests):
    @pytest.fixture
    def engine(self) -> Engine:
        return LocalEngine(workers=2, max_chunk_rows=120)  # several chunks, so the pool is used


@pytest.mark.slow
class TestLocalPoolStartedEarly(EngineContract.Tests):
    """The pool `train` starts before reading data, so worker imports overlap the driver's set-up."""

    @pytest.fixture
    def engine(self) -> Iterator[Engine]:
        engine = LocalEngine(workers=2, max_chunk_rows=120)
        engine.start(rows=None)
        assert engine._pool is not None
        yield engine
        engine.close()


@pytest.mark.slow
class TestSpark(EngineContract.Tests):
    @pytest.fixture
    def engine(self, spark: Any) -> Engine:
        return SparkEngine(session=spark, max_chunk_rows=120)  # several chunks: several applyInPandas groups


@pytest.mark.slow
def test_a_worker_that_dies_fails_only_its_chunk(tmp_path: Path) -> None:
    """A segment whose fit kills its process (native crash, OOM) fails; the run and other chunks go on."""
    (tmp_path / "killer.py").write_text(
        "import os\n"
        "from sklearn.linear_model import Ridge\n\n"
        "def fit(X, y):\n"
        "    if y.mean() > 10_000:\n"
        "        os._exit(3)\n"
        "    return Ridge().fit(X, y)\n"
    )
    frame = pd.concat([segment_frame(segments=6, rows=40, seed=8),
                       segment_frame(names=["poison"], rows=40, seed=9).assign(label=50_000.0 + np.arange(40))],
                      ignore_index=True)
    spec = SegmentSpec(segment_by=("segment",), label="label", features=("f0", "f1", "f2"), estimator="python",
                       entry="killer:fit", import_roots=(str(tmp_path),))
    data = prepare(frame, ["segment"])
    shards = tmp_path / "shards"
    shards.mkdir()
    results = LocalEngine(workers=2, max_chunk_rows=40).fit(data, spec, str(shards))
    status = {data.keys["segment"][r.index]: (r.status, r.error) for r in results}
    assert len(status) == 7
    assert status["poison"][0] == "failed" and "worker process died" in str(status["poison"][1])
    assert all(s == ("ok", None) for name, s in status.items() if name != "poison"), status


def test_small_fleets_start_no_pool() -> None:
    engine = LocalEngine(workers=2)
    engine.start(rows=1_000)
    assert engine._pool is None
    engine.close()
