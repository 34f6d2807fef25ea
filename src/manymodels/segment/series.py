"""A segment's history on its time grid, as forecasters read it: the label, known and static values by step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from manymodels.data.timegrid import NUMBER, TimeGrid, parse_times
from manymodels.segment.spec import ForecastPlan


class ForecastDataError(ValueError):
    """A segment's rows cannot be forecast from: off the grid, a time twice, a hole with `gaps: error`, too short."""


@dataclass
class Series:
    """One segment's history on its grid: position k is k steps after its first time.

    Attributes:
        y: the label per position (NaN: a hole, with `gaps: missing`).
        times: each position's time.
        known: the known features per position (positions x known).
        static: the static features (constant per segment).
    """

    y: np.ndarray
    times: np.ndarray
    known: np.ndarray
    static: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def upto(self, origin: int) -> Series:
        """The history up to and including position `origin`."""
        return Series(self.y[: origin + 1], self.times[: origin + 1], self.known[: origin + 1], self.static)


def series_of(frame: pd.DataFrame, plan: ForecastPlan, label: str, grid: TimeGrid) -> Series:
    """A segment's rows on its grid, in time order.

    Raises:
        ForecastDataError: a time that does not parse or is off the grid, a time held twice, a hole with
            `gaps: error`, a known feature that is not a number.
    """
    try:
        times = parse_times(frame[plan.time], grid.kind)
        positions = grid.positions(times)
    except ValueError as exc:
        raise ForecastDataError(str(exc)) from exc
    order = np.argsort(positions, kind="stable")
    positions, times = positions[order], times[order]
    twice = np.flatnonzero(positions[1:] == positions[:-1])
    if twice.size:
        raise ForecastDataError(f"time {_time_label(times[twice[0]], grid)} appears twice in the segment")
    steps = int(positions[-1]) + 1 if len(positions) else 0
    y = np.full(steps, np.nan)
    y[positions] = pd.to_numeric(frame[label], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)[order]
    all_times = grid.span(times[0], steps) if steps else times
    holes = np.flatnonzero(~np.isfinite(y))
    if holes.size:
        if plan.gaps == "error":
            at = holes[0]
            what = "has no row" if at not in set(positions.tolist()) else "has no label"
            raise ForecastDataError(
                f"time {_time_label(all_times[at], grid)} {what} ({holes.size} hole(s) in the segment's grid "
                f"{grid.describe()}); set gaps: zero (a hole is 0) or missing (a hole is unknown)"
            )
        if plan.gaps == "zero":
            y[holes] = 0.0
    known = np.full((steps, len(plan.known)), np.nan)
    for j, column in enumerate(plan.known):
        values = frame[column]
        if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
            raise ForecastDataError(f"known feature {column!r} must hold numbers")
        known[positions, j] = values.to_numpy(dtype=np.float64, na_value=np.nan)[order]
    static = np.array([_static_value(frame[c].iloc[order[-1]] if len(order) else np.nan) for c in plan.static],
                      dtype=np.float64)
    return Series(y, all_times, known, static)


def _static_value(value: Any) -> float:
    """A static feature as a number: numbers as they are, text as a stable hash (the same in every process)."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    return float(pd.util.hash_array(np.array([str(value)], dtype=object))[0] % np.uint64(2**31))


def _time_label(value: Any, grid: TimeGrid) -> str:
    return repr(float(value)) if grid.kind == NUMBER else pd.Timestamp(value).isoformat()
