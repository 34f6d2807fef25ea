"""Rows of (segment, time, known features) answered with the forecast of each row's time: what `score`, MLflow's
pyfunc and `serve` give for a forecast pack (`forecasting` computes the forecasts)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from manymodels.data.timegrid import GridError, TimeGrid, parse_times
from manymodels.errors import DataError
from manymodels.registry import manifest as mf
from manymodels.registry.forecasting import (
    bands,
    fallback_forecaster,
    load_forecasters,
    lower_column,
    plan_and_grid,
    thin_states,
    time_label,
    upper_column,
)
from manymodels.segment.forecast import Origins, forecast_many, origins_from_states
from manymodels.segment.forecaster import Forecaster
from manymodels.segment.spec import ForecastPlan

if TYPE_CHECKING:
    from manymodels.registry.pack import Pack


@dataclass
class _Placed:
    """Rows of (segment, time) placed on forecasts: whose forecaster answers each row, and at which step."""

    group: np.ndarray  # each row's forecaster (a position in `forecasters`; -1: none)
    forecasters: list[Forecaster]
    step: np.ndarray  # each row's step after its forecaster's last time (0: none within the horizon)
    future: np.ndarray  # each forecaster's times of steps 1 to horizon
    origins: Origins


def _placed(frame: pd.DataFrame, plan: ForecastPlan, grid: TimeGrid, group: np.ndarray,
            forecasters: list[Forecaster]) -> _Placed:
    """Each row's step after the last time of the forecaster `group` gives it (each forecaster's state)."""
    origins = origins_from_states(forecasters, plan, grid)
    future = grid.future(origins.last, plan.horizon)
    step = np.zeros(len(frame), dtype=np.int64)
    mine = group >= 0
    if mine.any():
        try:
            times = parse_times(frame[plan.time], grid.kind)
        except GridError as exc:
            raise DataError(f"column {plan.time!r}: {exc}") from exc
        matches = future[np.where(mine, group, 0)] == times[:, None]
        step = np.where(mine & matches.any(axis=1), matches.argmax(axis=1) + 1, 0)
    return _Placed(group, forecasters, step, future, origins)


def _groups(pack: Pack, frame: pd.DataFrame, damaged_unserved: bool
            ) -> tuple[list[tuple[np.ndarray, list[Forecaster], str]], np.ndarray]:
    """Rows split by who answers them: (each row's forecaster or -1, the forecasters, source), for the segments'
    own models, then for the fallback's stand-ins of thin segments; and the rows whose own model is damaged."""
    index = pack.locate(frame[list(pack.segment_by)]) if pack.segment_by else np.zeros(len(frame), dtype=np.int64)
    asked = np.unique(index[index >= 0])
    forecasters, served, damaged = load_forecasters(pack, asked, damaged_unserved)
    segments = asked[served]
    position = np.clip(np.searchsorted(segments, index), 0, max(len(segments) - 1, 0))
    own = np.where(np.isin(index, segments) & (index >= 0), position, -1) if len(segments) else \
        np.full(len(frame), -1)
    groups = [(own, forecasters, "segment")]
    hurt = np.isin(index, asked[damaged]) if damaged.any() else np.zeros(len(frame), dtype=bool)
    fallback = fallback_forecaster(pack)
    rest = np.flatnonzero((own < 0) & ~hurt)
    if fallback is not None and rest.size and pack.segment_by:
        keys = frame.iloc[rest][list(pack.segment_by)].reset_index(drop=True)
        labels = mf.segment_labels(keys)
        first = ~labels.duplicated().to_numpy()
        thin, states = thin_states(pack, keys.loc[first].reset_index(drop=True))
        known = labels[first].to_numpy()[thin]
        where = pd.Series(np.arange(len(known)), index=known)
        stand_in = np.full(len(frame), -1)
        stand_in[rest] = labels.map(where).fillna(-1).to_numpy(dtype=np.int64)
        groups.append((stand_in, [replace(fallback, state=state) for state in states], "fallback"))
    return groups, hurt


def row_steps(pack: Pack, frame: pd.DataFrame) -> np.ndarray:
    """Each row's step after its segment's last training time (1 to horizon; 0: none, or no forecast)."""
    plan, grid = plan_and_grid(pack)
    out = np.zeros(len(frame), dtype=np.int64)
    for group, forecasters, _ in _groups(pack, frame, damaged_unserved=True)[0]:
        placed = _placed(frame, plan, grid, group, forecasters)
        out = np.where(placed.step > 0, placed.step, out)
    return out


def forecast_rows(pack: Pack, frame: pd.DataFrame, damaged_unserved: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Rows of (segment, time, known features): the forecast of each row's time, and who made it (`answer_rows`)."""
    values, source, _, _ = answer_rows(pack, frame, damaged_unserved)
    return values, source


def band_rows(pack: Pack, frame: pd.DataFrame, levels: Sequence[float]
              ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """`forecast_rows` with each row's prediction intervals: `lo-<level>` and `hi-<level>` per level (NaN where the
    row has no forecast, or its model too few window errors for the level)."""
    values, source, _, width = answer_rows(pack, frame, levels=levels)
    out: dict[str, np.ndarray] = {}
    for j, level in enumerate(levels):
        out[lower_column(level)], out[upper_column(level)] = values - width[:, j], values + width[:, j]
    return values, source, out


def answer_rows(pack: Pack, frame: pd.DataFrame, damaged_unserved: bool = False, levels: Sequence[float] = ()
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of (segment, time, known features): the forecast, from the segment's state, of each row's time.

    A segment's own model answers its rows; with a fallback, so does the fallback for a segment too thin for a model
    of its own (from the state kept beside it). A row whose time is not 1 to `horizon` steps after its segment's last
    training time, or with no one to answer it, gets NaN (no source). A recursive forecast of step k passes through
    the steps before it: the known features of those steps are read from the other rows of the segment, and must
    be there.

    Returns:
        Predictions (NaN: none), each row's source (`segment`, `fallback`, `damaged` or None), as
        `Pack.predict_arrays`, each row's step after its segment's last training time (0: none), and the
        half-width of each row's prediction interval at each of `levels` (rows x levels; NaN: none).

    Raises:
        DataError: a time that does not parse; a row of a recursive forecast whose earlier steps have no row.
    """
    plan, grid = plan_and_grid(pack)
    values = np.full(len(frame), np.nan)
    source = np.full(len(frame), None, dtype=object)
    at_step = np.zeros(len(frame), dtype=np.int64)
    width = np.full((len(frame), len(levels)), np.nan)
    if len(frame) == 0:
        return values, source, at_step, width
    groups, hurt = _groups(pack, frame, damaged_unserved)
    source[hurt] = "damaged"
    for group, forecasters, name in groups:
        placed = _placed(frame, plan, grid, group, forecasters)
        at_step = np.where(placed.step > 0, placed.step, at_step)
        steps = int(placed.step.max(initial=0))
        if steps == 0:
            continue
        known = np.full((len(forecasters), steps, len(plan.known)), np.nan)
        asked = np.flatnonzero(placed.step > 0)
        place, step = group[asked], placed.step[asked]
        for j, column in enumerate(plan.known):
            numbers = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            known[place, step - 1, j] = numbers[asked]
        if plan.known:
            _every_step_known(frame, plan, grid, placed.future, place, step, asked, pack.segment_by)
        predicted = forecast_many(plan, grid, forecasters, placed.origins, steps, known)
        values[asked] = predicted[place, step - 1]
        source[asked] = name
        if levels:
            width[asked] = bands(forecasters, levels, steps, plan, placed.origins, known)[  # type: ignore[index]
                place, :, step - 1]
    return values, source, at_step, width


def _every_step_known(frame: pd.DataFrame, plan: ForecastPlan, grid: TimeGrid, future: np.ndarray,
                      places: np.ndarray, steps: np.ndarray, rows: np.ndarray, by: Sequence[str]) -> None:
    """A recursive forecast of step k passes through steps 1 to k - 1: their known values must be given too (a
    direct one reads step k's alone, which its own row carries).

    Raises:
        DataError: a segment's earlier step has no row (named, with its time).
    """
    if plan.strategy == "direct":
        return
    given = np.zeros(future.shape, dtype=bool)
    given[places, steps - 1] = True
    furthest = np.zeros(future.shape[0], dtype=np.int64)
    np.maximum.at(furthest, places, steps)
    needed = np.arange(future.shape[1])[None, :] < furthest[:, None]
    lacking = needed & ~given
    if lacking.any():
        segment, k = (int(v[0]) for v in np.nonzero(lacking))
        row = rows[np.flatnonzero(places == segment)[0]]
        named = ", ".join(f"{c}={frame[c].iloc[row]!r}" for c in by)
        when = time_label(future[segment, k], grid)
        raise DataError(
            f"segment {named}: the forecast of step {int(furthest[segment])} passes through step {k + 1} "
            f"({plan.time} {when}), whose {', '.join(plan.known)} the rows do not give: send a row for every step up "
            "to the one asked"
        )
