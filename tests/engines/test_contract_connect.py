"""The engine contract (tests/engines/contract.py) on Spark Connect: a local Connect server, `remote("local[2]")`."""

from __future__ import annotations

from typing import Any

import pytest
from contract import EngineContract, ForecastContract, OperationsContract

from manymodels.engines import Engine
from manymodels.engines.spark import SparkEngine


@pytest.mark.slow
class TestSparkConnect(EngineContract.Tests, OperationsContract.Tests, ForecastContract.Tests):
    # The test's Connect server runs local[2], which never retries a task (classic's fixture is local[2,2]).
    loses_workers = False

    @pytest.fixture
    def engine(self, connect_spark: Any) -> Engine:
        engine = SparkEngine(session=connect_spark, max_chunk_rows=120)  # several chunks
        engine.start()
        assert engine.workers == 2  # asked of the cluster: Connect has no SparkContext
        return engine



def test_a_local_connect_session_is_known_to_be_local(connect_spark: Any) -> None:
    """Connect has no SparkContext; the server's spark.master says local mode (staging not needed)."""
    assert SparkEngine(session=connect_spark).is_local is True
