"""Forecasts of many segments at once: from their origins, one pass per step; features, transforms and baselines are
array operations across the segments, only each segment's own model is called per step (one row each)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from manymodels.data.timegrid import NUMBER, TimeGrid, time_from_text
from manymodels.estimators import (
    FORMAT_LIGHTGBM,
    Predictor,
    StatisticalModel,
)
from manymodels.segment.features import feature_rows
from manymodels.segment.forecaster import WHOLE, Forecaster, calendar_rows, floats, tail_width
from manymodels.segment.series import Series
from manymodels.segment.spec import ForecastPlan
from manymodels.segment.transforms import forward, inverse, quiet_nan


@dataclass
class Origins:
    """Many segments at their forecast origins: the last label values (right-aligned), the origin's time.

    Attributes:
        tail: segments x width: the label's last values, the last column at the origin (NaN-padded on the left).
        last: each origin's time.
        first: each history's first known label value (drift's line starts there).
        span: steps from that value to the origin.
        static: segments x static features.
        known: each history's known features (steps x the plan's known, the last row at the origin), where a
            statistical model reads them (None where not kept).
    """

    tail: np.ndarray
    last: np.ndarray
    first: np.ndarray
    span: np.ndarray
    static: np.ndarray
    known: list[np.ndarray | None] | None = None

    def __len__(self) -> int:
        return len(self.tail)


def origins_from_states(forecasters: Sequence[Forecaster], plan: ForecastPlan, grid: TimeGrid) -> Origins:
    """The origins packs keep: each forecaster's state (the end of its segment's training data)."""
    width = max([1, *(len(f.state["tail"]) if tail_width(plan, f) == WHOLE else
                      max(tail_width(plan, f), len(f.state["tail"])) for f in forecasters)])
    tail = np.full((len(forecasters), width), np.nan)
    for i, f in enumerate(forecasters):
        values = floats(f.state["tail"])
        if len(values):
            tail[i, width - len(values) :] = values
    last = np.array([time_from_text(f.state["last"], grid.kind) for f in forecasters],
                    dtype=np.float64 if grid.kind == NUMBER else "datetime64[ns]")
    first = floats([f.state.get("first") for f in forecasters])
    span = np.array([int(f.state.get("span", 0)) for f in forecasters], dtype=np.int64)
    static = np.full((len(forecasters), len(plan.static)), np.nan)
    for i, f in enumerate(forecasters):
        values = floats(f.state.get("static", []))
        if len(values) == len(plan.static):  # another plan's (forecast_many reads its own from the state)
            static[i] = values
    known = [_kept_known(f, plan) for f in forecasters]
    return Origins(tail, last, first, span, static, known if any(k is not None for k in known) else None)


def _kept_known(forecaster: Forecaster, plan: ForecastPlan) -> np.ndarray | None:
    """The known features' history a state keeps, in `plan`'s columns (NaN for a column its own plan lacks)."""
    rows = forecaster.state.get("known")
    if not rows:
        return None
    own = (forecaster.plan or plan).known
    values = np.array([floats(r) for r in rows]).reshape(len(rows), len(own))
    out = np.full((len(rows), len(plan.known)), np.nan)
    for j, name in enumerate(plan.known):
        if name in own:
            out[:, j] = values[:, own.index(name)]
    return out


def origins_from_series(histories: Sequence[Series], plan: ForecastPlan, width: int) -> Origins:
    """Origins at the end of each history (rows of data, not a pack's state)."""
    width = max(min(width, max((len(s) for s in histories), default=1)), 1)
    tail = np.full((len(histories), width), np.nan)
    first = np.full(len(histories), np.nan)
    span = np.zeros(len(histories), dtype=np.int64)
    for i, s in enumerate(histories):
        values = s.y[-width:]
        tail[i, width - len(values) :] = values
        known = np.flatnonzero(np.isfinite(s.y))
        if known.size:
            first[i], span[i] = s.y[known[0]], len(s) - 1 - known[0]
    last = np.array([s.times[-1] for s in histories]) if histories else np.zeros(0)
    static = np.array([s.static for s in histories]).reshape(len(histories), len(plan.static))
    regressors: list[np.ndarray | None] | None = [s.known for s in histories] if plan.known else None
    return Origins(tail, last, first, span, static, regressors)


def forecast_many(
    plan: ForecastPlan,
    grid: TimeGrid,
    forecasters: Sequence[Forecaster],
    origins: Origins,
    steps: int,
    known: np.ndarray | None = None,
) -> np.ndarray:
    """Forecasts of many segments, `steps` steps from their origins: segments x steps, in the label's units.

    Args:
        plan: the forecast plan the forecasters were fitted with.
        grid: the fleet's time grid.
        forecasters: each segment's forecaster.
        origins: each segment's history at its origin.
        steps: how many steps (at most the plan's horizon).
        known: the known features at each step's time, segments x steps x known (None when the plan has none).
    """
    n = len(forecasters)
    out = np.full((n, steps), np.nan)
    if n == 0 or steps == 0:
        return out
    if known is None:
        known = np.full((n, steps, len(plan.known)), np.nan)
    ensembles = [i for i, f in enumerate(forecasters) if f.is_ensemble]
    if ensembles:  # each member forecast as a segment of its own, from its ensemble's origin; then weighed
        owner = [i for i in ensembles for _ in forecasters[i].members]
        members = [m for i in ensembles for m in forecasters[i].members]
        weights = np.array([w for i in ensembles for w in forecasters[i].weights], dtype=np.float64)
        each = forecast_many(plan, grid, members, _subset(origins, owner), steps, known[owner])
        combined = np.zeros((n, steps))
        np.add.at(combined, np.asarray(owner, dtype=np.int64), each * weights[:, None])
        out[ensembles] = combined[ensembles]
    statistical = [i for i, f in enumerate(forecasters) if f.is_statistical]
    for i in statistical:  # one series at a time: statsforecast's models forecast from a series' values
        history, ahead = _own_known(forecasters[i], plan, origins, i, known)
        out[i] = _statistical(forecasters[i], origins.tail[i], steps, history, ahead)
    baselines = [i for i, f in enumerate(forecasters) if f.is_baseline]
    if baselines:
        out[baselines] = _baselines([forecasters[i] for i in baselines], _subset(origins, baselines), steps)
    groups: dict[ForecastPlan, list[int]] = {}
    for i, f in enumerate(forecasters):
        if not f.is_baseline and not f.is_ensemble and not f.is_statistical:
            groups.setdefault(f.plan or plan, []).append(i)
    for own, rows in groups.items():  # segments fitted with another plan (a champion's, kept by a promotion)
        index = np.asarray(rows, dtype=np.int64)
        chosen = [forecasters[i] for i in rows]
        columns = [plan.known.index(c) for c in own.known]  # the pack's known features hold every plan's
        part = _subset(origins, index)
        if own.static != plan.static:
            part.static = np.array([floats(f.state.get("static", [])) for f in chosen]).reshape(len(rows),
                                                                                             len(own.static))
        out[index] = _modelled(chosen, part, own, grid, steps, known[index][:, :, columns])
    return out


def model_widths(plan: ForecastPlan, forecasters: Sequence[Forecaster], origins: Origins, steps: int,
                 known: np.ndarray | None, levels: Sequence[float]) -> np.ndarray:
    """The half-widths of the prediction intervals statistical models with `own_intervals` give their own forecasts
    from their origins (segments x levels x steps); NaN for every other forecaster, and where a model gives none.
    `known` (segments x steps x known) and the origins' regressors are in `plan`'s columns."""
    out = np.full((len(forecasters), len(levels), steps), np.nan)
    if known is None:
        known = np.full((len(forecasters), steps, 0), np.nan)
    for i, forecaster in enumerate(forecasters):
        if forecaster.own_intervals and forecaster.is_statistical:
            history, ahead = _own_known(forecaster, plan, origins, i, known)
            out[i] = _statistical(forecaster, origins.tail[i], steps, history, ahead, levels)
    return out


def _own_known(forecaster: Forecaster, plan: ForecastPlan, origins: Origins, i: int, known: np.ndarray
               ) -> tuple[np.ndarray | None, np.ndarray]:
    """A statistical model's regressors (history, values ahead) in its own plan's columns: a pack's plan may hold
    more (a promotion's composite keeps every plan's known features), which are not the model's."""
    history = origins.known[i] if origins.known is not None else None
    ahead = known[i]
    if forecaster.plan is None or forecaster.plan.known == plan.known:
        return history, ahead
    columns = [plan.known.index(c) for c in forecaster.plan.known if c in plan.known]
    return (None if history is None else history[:, columns]), ahead[:, columns]


def _statistical(forecaster: Forecaster, tail: np.ndarray, steps: int, history: np.ndarray | None,
                 ahead: np.ndarray, levels: Sequence[float] = ()) -> np.ndarray:
    """A statistical model's forecast from a history's values (left-padded with NaN) and, for a model that reads
    them, the known features' history and values ahead (steps x the plan's known); NaN where it cannot forecast (a
    gap; a regressor missing). With `levels`: its own intervals' half-widths instead (levels x steps)."""
    nothing = np.full((len(levels), steps) if levels else steps, np.nan)
    values = np.flatnonzero(np.isfinite(tail))
    if values.size < 2 or not np.isfinite(tail[values[0] :]).all():
        return nothing
    y = tail[values[0] :]
    model = forecaster.models[0]
    if not isinstance(model, StatisticalModel):
        raise TypeError(f"candidate {forecaster.candidate} holds no statsforecast model")
    if not model.reads_exog or ahead.shape[-1] == 0:
        return model.widths(y, steps, levels) if levels else model.forecast(y, steps)
    if history is None or len(history) < len(y):
        return nothing
    X, X_future = history[-len(y) :], ahead[:steps]  # noqa: N806 - statsforecast's names
    if not (np.isfinite(X).all() and np.isfinite(X_future).all()):
        return nothing
    return model.widths(y, steps, levels, X, X_future) if levels else model.forecast(y, steps, X, X_future)


def _subset(origins: Origins, rows: Sequence[int] | np.ndarray) -> Origins:
    index = np.asarray(rows, dtype=np.int64)
    known = None if origins.known is None else [origins.known[i] for i in index.tolist()]
    return Origins(origins.tail[index], origins.last[index], origins.first[index], origins.span[index],
                   origins.static[index], known)


def _last_known(tail: np.ndarray) -> np.ndarray:
    """Each row's last known value (NaN for a row with none)."""
    finite = np.isfinite(tail)
    position = tail.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1)
    values = tail[np.arange(len(tail)), position]
    return np.where(finite.any(axis=1), values, np.nan)


def _baselines(forecasters: Sequence[Forecaster], origins: Origins, steps: int) -> np.ndarray:
    """Baseline forecasts, each method over all its segments at once, defined at the origin."""
    n, width = origins.tail.shape
    out = np.full((n, steps), np.nan)
    last = _last_known(origins.tail)
    h = np.arange(1, steps + 1, dtype=np.float64)
    groups: dict[tuple[str, int, int], list[int]] = {}
    for i, f in enumerate(forecasters):
        groups.setdefault((str(f.method), int(f.period or 0), int(f.window or 0)), []).append(i)
    for (method, period, window), rows in groups.items():
        r = np.asarray(rows, dtype=np.int64)
        if method == "naive":
            out[r] = last[r, None]
        elif method == "seasonal_naive":
            # the value one season before each target step: period - ((h - 1) mod period) steps before the origin
            back = np.array([width - period + ((k - 1) % period) for k in range(1, steps + 1)], dtype=np.int64)
            values = origins.tail[r][:, np.clip(back, 0, width - 1)]
            values = np.where(back[None, :] >= 0, values, np.nan)
            out[r] = np.where(np.isfinite(values), values, last[r, None])  # a season not seen: the last value
        elif method == "drift":
            span = origins.span[r].astype(np.float64)
            slope = np.where(span > 0, (last[r] - origins.first[r]) / np.maximum(span, 1.0), 0.0)
            out[r] = last[r, None] + slope[:, None] * h[None, :]
        elif method == "window_average":
            with quiet_nan():
                out[r] = np.nanmean(origins.tail[r][:, max(width - window, 0) :], axis=1)[:, None]
        else:  # mean, median: the value fitted on the history
            out[r] = np.array([forecasters[i].value for i in rows], dtype=np.float64)[:, None]
    return out


def _modelled(
    forecasters: Sequence[Forecaster],
    origins: Origins,
    plan: ForecastPlan,
    grid: TimeGrid,
    steps: int,
    known: np.ndarray,
) -> np.ndarray:
    """Forecasts of fitted models: features and transforms for all segments at once, each model called per step."""
    n, width = origins.tail.shape
    scales = np.array([f.scales if f.scales is not None else np.full((len(plan.transforms), 2), np.nan)
                       for f in forecasters]).reshape(n, len(plan.transforms), 2)
    levels, _ = forward(origins.tail, plan.transforms, scales)
    z = np.concatenate([levels[-1], np.full((n, steps), np.nan)], axis=1)
    calendar = calendar_rows(plan, grid.future(origins.last, steps))
    rows = np.arange(n, dtype=np.int64)
    names = plan.feature_names
    direct = plan.strategy == "direct"
    # LightGBM takes a bare array whatever it was fitted on; a model fitted on a frame gets one, else an array.
    bare = np.array([f.formats[0] == FORMAT_LIGHTGBM or not f.frames for f in forecasters], dtype=bool)
    with quiet_nan():
        for k in range(steps):
            at = np.full(n, width + k, dtype=np.int64)
            features = feature_rows(plan, z, rows, at, calendar[:, k], known[:, k], origins.static,
                                    shift=k if direct else 0)
            frame = None if bare.all() else pd.DataFrame(features, columns=names)
            predicted = np.empty(n)
            for model, at_rows in _by_model(forecasters, k if direct else 0):  # a shared model: one call for all
                given = features[at_rows] if bare[at_rows[0]] else frame.iloc[at_rows]  # type: ignore[union-attr]
                predicted[at_rows] = np.asarray(model.predict(given), dtype=np.float64).reshape(-1)
            z[:, width + k] = predicted
    return inverse(levels, plan.transforms, scales, z[:, width:])


def _by_model(forecasters: Sequence[Forecaster], k: int) -> list[tuple[Predictor, np.ndarray]]:
    """The forecasters' k-th models, each with the rows that use it (a pooled model's segments share one)."""
    groups: dict[int, tuple[Predictor, list[int]]] = {}
    for i, f in enumerate(forecasters):
        model = f.models[k]
        groups.setdefault(id(model), (model, []))[1].append(i)
    return [(model, np.asarray(rows, dtype=np.int64)) for model, rows in groups.values()]
