"""Forecasts from a pack: each segment's forecaster with the state it keeps, many segments at once.

Three ways in, one computation (`segment.forecast.forecast_many`, vectorised across segments):

- `forecast_state`: the next steps of the pack's segments from the state the pack keeps (no data read);
- `forecast_history`: the next steps from rows of newer history (`forecast --data`), or `holdout_metrics`: the
  last steps of the rows held out and forecast from the rest, to measure a pack (evaluate);
- `forecast_rows.forecast_rows`: rows of (segment, time, known features) answered with the forecast of each row's time
  (score, MLflow's pyfunc, `serve`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from manymodels.data.timegrid import NUMBER, GridError, TimeGrid, parse_times
from manymodels.errors import DataError
from manymodels.registry import manifest as mf
from manymodels.segment.forecast import Origins, forecast_many, model_widths, origins_from_series, origins_from_states
from manymodels.segment.forecast_windows import window_metric
from manymodels.segment.forecaster import Forecaster, tail_width
from manymodels.segment.intervals import half_widths
from manymodels.segment.series import ForecastDataError, Series, series_of
from manymodels.segment.spec import ForecastPlan

if TYPE_CHECKING:
    from manymodels.registry.pack import Pack

STEP = "step"  # a forecast's step after its origin (1: the first), beside the time it forecasts


def plan_and_grid(pack: Pack) -> tuple[ForecastPlan, TimeGrid]:
    """A forecast pack's plan and time grid.

    Raises:
        DataError: the pack is not a forecast's.
    """
    plan = pack.plan
    if plan is None or plan.freq is None:
        raise DataError(f"model {pack.info.model!r} is not a forecast model (task forecast)")
    return plan, TimeGrid.of(plan.freq, plan.time_kind)


def history_columns(pack: Pack) -> list[str]:
    """The columns a forecast reads of rows of newer history: segments, time, label, known and static features.

    Raises:
        DataError: the pack is not a forecast's.
    """
    plan, _ = plan_and_grid(pack)
    return list(dict.fromkeys([*pack.segment_by, plan.time, pack.info.label, *plan.known, *plan.static]))


def load_forecasters(pack: Pack, segments: np.ndarray, damaged_unserved: bool = False
                     ) -> tuple[list[Forecaster], np.ndarray, np.ndarray]:
    """The forecasters of segments (their segment_index in the pack; -1: none), read shard by shard.

    Returns:
        The forecasters of the segments served (in the order given), which of `segments` are served, which are
        damaged (left unserved).

    Raises:
        DamagedModel: a segment's model is damaged, unless `damaged_unserved`.
    """
    from manymodels.registry.pack_info import DamagedModel

    served = segments >= 0
    damaged = np.zeros(len(segments), dtype=bool)
    found: dict[int, Forecaster] = {}
    wanted = np.unique(segments[served])
    for segment in wanted[pack.shard_order(wanted)] if len(wanted) else wanted:
        try:
            model = pack.model_of(int(segment))
        except DamagedModel:
            if not damaged_unserved:
                raise
            continue
        if isinstance(model, Forecaster):
            found[int(segment)] = model
    for i in np.flatnonzero(served):
        if int(segments[i]) not in found:
            served[i], damaged[i] = False, True
    return [found[int(s)] for s in segments[served]], served, damaged


def future_known(plan: ForecastPlan, grid: TimeGrid, known: pd.DataFrame | None, keys: pd.DataFrame,
                 times: np.ndarray, model: str) -> np.ndarray:
    """The known features' values at each segment's future times: segments x steps x known.

    Raises:
        DataError: the plan reads known features and `known` is missing, lacks a column, or has no row for a
            segment's time (named).
    """
    n, steps = times.shape[:2]
    if not plan.known:
        return np.zeros((n, steps, 0))
    if known is None:
        raise DataError(f"model {model!r} reads known feature(s) {', '.join(plan.known)}: give their future values "
                        "(--known: rows of segment, time and those columns)")
    by = list(keys.columns)
    lacking = [c for c in [*by, plan.time, *plan.known] if c not in known.columns]
    if lacking:
        raise DataError(f"the known values lack column(s) {', '.join(lacking)}")
    try:
        stamps = parse_times(known[plan.time], grid.kind)
    except GridError as exc:
        raise DataError(f"the known values' {plan.time!r}: {exc}") from exc
    table = pd.DataFrame({"_key": mf.segment_labels(known[by]), "_time": stamps})
    for column in plan.known:
        table[column] = pd.to_numeric(known[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    table = table.drop_duplicates(["_key", "_time"], keep="last")
    wanted = pd.DataFrame({"_key": np.repeat(mf.segment_labels(keys).to_numpy(dtype=object), steps),
                           "_time": times.reshape(-1)})
    merged = wanted.merge(table, on=["_key", "_time"], how="left", sort=False)
    absent = merged[list(plan.known)].isna().all(axis=1).to_numpy()
    if absent.any():
        first = int(np.flatnonzero(absent)[0])
        raise DataError(
            f"the known values have no row for segment {merged['_key'].iat[first]!r} at {plan.time} "
            f"{time_label(merged['_time'].iat[first], grid)} ({int(absent.sum()):,} segment-step(s) lack one): give "
            f"each segment's {', '.join(plan.known)} for the {steps} step(s) forecast"
        )
    return merged[list(plan.known)].to_numpy(dtype=np.float64).reshape(n, steps, len(plan.known))


def fallback_forecaster(pack: Pack) -> Forecaster | None:
    """A forecast pack's fallback: its one model over every segment's series (None without one, or damaged)."""
    from manymodels.registry.pack_info import DamagedModel

    fallback = pack.fallback
    if fallback is None or fallback.plan is None:
        return None
    served = fallback.manifest.loc[fallback.manifest["status"] == "ok", "segment_index"]
    if not len(served):
        return None
    try:
        model = fallback.model_of(int(served.iloc[0]))
    except DamagedModel:
        return None
    return model if isinstance(model, Forecaster) else None


def thin_states(pack: Pack, keys: pd.DataFrame) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Which of `keys` (segments without a model of their own) the fallback forecasts from a state kept beside it
    (segments too thin for a model), and those states."""
    states = pack.fallback_states
    if states is None or not len(keys) or not len(states):
        return np.zeros(len(keys), dtype=bool), []
    by = list(keys.columns)
    table = pd.Series(states[mf.FORECAST_STATE].to_numpy(dtype=object), index=mf.segment_labels(states[by]).to_numpy())
    table = table[~table.index.duplicated(keep="last")]
    found = mf.segment_labels(keys).map(table)
    mask = found.notna().to_numpy()
    return mask, [json.loads(str(text)) for text in found[mask]]


def forecast_state(pack: Pack, keys: pd.DataFrame | None, steps: int, known: pd.DataFrame | None = None,
                   levels: Sequence[float] = ()) -> tuple[pd.DataFrame, int]:
    """The next `steps` of segments from the state the pack keeps: rows of segment columns, time, step,
    `prediction`, `model_source` (`segment`, or `fallback` for a segment too thin for a model of its own).

    Args:
        pack: a forecast family's pack.
        keys: the segments (segment columns); None: every segment the pack or its fallback forecasts.
        steps: how many steps (at most the trained horizon).
        known: the known features' future values (rows of segment, time and the known columns).
        levels: prediction intervals to add (percents): columns `lo-<level>` and `hi-<level>`.

    Returns:
        The forecasts, and how many of the segments asked have no forecast (no model, no state).
    """
    plan, grid = plan_and_grid(pack)
    if keys is None:
        keys = forecast_keys(pack)
    index = pack.locate(keys) if len(keys) else np.zeros(0, dtype=np.int64)
    forecasters, served_mask, _ = load_forecasters(pack, index)
    parts = [_from_states(pack, keys.loc[served_mask].reset_index(drop=True), forecasters, plan, grid, steps, known,
                          "segment", levels)]
    rest = keys.loc[~served_mask].reset_index(drop=True)
    fallback = fallback_forecaster(pack)
    thin = np.zeros(len(rest), dtype=bool)
    if fallback is not None and len(rest):
        thin, states = thin_states(pack, rest)
        stood_in = [replace(fallback, state=state) for state in states]
        parts.append(_from_states(pack, rest.loc[thin].reset_index(drop=True), stood_in, plan, grid, steps, known,
                                  "fallback", levels))
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return frame, int(len(rest) - thin.sum())


def _from_states(pack: Pack, keys: pd.DataFrame, forecasters: list[Forecaster], plan: ForecastPlan, grid: TimeGrid,
                 steps: int, known: pd.DataFrame | None, source: str, levels: Sequence[float] = ()) -> pd.DataFrame:
    origins = origins_from_states(forecasters, plan, grid)
    times = grid.future(origins.last, steps)
    ahead = future_known(plan, grid, known, keys, times, pack.info.model)
    values = forecast_many(plan, grid, forecasters, origins, steps, ahead)
    return forecast_frame(keys, plan, grid, times, values, source,
                          bands(forecasters, levels, steps, plan, origins, ahead), levels)


def bands(forecasters: Sequence[Forecaster], levels: Sequence[float], steps: int, plan: ForecastPlan | None = None,
          origins: Origins | None = None, known: np.ndarray | None = None) -> np.ndarray | None:
    """Each forecaster's interval half-widths (segments x levels x steps): conformal, from its windows' errors
    (NaN for one with none kept, a fallback, or too few for a level); a statistical model's own (`intervals:
    model`) where it gives them, forecast from `origins` with the `known` values ahead (in `plan`'s columns). None
    without levels."""
    if not levels:
        return None
    out = np.array([half_widths(f.residuals, levels, steps) for f in forecasters]).reshape(
        len(forecasters), len(levels), steps)
    if plan is not None and origins is not None and any(f.own_intervals for f in forecasters):
        own = model_widths(plan, forecasters, origins, steps, known, levels)
        out = np.where(np.isfinite(own), own, out)
    return out


def known_segments(pack: Pack) -> int:
    """How many segments a forecast pack knows of: its manifest's (served or failed) and its fallback's thin ones."""
    by = list(pack.segment_by)
    labels = set(mf.segment_labels(pack.manifest[by]).tolist()) if by else {""}
    states = pack.fallback_states
    if states is not None and len(states) and by:
        labels |= set(mf.segment_labels(states[by]).tolist())
    return len(labels)


def forecast_keys(pack: Pack) -> pd.DataFrame:
    """Every segment a forecast pack forecasts from its state: those with a model (in shard order, so a chunk
    reads its shards once), then those its fallback forecasts (too thin for a model of their own)."""
    by = list(pack.segment_by)
    served = mf.served(pack.manifest).sort_values([mf.SHARD, mf.SEGMENT_INDEX], kind="stable")[by]
    states = pack.fallback_states if fallback_forecaster(pack) is not None else None
    if states is None or not len(states):
        return served.reset_index(drop=True)
    thin = states[by].loc[~mf.segment_labels(states[by]).isin(set(mf.segment_labels(served).tolist())).to_numpy()]
    return pd.concat([served, thin], ignore_index=True)


def forecast_frame(keys: pd.DataFrame, plan: ForecastPlan, grid: TimeGrid, times: np.ndarray, values: np.ndarray,
                   source: str, widths: np.ndarray | None = None, levels: Sequence[float] = ()) -> pd.DataFrame:
    """Forecasts as rows: each segment's keys, the time forecast, the step (1, 2, ...), `prediction`, `model_source`;
    with interval `widths` (segments x levels x steps), `lo-<level>` and `hi-<level>` per level."""
    n, steps = values.shape
    out = keys.loc[np.repeat(np.arange(n), steps)].reset_index(drop=True)
    flat = times.reshape(-1)
    if grid.kind == NUMBER and np.all(np.mod(flat, 1) == 0):
        out[plan.time] = flat.astype(np.int64)
    else:
        out[plan.time] = flat
    out[STEP] = np.tile(np.arange(1, steps + 1, dtype=np.int64), n)
    prediction = pd.array(values.reshape(-1), dtype="Float64")
    prediction[~np.isfinite(values.reshape(-1))] = pd.NA
    out["prediction"] = prediction
    out["model_source"] = pd.array([source] * len(out), dtype="string")
    for j, level in enumerate(levels):
        width = widths[:, j, :].reshape(-1) if widths is not None else np.full(len(out), np.nan)
        for name, side in ((lower_column(level), values.reshape(-1) - width),
                           (upper_column(level), values.reshape(-1) + width)):
            column = pd.array(side, dtype="Float64")
            column[~np.isfinite(side)] = pd.NA
            out[name] = column
    return out


def lower_column(level: float) -> str:
    """The column of an interval's lower bound: `lo-80`."""
    return f"lo-{level:g}"


def upper_column(level: float) -> str:
    """The column of an interval's upper bound: `hi-80`."""
    return f"hi-{level:g}"


def histories_of(frame: pd.DataFrame, by: Sequence[str], plan: ForecastPlan, label: str, grid: TimeGrid
                 ) -> tuple[pd.DataFrame, list[Series]]:
    """Each segment's history from rows of it (segment columns, time, label, known features), in first-seen order.

    Raises:
        DataError: a segment's rows are off the grid, hold a time twice, or have a hole with `gaps: error`.
    """
    if len(frame) == 0:
        return frame[list(by)].iloc[:0], []
    groups = frame.groupby(list(by), sort=False, dropna=False, observed=True) if by else [((), frame)]
    keys, histories = [], []
    for key, rows in groups:
        try:
            histories.append(series_of(rows, plan, label, grid))
        except ForecastDataError as exc:
            named = ", ".join(f"{c}={v!r}" for c, v in zip(by, key if isinstance(key, tuple) else (key,),
                                                           strict=True))
            raise DataError(f"segment {named}: {exc}") from exc
        keys.append(rows[list(by)].iloc[0])
    return pd.DataFrame(keys).reset_index(drop=True), histories


def forecast_history(pack: Pack, history: pd.DataFrame, steps: int, known: pd.DataFrame | None = None,
                     levels: Sequence[float] = ()) -> tuple[pd.DataFrame, int]:
    """The next `steps` of each segment of `history` (rows of segment, time, label, known features) from its own
    latest row, with the pack's models (no retraining).

    Returns:
        The forecasts, and how many segments of the history have no model.
    """
    plan, grid = plan_and_grid(pack)
    by = list(pack.segment_by)
    keys, histories = histories_of(history, by, plan, pack.info.label, grid)
    index = pack.locate(keys) if len(keys) else np.zeros(0, dtype=np.int64)
    forecasters, served, _ = load_forecasters(pack, index)
    fallback = fallback_forecaster(pack)
    parts = [_from_histories(pack, keys.loc[served].reset_index(drop=True),
                             [h for h, ok in zip(histories, served, strict=True) if ok], forecasters, plan, grid,
                             steps, known, "segment", levels)]
    if fallback is not None and (~served).any():  # thin or unseen segments: the fallback, from their own rows
        rest = [h for h, ok in zip(histories, served, strict=True) if not ok]
        parts.append(_from_histories(pack, keys.loc[~served].reset_index(drop=True), rest, [fallback] * len(rest),
                                     plan, grid, steps, known, "fallback", levels))
        return pd.concat(parts, ignore_index=True), 0
    return parts[0], int((~served).sum())


def _from_histories(pack: Pack, keys: pd.DataFrame, histories: list[Series], forecasters: list[Forecaster],
                    plan: ForecastPlan, grid: TimeGrid, steps: int, known: pd.DataFrame | None,
                    source: str, levels: Sequence[float] = ()) -> pd.DataFrame:
    width = max([tail_width(plan, f) for f in forecasters], default=1)
    origins = origins_from_series(histories, plan, width)
    times = grid.future(origins.last, steps)
    ahead = future_known(plan, grid, known, keys, times, pack.info.model)
    values = forecast_many(plan, grid, forecasters, origins, steps, ahead)
    return forecast_frame(keys, plan, grid, times, values, source,
                          bands(forecasters, levels, steps, plan, origins, ahead), levels)


def holdout_metrics(pack: Pack, segments: np.ndarray, histories: Sequence[Series], metric: str,
                    measured: bool = False) -> np.ndarray:
    """Each history's last `horizon` steps forecast by the pack from the steps before them: the metric per history
    (NaN where the pack has no usable model of its segment, or the history is too short to hold any out).

    Args:
        pack: a forecast family's pack.
        segments: each history's segment_index in the pack (-1: none).
        histories: the segments' rows on their grid.
        metric: the metric to compute.
        measured: forecast with the models the training's holdout measured where the pack keeps them (a `refit`
            model saw those steps), else with the models kept to forecast.
    """
    plan, grid = plan_and_grid(pack)
    out = np.full(len(histories), np.nan)
    horizon = plan.horizon
    usable = np.array([len(h) > horizon for h in histories], dtype=bool)
    asked = np.where(usable, segments, -1)
    forecasters, served, _ = load_forecasters(pack, asked, damaged_unserved=True)
    if not forecasters:
        return out
    if measured:
        forecasters = [f.measured if f.measured is not None else f for f in forecasters]
    rows = [int(i) for i in np.flatnonzero(served)]
    before = [histories[i].upto(len(histories[i]) - horizon - 1) for i in rows]
    width = max(tail_width(plan, f) for f in forecasters)
    origins = origins_from_series(before, plan, width)
    known = np.array([histories[i].known[-horizon:] for i in rows]).reshape(len(rows), horizon, len(plan.known))
    values = forecast_many(plan, grid, forecasters, origins, horizon, known)
    for k, i in enumerate(rows):
        out[i] = window_metric(metric, histories[i].y[-horizon:], values[k])
    return out


def time_label(value: object, grid: TimeGrid) -> str:
    """A time as a message shows it: a whole number as one, a date in ISO form."""
    if grid.kind == NUMBER:
        number = float(str(value))
        return str(int(number)) if math.isfinite(number) and number.is_integer() else repr(number)
    return pd.Timestamp(value).isoformat()
