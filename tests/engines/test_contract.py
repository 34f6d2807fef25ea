"""The engine contract (tests/engines/contract.py) on the local engine and classic Spark."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from contract import SPEC, EngineContract, ForecastContract, OperationsContract, fleet, poisoned_fleet, trained_pack

from helpers import segment_frame
from manymodels.engines import Contender, Dataset, Engine, LocalEngine, prepare
from manymodels.engines.spark import SparkEngine
from manymodels.estimators import allow_pickle
from manymodels.segment import SegmentSpec


class TestLocalInProcess(EngineContract.Tests, OperationsContract.Tests, ForecastContract.Tests):
    loses_workers = False

    @pytest.fixture
    def engine(self) -> Engine:
        return LocalEngine(workers=1)


@pytest.mark.slow
class TestLocalPool(EngineContract.Tests, OperationsContract.Tests, ForecastContract.Tests):
    @pytest.fixture
    def engine(self) -> Engine:
        return LocalEngine(workers=2, max_chunk_rows=120)  # several chunks, so the pool is used


@pytest.mark.slow
class TestLocalPoolStartedEarly(EngineContract.Tests, OperationsContract.Tests):
    """The pool `train` starts before reading data, so worker imports overlap the driver's set-up."""

    @pytest.fixture
    def engine(self) -> Iterator[Engine]:
        engine = LocalEngine(workers=2, max_chunk_rows=120)
        engine.start(rows=None)
        assert engine._pool is not None
        yield engine
        engine.close()


@pytest.mark.slow
class TestSpark(EngineContract.Tests, OperationsContract.Tests, ForecastContract.Tests):
    @pytest.fixture
    def engine(self, spark: Any) -> Engine:
        return SparkEngine(session=spark, max_chunk_rows=120)  # several chunks: several applyInPandas groups


@pytest.mark.slow
def test_a_worker_that_dies_fails_only_its_chunk(tmp_path: Path) -> None:
    """A segment whose fit kills its process (native crash, OOM) fails; the run and other chunks go on."""
    frame, spec = poisoned_fleet(tmp_path)
    data = prepare(frame, ["segment"])
    shards = tmp_path / "shards"
    shards.mkdir()
    results = LocalEngine(workers=2, max_chunk_rows=40).fit(data, spec, str(shards))
    status = {data.keys["segment"][r.index]: (r.status, r.error) for r in results}
    assert len(status) == 7
    assert status["poison"][0] == "failed" and "worker process died" in str(status["poison"][1])
    assert all(s == ("ok", None) for name, s in status.items() if name != "poison"), status


@pytest.mark.slow
def test_progress_moves_per_segment_from_the_workers(tmp_path: Path) -> None:
    """Two chunks of 20 segments, 30 ms each: the driver hears of segments while the chunks run."""
    (tmp_path / "slow.py").write_text(
        "import time\n"
        "from sklearn.linear_model import Ridge\n\n"
        "def fit(X, y):\n"
        "    time.sleep(0.03)\n"
        "    return Ridge().fit(X, y)\n"
    )
    data = prepare(segment_frame(segments=40, rows=20, seed=3), ["segment"])
    spec = SegmentSpec(segment_by=("segment",), label="label", features=("f0", "f1", "f2"), estimator="python",
                       entry="slow:fit", import_roots=(str(tmp_path),))
    allow_pickle(True)  # its models are pickled: what its target would trust
    shards = tmp_path / "shards"
    shards.mkdir()
    heard: list[int] = []
    results = LocalEngine(workers=2, max_chunk_rows=400).fit(data, spec, str(shards), heard.append)
    assert len(results) == 40 and all(r.status == "ok" for r in results)
    assert sum(heard) == 40
    assert len(heard) > 2  # more often than once per chunk: the bar moves per segment
    assert max(heard) < 20  # no whole chunk at once

    in_process: list[int] = []
    LocalEngine(workers=1).fit(data, spec, str(shards), in_process.append)
    assert in_process == [1] * 40


@pytest.mark.slow
def test_spark_evaluates_and_scores_without_collecting_rows(tmp_path: Path, spark: Any, monkeypatch: Any) -> None:
    """Only per-segment tables reach the driver: no frame the driver collects holds a label or a feature."""
    DataFrame = type(spark.range(1))  # noqa: N806 - the session's own DataFrame class (classic, in pyspark 4)
    collected: list[list[str]] = []
    to_pandas, collect = DataFrame.toPandas, DataFrame.collect

    def spy_to_pandas(self: Any) -> pd.DataFrame:
        collected.append(list(self.columns))
        return to_pandas(self)

    def spy_collect(self: Any) -> list[Any]:
        collected.append(list(self.columns))
        return collect(self)

    monkeypatch.setattr(DataFrame, "toPandas", spy_to_pandas)
    monkeypatch.setattr(DataFrame, "collect", spy_collect)
    frame = fleet()
    path = tmp_path / "fleet.parquet"
    frame.to_parquet(path, index=False)
    root = trained_pack(tmp_path, frame)
    engine = SparkEngine(session=spark, max_chunk_rows=120)
    table = engine.evaluate(Dataset(path, "parquet"), SPEC, "rmse", [Contender("challenger", str(root))], True)
    engine.score(Dataset(path, "parquet"), str(root), tmp_path / "scores")
    assert len(table) == frame["segment"].nunique() and collected
    row_columns = {SPEC.label, *SPEC.features}
    assert not [columns for columns in collected if row_columns & set(columns)], collected


def test_small_fleets_start_no_pool() -> None:
    engine = LocalEngine(workers=2)
    engine.start(rows=1_000)
    assert engine._pool is None
    engine.close()
