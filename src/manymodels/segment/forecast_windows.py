"""What a forecast fit works with: its plan and time grid, the rolling-origin windows, one forecast from an origin
and its metrics, the plot record of a holdout, and the segments too thin for a model of their own."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from manymodels.data.timegrid import TimeGrid, infer_freq, parse_times, time_text
from manymodels.segment.forecast import forecast_many, model_widths, origins_from_series
from manymodels.segment.forecaster import (
    Forecaster,
    tail_width,
)
from manymodels.segment.metrics import compute_metrics
from manymodels.segment.select import SelectionError, validation_of
from manymodels.segment.series import ForecastDataError, Series
from manymodels.segment.spec import Candidate, ForecastPlan, SegmentSpec
from manymodels.segment.transforms import forward

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


def own_widths(forecaster: Forecaster, history: Series, plan: ForecastPlan, steps: int, known: np.ndarray,
               levels: Sequence[float]) -> np.ndarray:
    """A statistical model's own intervals (`intervals: model`) around its forecast from the end of `history`, as
    half-widths (levels x steps); NaN for any other forecaster or where the model gives none."""
    origins = origins_from_series([history], plan, tail_width(plan, forecaster))
    padded = np.full((steps, len(plan.known)), np.nan)
    padded[: len(known)] = known[:steps]
    return model_widths(plan, [forecaster], origins, steps, padded[None], levels)[0]


PLOT_HISTORY = 24  # steps of history before the holdout a plot keeps (at least; twice the horizon if longer)


def plot_record(train: Series, grid: TimeGrid, actual: np.ndarray, predicted: np.ndarray, widths: np.ndarray
                ) -> str:
    """What the report draws of a segment, as JSON: the time of the first step kept (`start`), the last steps of
    history before the holdout (`history`: PLOT_HISTORY, or twice the horizon), the holdout's actual values, its
    forecast, and the half-widths of its 80% and 95% intervals (null: none). Six significant digits: a plot's."""
    keep = min(len(train), max(PLOT_HISTORY, 2 * len(actual)))

    def numbers(values: np.ndarray) -> list[float | None]:
        return [float(f"{v:.6g}") if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64)]

    return json.dumps({
        "start": time_text(train.times[len(train) - keep], grid.kind) if keep else None,
        "history": numbers(train.y[len(train) - keep:]), "actual": numbers(actual), "forecast": numbers(predicted),
        "w80": numbers(widths[0]), "w95": numbers(widths[1]),
    }, allow_nan=False)


def read_plot_record(text: Any) -> dict[str, Any] | None:
    """What `plot_record` wrote, or None (none kept, or not its JSON)."""
    if not isinstance(text, str):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "forecast" in record else None


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


def imputer_of(spec: SegmentSpec, candidate: Candidate) -> str | None:
    """The imputation a candidate gets: the spec's, but LightGBM and baselines take missing values as they are."""
    return spec.impute if candidate.estimator not in ("lightgbm", "baseline") else None


def series_scales(plan: ForecastPlan, history: Series) -> np.ndarray:
    """The transforms' (mean, std) fitted on one series (NaN for transforms that fit nothing)."""
    return forward(history.y[None, :], plan.transforms)[1][0]


class ThinSegment(ForecastDataError):
    """A segment with too little history for its own model; `state` (what a pack keeps of a segment's history) lets
    a fallback forecast it."""

    def __init__(self, message: str, state: dict[str, Any]) -> None:
        super().__init__(message)
        self.state = state


def with_naive(spec: SegmentSpec) -> SegmentSpec:
    """A forecast spec whose candidates include `naive` (always measured, declared or not)."""
    if spec.forecast is None or any(c.estimator == "baseline" and c.method == "naive" for c in spec.choices()):
        return spec
    names = {c.name for c in spec.choices()}
    naive = NAIVE if NAIVE.name not in names else replace(NAIVE, name="naive_baseline")
    return replace(spec, candidates=(*spec.choices(), naive))
