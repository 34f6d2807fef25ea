"""The forecast extras on Spark Connect (a local Connect server, `remote("local[2]")`, started once for the module):
statsforecast's models as candidates, fitted and forecast by the executors as the local engine does, and a
hierarchy's levels summed and trained as the local engine does (the contract, for the extras)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("statsforecast", reason="the forecast extra runs in .venv-forecast (make test)")

import manymodels as mm  # noqa: E402
from helpers import (  # noqa: E402
    forecast_block,
    hierarchy_block,
    hierarchy_frame,
    same_levels_on,
    series_frame,
    write_bundle,
)


def test_statistical_candidates_on_spark_connect_give_the_local_engines_models(tmp_path: Path,
                                                                              connect_spark: Any) -> None:
    frame = series_frame(segments=4, steps=40, seed=9, noise=1.0).drop(columns=["price", "region"])
    block = forecast_block(features={"lags": [1, 2]}, candidates=[
        {"name": "ets", "type": "statsforecast", "model": "AutoETS", "params": {"season_length": 4},
         "intervals": "model"},
        {"name": "naive", "type": "baseline", "method": "naive"},
    ])
    write_bundle(tmp_path, frame=frame, models={"demand": block})
    local = mm.load_bundle(tmp_path).train("demand", workers=1)
    remote = mm.load_bundle(tmp_path, spark=connect_spark).train("demand")
    a = local.manifest.set_index("segment").sort_index()
    b = remote.manifest.set_index("segment").sort_index()
    assert (b["status"] == "ok").all(), b["error"].tolist()
    assert "ets" in set(b["candidate"]) and a["candidate"].tolist() == b["candidate"].tolist()
    np.testing.assert_allclose(a["rmse"].to_numpy(), b["rmse"].to_numpy(), atol=1e-9)
    api = mm.load_bundle(tmp_path)
    mine = api.forecast("demand", run_id=local.run_id, levels=[95]).sort_values(["segment", "week"])
    theirs = api.forecast("demand", run_id=remote.run_id, levels=[95]).sort_values(["segment", "week"])
    for column in ("prediction", "lo-95", "hi-95"):
        np.testing.assert_allclose(mine[column].to_numpy(dtype=float), theirs[column].to_numpy(dtype=float),
                                   atol=1e-9)


def test_a_hierarchys_levels_on_spark_connect_are_the_local_engines(tmp_path: Path, connect_spark: Any) -> None:
    pytest.importorskip("hierarchicalforecast", reason="the hierarchy extra runs in .venv-forecast (make test)")
    write_bundle(tmp_path, frame=hierarchy_frame(), models={"demand": hierarchy_block()})
    api = mm.load_bundle(tmp_path)
    first = api.train("demand", workers=1).run_id
    same_levels_on(api, mm.load_bundle(tmp_path, spark=connect_spark), first)
