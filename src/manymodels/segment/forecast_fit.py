"""One segment of a forecast family: candidates chosen on rolling-origin windows, the winner measured on the holdout.

Every window forecasts the whole horizon from its origin, exactly as `forecast` will (the same
features, transforms and strategy, `forecast_many` with one segment), so the metric that chooses
a candidate is the metric it will have in use. The holdout is the segment's last `horizon` steps:
the winner, fitted on everything before them, forecasts them from the same origin. The `naive`
forecast is measured on it too, so a fleet that loses to it is told.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any, cast

import numpy as np
import pandas as pd

from manymodels.data.timegrid import TimeGrid, infer_freq, parse_times
from manymodels.estimators import Predictor
from manymodels.segment.forecast import (
    FORMAT_FORECAST,
    ForecastDataError,
    Forecaster,
    Series,
    fit_forecaster,
    fit_pooled_forecaster,
    forecast_many,
    origins_from_series,
    series_of,
    tail_width,
)
from manymodels.segment.metrics import compute_metrics
from manymodels.segment.profile import WIDTH, column_profile
from manymodels.segment.select import Scored, Selection, SelectionError, describe, tune, validation_of, winner_of
from manymodels.segment.spec import Candidate, ForecastPlan, SegmentSpec

NAIVE = Candidate("naive", "baseline", method="naive")


def plan_of(spec: SegmentSpec) -> ForecastPlan:
    """The spec's forecast plan (a spec without one does not forecast)."""
    if spec.forecast is None:
        raise ValueError("the model is not a forecast")
    return spec.forecast


def grid_of(plan: ForecastPlan, frame: pd.DataFrame | None = None) -> TimeGrid:
    """The plan's grid; a plan whose freq was never resolved (a spec made by hand) infers it from `frame`."""
    if plan.freq is not None:
        return TimeGrid.of(plan.freq, plan.time_kind)
    if frame is None or len(frame) < 2:
        raise ForecastDataError("the forecast's freq is not set and cannot be inferred here")
    times = parse_times(frame[plan.time], plan.time_kind)
    return TimeGrid.of(infer_freq(np.zeros(len(times), dtype=np.int64), times, plan.time_kind), plan.time_kind)


def fit_need(spec: SegmentSpec) -> int:
    """The steps of history every candidate needs to be fitted: two rows to train on after the lags and
    differencing (models), a season or window (baselines)."""
    plan = plan_of(spec)
    need = 1
    if any(c.estimator != "baseline" for c in spec.choices()):
        need = plan.differencing + plan.reach + 2
    for c in spec.choices():
        need = max(need, c.period or 0, c.window or 0)
    return need


def thin_limit(spec: SegmentSpec) -> int:
    """The fewest steps of history a segment needs: its holdout, and enough before it to fit every candidate.

    A segment with fewer is thin: it fails with a message saying so. Selecting takes one validation window
    more: its horizon, and the same history before it.
    """
    plan = plan_of(spec)
    need = fit_need(spec)
    windows = 2 if spec.selecting else 1  # the holdout, and the latest validation window
    return max(windows * plan.horizon + need, max(plan.lags, default=0) + plan.horizon, spec.min_rows)


def forecast_windows(length: int, spec: SegmentSpec) -> list[int]:
    """The origins (positions) of the validation windows within `length` steps of training history, oldest first.

    The latest window's horizon ends at the last training step; each earlier one starts `step` steps
    sooner. Windows too early to train on are dropped (at least one is needed).

    Raises:
        SelectionError: no window leaves enough history before it.
    """
    plan, validation = plan_of(spec), validation_of(spec)
    latest = length - 1 - plan.horizon
    lowest = fit_need(spec) - 1  # the history a window needs before its origin, as a position
    origins = [latest - k * validation.step for k in range(validation.windows)]
    kept = sorted(o for o in origins if o >= lowest)
    if not kept:
        raise SelectionError(
            f"too short to validate: {length} training steps; a window of {plan.horizon} steps needs {lowest + 1} "
            "before it"
        )
    return kept


def forecast_one(forecaster: Forecaster, history: Series, plan: ForecastPlan, grid: TimeGrid, steps: int,
                 known: np.ndarray) -> np.ndarray:
    """One segment's forecast, `steps` from the end of `history` (`known`: steps x known features)."""
    origins = origins_from_series([history], plan, tail_width(plan, forecaster))
    padded = np.full((steps, len(plan.known)), np.nan)
    padded[: len(known)] = known[:steps]
    return forecast_many(plan, grid, [forecaster], origins, steps, padded[None])[0]


def window_metric(metric: str, actual: np.ndarray, predicted: np.ndarray) -> float:
    """The metric over a window's steps whose actual value is known (NaN when none is)."""
    known = np.isfinite(actual)
    if not known.any() or not np.isfinite(predicted[known]).all():
        return math.nan
    return float(compute_metrics("regression", actual[known], predicted[known])[metric])


def step_metrics(metric: str, actual: np.ndarray, predicted: np.ndarray) -> list[float | None]:
    """The metric of each step of the forecasts given (one series: a vector of steps; many: series x steps), over
    the series whose step has an actual value (null where none has; r2 is not one step's)."""
    actual, predicted = np.atleast_2d(actual), np.atleast_2d(predicted)
    out: list[float | None] = []
    for k in range(actual.shape[1]):
        value = window_metric(metric, actual[:, k], predicted[:, k]) if metric != "r2" else math.nan
        out.append(None if math.isnan(value) else value)
    return out


def select_forecast(train: Series, spec: SegmentSpec, grid: TimeGrid) -> Selection:
    """Choose a segment's forecaster among the spec's candidates on rolling-origin windows; refit the winner.

    Raises:
        SelectionError: no window fits the history, or every candidate failed.
    """
    plan, validation = plan_of(spec), validation_of(spec)
    origins = forecast_windows(len(train), spec)
    horizon = plan.horizon

    def fold_scores(candidate: Candidate, params: dict[str, Any]) -> list[float]:
        out = []
        for origin in origins:
            history = train.upto(origin)
            fitted = fit_forecaster(candidate, params, plan, history, impute=_impute(spec, candidate))
            future = slice(origin + 1, origin + 1 + horizon)
            predicted = forecast_one(fitted, history, plan, grid, horizon, train.known[future])
            out.append(window_metric(validation.metric, train.y[future], predicted))
        return out

    scored = []
    for candidate in spec.choices():
        entry = Scored(candidate.name, dict(candidate.params), baseline=candidate.estimator == "baseline")
        try:
            if candidate.trials and candidate.space and candidate.scope == "segment":
                entry = tune(candidate, spec, lambda params, c=candidate: fold_scores(c, params))  # type: ignore[misc]
            else:
                entry.folds = fold_scores(candidate, entry.params)
        except Exception as exc:  # noqa: BLE001 - one candidate failing leaves the others to win
            entry.error = describe(exc)
        scored.append(entry)
    winner, candidate = winner_of(scored, spec, "window")
    fitted = fit_forecaster(candidate, winner.params, plan, train, impute=_impute(spec, candidate), serialize=True)
    # A forecaster stands where selection keeps a predictor: fit_forecast takes it back out.
    return Selection(winner, scored, len(origins), cast(Predictor, fitted), FORMAT_FORECAST, b"", validation.maximize)


def _impute(spec: SegmentSpec, candidate: Candidate) -> str | None:
    return spec.impute if candidate.estimator not in ("lightgbm", "baseline") else None


def fit_forecast(frame: pd.DataFrame, spec: SegmentSpec) -> tuple[Forecaster, Selection | None, dict[str, Any]]:
    """Fit one segment of a forecast family: select on windows, measure on the holdout, keep the state.

    Returns:
        The winner (with its state, ready to serialize), the selection (None without validation), and what
        the manifest keeps: `metrics`, `step_metric` (JSON), `holdout_naive`, `n_train`, `n_test`, `profile`.

    Raises:
        ForecastDataError: the rows are off the grid, hold a time twice, have a hole with `gaps: error`, or the
            segment is thin (fewer steps than the holdout and its candidates need).
        SelectionError: no candidate could be scored.
    """
    if spec.pool_by:
        forecaster, kept = fit_pooled(frame, spec)
        return forecaster, None, kept
    plan = plan_of(spec)
    grid = grid_of(plan, frame)
    series = series_of(frame, plan, spec.label, grid)
    need = thin_limit(spec)
    if len(series) < need:
        state = Forecaster("", "", plan=plan).with_state(series, plan, grid).state
        raise ThinSegment(
            f"thin: {len(series)} step(s) of history; forecasting {plan.horizon} step(s) ahead needs at least {need} "
            f"({'the holdout, a validation window' if spec.selecting else 'the holdout'}, the largest lag and "
            "differencing, and two rows to train on)",
            state,
        )
    horizon = plan.horizon
    cut = len(series) - horizon
    train = series.upto(cut - 1)
    selection = None
    if spec.selecting:
        selection = select_forecast(train, spec, grid)
        forecaster = cast(Forecaster, selection.predictor)
    else:
        only = spec.choices()[0]
        forecaster = fit_forecaster(only, dict(only.params), plan, train, impute=_impute(spec, only), serialize=True)
    actual = series.y[cut:]
    predicted = forecast_one(forecaster, train, plan, grid, horizon, series.known[cut:])
    naive = forecast_one(fit_forecaster(NAIVE, {}, plan, train), train, plan, grid, horizon, series.known[cut:])
    known = np.isfinite(actual)
    if not known.any():
        raise ForecastDataError("the holdout's steps have no label value to measure the forecast on")
    if not np.isfinite(predicted[known]).all():
        raise ForecastDataError(f"the {forecaster.candidate} forecast of the holdout is not a number")
    kept = {
        "metrics": compute_metrics("regression", actual[known], predicted[known]),
        "step_metric": json.dumps(step_metrics(spec.metric, actual, predicted)),
        "holdout_naive": window_metric(spec.metric, actual, naive),
        "n_train": cut,
        "n_test": horizon,
        "profile": _profile(train, plan),
    }
    return forecaster.with_state(series, plan, grid), selection, kept


def _profile(train: Series, plan: ForecastPlan) -> bytes | None:
    """The reference profile monitoring compares new rows with: the known features over the training steps. A
    forecast's own values get no reference (left empty, so never judged): a few steps ahead they sit in a narrow
    band of a history that trends and cycles, which a distance between distributions would call drift every time;
    its error, judged per step, says how it fares."""
    try:
        rows = [column_profile(pd.Series(train.known[:, j])) for j in range(len(plan.known))]
        rows.append(np.full(WIDTH, np.nan))
        return np.asarray(rows, dtype=np.float32).tobytes()
    except Exception:  # noqa: BLE001 - a profile never costs a segment its model
        return None


class ThinSegment(ForecastDataError):
    """A segment with too little history for its own model; `state` (what a pack keeps of a segment's history) lets
    a fallback forecast it."""

    def __init__(self, message: str, state: dict[str, Any]) -> None:
        super().__init__(message)
        self.state = state


def fallback_plan(plan: ForecastPlan) -> ForecastPlan:
    """A fallback's plan: the segments', without `scale` (fitted per series on its training steps, which the short
    and unseen series a fallback serves do not have)."""
    return replace(plan, transforms=tuple(t for t in plan.transforms if t[0] != "scale"))


def fit_pooled(frame: pd.DataFrame, spec: SegmentSpec) -> tuple[Forecaster, dict[str, Any]]:
    """A forecast fallback: one model fitted on the training steps of every series of `frame` (split by
    `spec.pool_by`), measured on each series' last `horizon` steps; it keeps no state (each series it serves
    brings its own).

    Raises:
        ForecastDataError: no series has more steps than the holdout, the lags and differencing need.
    """
    plan = plan_of(spec)
    grid = grid_of(plan, frame)
    horizon = plan.horizon
    histories = []
    for _, rows in frame.groupby(list(spec.pool_by), sort=True, dropna=False, observed=True):
        try:
            histories.append(series_of(rows, plan, spec.label, grid))
        except ForecastDataError:
            continue  # a series off the grid is left out of the fallback's rows (its own fit names why)
    usable = [h for h in histories if len(h) > horizon + plan.differencing + plan.reach + 1]
    if not usable:
        raise ForecastDataError(
            f"no series has more than {horizon + plan.differencing + plan.reach + 1} steps (the holdout, the largest "
            "lag and differencing): nothing to fit the fallback on"
        )
    trains = [h.upto(len(h) - horizon - 1) for h in usable]
    candidate = spec.choices()[0]
    forecaster = fit_pooled_forecaster(candidate, dict(candidate.params), plan, trains,
                                       impute=_impute(spec, candidate), serialize=True)
    known = np.array([h.known[-horizon:] for h in usable]).reshape(len(usable), horizon, len(plan.known))
    origins = origins_from_series(trains, plan, tail_width(plan, forecaster))
    predicted = forecast_many(plan, grid, [forecaster] * len(usable), origins, horizon, known)
    naive = forecast_many(plan, grid, [fit_forecaster(NAIVE, {}, plan, t) for t in trains], origins, horizon, known)
    actual = np.array([h.y[-horizon:] for h in usable])
    kept = {
        "metrics": compute_metrics("regression", *_known_pairs(actual, predicted)),
        "step_metric": json.dumps(step_metrics(spec.metric, actual, predicted)),
        "holdout_naive": window_metric(spec.metric, actual.reshape(-1), naive.reshape(-1)),
        "n_train": sum(len(t) for t in trains),
        "n_test": int(np.isfinite(actual).sum()),
        "profile": None,
    }
    return forecaster, kept


def _known_pairs(actual: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    both = np.isfinite(actual) & np.isfinite(predicted)
    return actual[both], predicted[both]


def with_naive(spec: SegmentSpec) -> SegmentSpec:
    """A forecast spec whose candidates include `naive` (always measured, declared or not)."""
    if spec.forecast is None or any(c.estimator == "baseline" and c.method == "naive" for c in spec.choices()):
        return spec
    names = {c.name for c in spec.choices()}
    naive = NAIVE if NAIVE.name not in names else replace(NAIVE, name="naive_baseline")
    return replace(spec, candidates=(*spec.choices(), naive))
