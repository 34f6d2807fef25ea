"""Forecast models fitted over many series at once: a fallback over every series, and a pooled (`scope: global`)
candidate whose holdout and window forecasts each series reads."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from manymodels.data.timegrid import TimeGrid
from manymodels.segment.forecast import forecast_many, origins_from_series
from manymodels.segment.forecast_windows import (
    NAIVE,
    forecast_windows,
    grid_of,
    imputer_of,
    plan_of,
    series_scales,
    step_metrics,
    thin_limit,
    window_metric,
)
from manymodels.segment.forecaster import (
    Forecaster,
    fit_forecaster,
    fit_pooled_forecaster,
    tail_width,
)
from manymodels.segment.metrics import compute_metrics
from manymodels.segment.select import SelectionError, validation_of
from manymodels.segment.series import ForecastDataError, Series, series_of
from manymodels.segment.spec import ForecastPlan, SegmentSpec, series_key


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
                                       impute=imputer_of(spec, candidate), serialize=True)
    return forecaster, _pooled_holdout(forecaster, spec, grid, usable, trains)[1]


def _pooled_holdout(model: Forecaster, spec: SegmentSpec, grid: TimeGrid, series: list[Series],
                    trains: list[Series]) -> tuple[np.ndarray, dict[str, Any]]:
    """A pooled model's forecasts of each series' holdout (series x steps), and what the manifest keeps of them."""
    plan = plan_of(spec)
    horizon = plan.horizon
    known = np.array([s.known[-horizon:] for s in series]).reshape(len(series), horizon, len(plan.known))
    predicted = _pooled_forecast(model, plan, grid, trains, known)
    actual = np.array([s.y[-horizon:] for s in series])
    naive = forecast_many(plan, grid, [fit_forecaster(NAIVE, {}, plan, t) for t in trains],
                          origins_from_series(trains, plan, 1), horizon, known)
    return predicted, {
        "metrics": compute_metrics("regression", *_known_pairs(actual, predicted)),
        "step_metric": json.dumps(step_metrics(spec.metric, actual, predicted)),
        "holdout_naive": window_metric(spec.metric, actual.reshape(-1), naive.reshape(-1)),
        "n_train": sum(len(t) for t in trains),
        "n_test": int(np.isfinite(actual).sum()),
        "profile": None,
    }


def fit_shared(frame: pd.DataFrame, spec: SegmentSpec) -> tuple[Forecaster, dict[str, Any]]:
    """A pooled candidate's fit: one model over every series of `frame` (split by `spec.pool_by`; `spec` holds the
    one candidate and the family's validation), scored per series on the windows its own selection uses.

    Each window is one fit over every series' steps before that series' origin (the k-th window of each series,
    counted back from its holdout), forecasting each series' horizon from its origin; the holdout's fit is the
    model kept (every series' steps before its holdout), forecasting each series' holdout. Series too short for
    a window (or for the holdout) are left out of its fit and score.

    Returns:
        The model (no state: each segment that chooses it keeps its own), and what the manifest keeps, plus
        `scores` (JSON: series key -> [[origin, window metric, window forecast], ...], the holdout forecast).

    Raises:
        ForecastDataError: no series is long enough for the holdout and one window.
    """
    plan, validation = plan_of(spec), validation_of(spec)
    grid = grid_of(plan, frame)
    horizon = plan.horizon
    candidate = spec.choices()[0]
    impute = imputer_of(spec, candidate)
    keys, series = [], []
    for values, rows in frame.groupby(list(spec.pool_by), sort=True, dropna=False, observed=True):
        try:
            history = series_of(rows, plan, spec.label, grid)
        except ForecastDataError:
            continue  # off the grid: its own fit says why
        if len(history) >= thin_limit(spec):
            keys.append(series_key(values if isinstance(values, tuple) else (values,)))
            series.append(history)
    if not series:
        raise ForecastDataError(f"no series has {thin_limit(spec)} steps (the holdout, a window and the history "
                                f"before it): nothing to fit {candidate.name} on")
    trains = [s.upto(len(s) - horizon - 1) for s in series]
    windows: dict[int, list[tuple[int, int]]] = {}  # k-th latest window -> (series, origin)
    for i, train in enumerate(trains):
        try:
            origins = forecast_windows(len(train), spec)
        except SelectionError:
            continue
        for k, origin in enumerate(reversed(origins)):
            windows.setdefault(k, []).append((i, origin))
    folds: list[list[list[Any]]] = [[] for _ in series]
    for members in windows.values():
        histories = [trains[i].upto(o) for i, o in members]
        fitted = fit_pooled_forecaster(candidate, dict(candidate.params), plan, histories, impute=impute)
        known = np.array([trains[i].known[o + 1 : o + 1 + horizon] for i, o in members])
        actual = np.array([trains[i].y[o + 1 : o + 1 + horizon] for i, o in members])
        predicted = _pooled_forecast(fitted, plan, grid, histories, known)
        for (i, origin), a, p in zip(members, actual, predicted, strict=True):  # an ensemble member's forecasts too
            folds[i].append([origin, _json_number(window_metric(validation.metric, a, p)),
                             [_json_number(v) for v in p]])
    model = fit_pooled_forecaster(candidate, dict(candidate.params), plan, trains, impute=impute, serialize=True)
    predicted, kept = _pooled_holdout(model, spec, grid, series, trains)
    scores = {k: [sorted(f), [_json_number(v) for v in p]] for k, f, p in zip(keys, folds, predicted, strict=True)}
    if spec.refit:  # and on every series' every step: what forecasts use; the measured one is kept inside it
        final = fit_pooled_forecaster(candidate, dict(candidate.params), plan, series, impute=impute, serialize=True)
        final.measured, model = model, final
    return model, {**kept, "scores": json.dumps(scores, allow_nan=False)}


def _pooled_forecast(model: Forecaster, plan: ForecastPlan, grid: TimeGrid, histories: list[Series],
                     known: np.ndarray) -> np.ndarray:
    """One pooled model's forecasts of many series from the ends of their histories, each with its own scales."""
    views = [replace(model, scales=series_scales(plan, h)) for h in histories]
    origins = origins_from_series(histories, plan, tail_width(plan, model))
    return forecast_many(plan, grid, views, origins, plan.horizon, known.reshape(len(histories), plan.horizon,
                                                                                 len(plan.known)))


def _json_number(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def _known_pairs(actual: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    both = np.isfinite(actual) & np.isfinite(predicted)
    return actual[both], predicted[both]
