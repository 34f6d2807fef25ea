"""`validate`'s checks of a forecast model against its data: the time column, the grid, the history each setting needs.

Each problem comes back as (key path below the model, message), so the caller names the file and
line of the setting at fault: `time` for a time column that does not parse or a time held twice,
`freq` for times off its grid, `horizon`, `features.lags.N`, `target_transform.N.diff` or
`candidates.N.period` for a setting that needs more history than any segment has.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from manymodels.data.hierarchy import ends_problem, nesting_problem
from manymodels.data.timegrid import DATE, NUMBER, GridError, TimeGrid, infer_freq, parse_times

# Columns a forecast writes beside the segment columns and the time column (and `prediction`, `model_source`).
FORECAST_RESERVED = frozenset({"step"})
HIERARCHY_RESERVED = frozenset({"level", "base_prediction"})  # a hierarchy's forecast rows carry these too

Problem = tuple[tuple[str | int, ...], str]


def time_kind_of(dtype: pa.DataType) -> str | None:
    """`number` or `date` for a time column of this Arrow type; None for a type that is neither."""
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return NUMBER
    if pa.types.is_temporal(dtype) or pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return DATE
    if pa.types.is_dictionary(dtype):
        return DATE
    return None


def forecast_schema_problems(model: Any, schema: pa.Schema, where: str) -> list[Problem]:
    """Problems of a forecast model's time column and grid against a dataset's schema (no rows read)."""
    problems: list[Problem] = []
    if model.time not in schema.names:
        from manymodels.bundle.messages import did_you_mean

        return [(("time",), f"column {model.time!r} is not in {where}{did_you_mean(model.time, schema.names)}")]
    kind = time_kind_of(schema.field(model.time).type)
    if kind is None:
        return [(("time",), f"time column {model.time!r} must hold dates or numbers; {where} has it as "
                            f"{schema.field(model.time).type}")]
    if model.freq is not None:
        try:
            TimeGrid.of(model.freq, kind)
        except GridError as exc:
            problems.append((("freq",), str(exc)))
    calendar = model.forecast_features.calendar
    if kind == NUMBER and calendar:
        problems.append((("features", "calendar"), f"calendar features read dates; time column {model.time!r} holds "
                                                   "numbers: remove calendar"))
    return problems


def forecast_data_problems(model: Any, frame: pd.DataFrame, kind: str) -> list[Problem]:
    """Problems of a forecast model's rows (its segment and time columns, read whole): times that do not parse,
    a time held twice by a segment, times off the grid, settings that need more history than any segment has."""
    by = list(model.segment_by)
    try:
        times = parse_times(frame[model.time], kind)
    except GridError as exc:
        return [(("time",), f"{exc}")]
    if len(times) == 0:
        return []
    codes = frame.groupby(by, sort=False, dropna=False, observed=True).ngroup().to_numpy() if by else \
        np.zeros(len(frame), dtype=np.int64)
    problems: list[Problem] = []
    twice = pd.DataFrame({"code": codes, "time": times}).duplicated(keep="first").to_numpy()
    if twice.any():
        first = int(np.flatnonzero(twice)[0])
        segments = len(np.unique(codes[twice]))
        problems.append((("time",), f"segment {_segment(frame, by, first)} has time {_time(times[first], kind)} more "
                                    f"than once ({segments:,} segment(s) hold a time twice): one row per segment "
                                    "and time"))
    try:
        freq = str(model.freq) if model.freq is not None else infer_freq(codes, times, kind)
        grid = TimeGrid.of(freq, kind)
    except GridError as exc:
        return [*problems, (("freq",) if model.freq is not None else ("time",), str(exc))]
    positions, off = _positions(grid, codes, times)
    if off >= 0:
        key: tuple[str | int, ...] = ("freq",) if model.freq is not None else ("time",)
        how = "" if model.freq is not None else " (inferred from the fleet's spacing; set freq to state it)"
        problems.append((key, f"segment {_segment(frame, by, off)}: time {_time(times[off], kind)} is not on the grid "
                              f"{grid.describe()}{how}"))
        return problems
    steps = pd.Series(positions).groupby(codes).agg(lambda p: int(p.max() - p.min() + 1)).to_numpy()
    problems += _history_problems(model, int(steps.max()))
    if model.hierarchy:
        levels = list(model.hierarchy)
        why = nesting_problem(frame, levels) or ends_problem(
            frame[levels].assign(**{str(model.time): times}), levels, str(model.time))
        if why:
            problems.append((("hierarchy",), why))
    return problems


def _positions(grid: TimeGrid, codes: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, int]:
    """Each row's position on the grid (from its segment's first time), and the first row off it (-1: none)."""
    if grid.kind == NUMBER:
        first = pd.Series(times).groupby(codes).transform("min").to_numpy()
        steps = (times - first) / grid.step
        whole = np.rint(steps)
        off = np.flatnonzero(np.abs(steps - whole) > 1e-9)
        return whole.astype(np.int64), int(off[0]) if off.size else -1
    stamps = pd.DatetimeIndex(times)
    offset = grid.offset
    start = stamps.min()
    if not offset.is_on_offset(start):  # the fleet's first time off the grid: named as such
        return np.zeros(len(times), dtype=np.int64), int(np.argmin(times))
    found = pd.date_range(start, stamps.max(), freq=offset).get_indexer(stamps)  # one grid for the whole fleet
    for segment in np.unique(codes[found < 0]):  # a multiple-day grid anchored elsewhere: the segment's own
        rows = np.flatnonzero(codes == segment)
        try:
            found[rows] = grid.positions(times[rows])
        except GridError:
            bad = rows[pd.DatetimeIndex(times[rows]).get_indexer(stamps[rows]) < 0]
            return found, int(bad[0]) if bad.size else int(rows[0])
    return found.astype(np.int64), -1


def _history_problems(model: Any, longest: int) -> list[Problem]:
    """Settings that need more history than the longest segment has (before its holdout of `horizon` steps)."""
    horizon = int(model.horizon)
    problems: list[Problem] = []
    if horizon >= longest:
        return [(("horizon",), f"horizon {horizon} leaves no history to train on: the longest segment has {longest} "
                               "step(s), and its last horizon steps are held out")]
    before = longest - horizon
    for i, lag in enumerate(model.lags):
        if lag >= before:
            key: tuple[str | int, ...] = ("features", "lags", i) if model.forecast_features.lags is not None \
                else ("horizon",)
            problems.append((key, f"lag {lag} reaches back further than any segment's history before its holdout "
                                  f"({before} step(s) in the longest segment)"))
    for i, rolling in enumerate(model.forecast_features.rolling):
        if rolling.lag + rolling.window - 1 >= before:
            problems.append((("features", "rolling", i), f"a window of {rolling.window} ending {rolling.lag} step(s) "
                                                         f"back needs more than the {before} step(s) of history the "
                                                         "longest segment has before its holdout"))
    for i, transform in enumerate(model.target_transform or []):
        if transform.diff is not None and transform.diff >= before:
            problems.append((("target_transform", i, "diff"), f"a difference of {transform.diff} steps is longer than "
                                                              f"any segment's history before its holdout ({before})"))
    for i, candidate in enumerate(model.candidates or []):
        if candidate.period is not None and candidate.period > before:
            problems.append((("candidates", i, "period"), f"a season of {candidate.period} steps is longer than any "
                                                          f"segment's history before its holdout ({before})"))
        if candidate.window is not None and candidate.window > before:
            problems.append((("candidates", i, "window"), f"a window of {candidate.window} steps is longer than any "
                                                          f"segment's history before its holdout ({before})"))
    return problems


def _segment(frame: pd.DataFrame, by: list[str], row: int) -> str:
    if not by:
        return "(all rows)"
    return ", ".join(f"{c}={_short(frame[c].iloc[row])}" for c in by)


def _time(value: Any, kind: str) -> str:
    return repr(float(value)) if kind == NUMBER else pd.Timestamp(value).isoformat()


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


__all__ = ["DATE", "FORECAST_RESERVED", "HIERARCHY_RESERVED", "forecast_data_problems", "forecast_schema_problems",
           "time_kind_of"]
