"""A forecast's features, built one way for training rows, validation windows, and forecasts of many segments.

`feature_rows` reads, for each requested row, a series (a row of the transformed label, series x
steps) and a target position in it: the label's lags and rolling statistics before the target,
the target time's calendar, the target time's known values and the series' static values. A
training matrix is one series at many positions; a forecast step is many series at one position
each. So the features a model was trained on are the features it forecasts from, and a feature of
a step after the origin reads only values known at the origin (or, recursively, forecasts).
"""

from __future__ import annotations

import numpy as np

from manymodels.segment.spec import ForecastPlan
from manymodels.segment.transforms import quiet_nan

STATS = ("mean", "std", "min", "max", "sum")


def feature_rows(
    plan: ForecastPlan,
    z: np.ndarray,
    series: np.ndarray,
    at: np.ndarray,
    calendar: np.ndarray,
    known: np.ndarray,
    static: np.ndarray,
    shift: int = 0,
) -> np.ndarray:
    """The feature matrix of rows (series[i], at[i]): one row per target, `plan.feature_names` columns.

    Args:
        plan: the forecast plan.
        z: the transformed label, series x steps (NaN: missing or not known).
        series: each row's series (a row of `z`).
        at: each row's target position in its series (lags read `at - lag`; beyond the left edge: NaN).
        calendar: each row's calendar features (rows x len(plan.calendar)).
        known: each row's known values at the target time (rows x len(plan.known)).
        static: each series' static values (series x len(plan.static)).
        shift: extra steps every lag reaches back: a direct model of step h reads from the origin, h - 1 steps
            before its target.
    """
    rows = len(at)
    width = z.shape[1]
    columns: list[np.ndarray] = []
    for lag in plan.lags:
        columns.append(_gather(z, series, at - (lag + shift), width))
    for rolling in plan.rolling:
        end = at - (rolling.lag + shift)  # the window's last step
        offsets = np.arange(rolling.window - 1, -1, -1)
        window = _gather(z, series[:, None], end[:, None] - offsets[None, :], width)
        with np.errstate(invalid="ignore"), quiet_nan():
            for stat in rolling.stats:
                columns.append(_stat(window, stat))
    out = np.empty((rows, len(plan.feature_names)), dtype=np.float64)
    k = len(columns)
    if columns:
        out[:, :k] = np.column_stack(columns)
    for block in (calendar, known, static[series]):  # each rows x its columns (none: rows x 0)
        out[:, k : k + block.shape[1]] = block
        k += block.shape[1]
    return out


def _gather(z: np.ndarray, series: np.ndarray, index: np.ndarray, width: int) -> np.ndarray:
    """z[series, index], NaN where the index falls outside the series."""
    inside = (index >= 0) & (index < width)
    values = z[series, np.clip(index, 0, max(width - 1, 0))] if width else np.full(np.shape(index), np.nan)
    return np.where(inside, values, np.nan)


def _stat(window: np.ndarray, stat: str) -> np.ndarray:
    """A statistic of each row of a window (NaN when any of its steps is missing, as a window not yet full)."""
    if stat == "mean":
        return window.mean(axis=1)
    if stat == "std":
        return window.std(axis=1, ddof=1) if window.shape[1] > 1 else np.zeros(len(window))
    if stat == "min":
        return window.min(axis=1)
    if stat == "max":
        return window.max(axis=1)
    if stat == "sum":
        return window.sum(axis=1)
    raise ValueError(f"unknown rolling statistic {stat!r}; use one of {', '.join(STATS)}")
