"""Monitoring's verdict per segment from an engine's rows: the bar and chance together, forecasts' own rules."""

from __future__ import annotations

import numpy as np
import pandas as pd

from manymodels.bundle.schema import MonitoringSpec
from manymodels.engines.operations import MON_WINDOWS
from manymodels.jobs.drift import judge
from manymodels.registry import manifest as mf


def _raw(loss_p: list[float], metric_new: list[float], forecast: bool = False) -> pd.DataFrame:
    n = len(loss_p)
    raw = pd.DataFrame({"segment": [f"s{i}" for i in range(n)], mf.SEGMENT_INDEX: range(n), "rows": 40,
                        "model_index": range(n), "psi_0": np.nan, "ks_0": np.nan, "p_0": np.nan,
                        "metric_new": metric_new, "loss_p": loss_p})
    if forecast:
        raw["banded"], raw["misses"] = 40, 0
        for column, value in zip(MON_WINDOWS, (np.nan, np.nan, np.nan, np.nan, 0, 0), strict=True):
            raw[column] = value
    return raw


def _manifest(n: int) -> pd.DataFrame:
    return pd.DataFrame({mf.SEGMENT_INDEX: range(n), "rmse": 1.0})


def test_a_segment_is_degraded_past_the_bar_and_beyond_chance_only() -> None:
    """Worse by half, with p 1e-6 (degraded); by half, with p 0.3 (chance); better, with p 1e-6 (not worse);
    a pack without holdout losses (p NaN): the bar alone."""
    raw = _raw([1e-6, 0.3, 1e-6, np.nan], [1.5, 1.5, 0.9, 1.5])
    table = judge(raw, _manifest(4), ["segment"], [], "rmse", MonitoringSpec(), False).set_index("segment")
    assert table["status"].to_dict() == {"s0": "degraded", "s1": "no_profile", "s2": "no_profile",
                                         "s3": "degraded"}
    assert table.loc["s0", "degraded_q"] < 0.01 < table.loc["s1", "degraded_q"]


def test_a_forecast_without_known_features_is_judged_on_its_errors_not_called_unprofiled() -> None:
    raw = _raw([0.5, 1e-6], [1.0, 2.0], forecast=True)
    table = judge(raw, _manifest(2), ["segment"], [], "rmse", MonitoringSpec(), False).set_index("segment")
    assert table["status"].to_dict() == {"s0": "ok", "s1": "degraded"}
    assert (table["coverage_95"] == 1.0).all() and (table["design_effect"] == 1.0).all()  # no windows: no effect
