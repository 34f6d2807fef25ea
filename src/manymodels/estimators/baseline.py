"""Naive baselines: what a segment's model must beat to be worth serving.

`mean` and `median` of the training labels; `last`, the label of the latest training row (by the
time column); `seasonal`, the label one `period` earlier on the segment's own time grid. Saved as
a few numbers of JSON (their native format: nothing to unpickle).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

FORMAT_BASELINE = "baseline-json"
METHODS = ("mean", "median", "last", "seasonal")
ORDERED = frozenset({"last", "seasonal"})  # methods that need the rows' time order


def time_values(values: pd.Series | np.ndarray) -> np.ndarray:
    """A time column as float64 (numbers as they are; dates and date text as nanoseconds since the epoch)."""
    series = pd.Series(values)
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    stamps = pd.to_datetime(series)
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps.astype("datetime64[ns]").to_numpy().astype(np.int64).astype(np.float64)


class Baseline:
    """A fitted baseline. `time`: the column `last` and `seasonal` order rows by (read at prediction by `seasonal`)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    @property
    def time(self) -> str | None:
        """The time column a seasonal baseline reads from the rows it predicts."""
        return self.state.get("time")

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """One value per row: the constant, or for `seasonal` the value of each row's season."""
        n = len(X)
        if self.state["method"] != "seasonal":
            return np.full(n, float(self.state["value"]))
        if not isinstance(X, pd.DataFrame) or self.time not in X.columns:
            raise ValueError(f"a seasonal baseline needs column {self.time!r} in the rows it predicts")
        return self.predict_at(time_values(X[self.time]))

    def predict_at(self, times: np.ndarray) -> np.ndarray:
        """Seasonal predictions at times (as `time_values` gives them); a season never seen: the last value."""
        s = self.state
        seasons = np.mod(np.rint((times - s["anchor"]) / s["step"]), s["period"])
        table = np.asarray(s["seasons"], dtype=float)
        out = np.full(len(times), float(s["value"]))
        known = np.isfinite(seasons)
        picked = table[seasons[known].astype(np.int64)]
        out[known] = np.where(np.isnan(picked), float(s["value"]), picked)
        return out

    def to_bytes(self) -> bytes:
        """The model's native form: JSON."""
        return json.dumps(self.state, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> Baseline:
        """Read back what `to_bytes` wrote."""
        return cls(json.loads(blob.decode()))


def fit_baseline(
    method: str, y: np.ndarray, times: np.ndarray | None = None, period: int | None = None, time: str | None = None
) -> Baseline:
    """Fit a baseline on one segment's training labels.

    Args:
        method: `mean`, `median`, `last` or `seasonal`.
        y: the training labels.
        times: the training rows' times (`time_values`), for `last` and `seasonal`.
        period: a seasonal baseline's season length, in steps of the segment's time grid.
        time: the time column's name, kept for prediction.

    Raises:
        ValueError: no rows, an unknown method, or an ordered method without times.
    """
    y = np.asarray(y, dtype=float)
    if len(y) == 0:
        raise ValueError("no training rows")
    if method == "mean":
        return Baseline({"method": method, "value": float(np.mean(y))})
    if method == "median":
        return Baseline({"method": method, "value": float(np.median(y))})
    if method not in ORDERED:
        raise ValueError(f"unknown baseline method {method!r}; use one of {', '.join(METHODS)}")
    if times is None:
        raise ValueError(f"baseline {method} needs the rows' time column")
    order = np.argsort(np.where(np.isnan(times), -np.inf, times), kind="stable")  # no time: the earliest
    last = float(y[order[-1]])
    if method == "last":
        return Baseline({"method": method, "value": last})
    if not period:
        raise ValueError("baseline seasonal needs a period")
    # The segment's own grid: its latest time is the anchor, the step the median gap between times.
    distinct = np.unique(times[np.isfinite(times)])
    step = float(np.median(np.diff(distinct))) if len(distinct) > 1 else 1.0
    anchor = float(distinct[-1])
    seasons = np.mod(np.rint((times - anchor) / step), period)
    table: list[float | None] = [None] * period
    for i in order:  # later rows overwrite earlier ones: each season keeps its latest value
        if np.isfinite(seasons[i]):
            table[int(seasons[i])] = float(y[i])
    return Baseline(
        {
            "method": method,
            "value": last,
            "period": int(period),
            "anchor": anchor,
            "step": step,
            "seasons": [np.nan if v is None else v for v in table],
            "time": time,
        }
    )
