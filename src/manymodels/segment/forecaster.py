"""Forecasters: a segment's fitted forecast model and the state it forecasts from; forecasts of many at once.

A forecaster is one candidate fitted on a segment's history up to an origin: a baseline
(`naive`, `seasonal_naive`, `drift`, `window_average`, `mean`, `median`, each defined at the
origin), or an estimator (LightGBM, sklearn, a project's own) on the forecast plan's features of
the transformed label, one model (`recursive`: its forecasts feed the next step's lags) or one
per step (`direct`). Its bytes hold the inner models in their own formats (LightGBM text, ...)
behind a JSON header with the transforms' fitted scales and the segment's state: the last values
the features and transforms read, the time of its last row, its static values. So a pack
forecasts with no training data.

`forecast.forecast_many` forecasts many segments from their origins in one pass per step: features,
transforms and baselines are array operations across the segments; only each segment's own
model is called per step (one row each), as no two segments share a model.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from manymodels.data.timegrid import TimeGrid, calendar_values, time_text
from manymodels.estimators import (
    FORMAT_STATSFORECAST,
    Predictor,
    StatisticalModel,
    dump_statistical,
    fit_model,
    fit_statistical,
    is_constant,
    load_model,
    uses_exog,
)
from manymodels.segment.features import feature_rows
from manymodels.segment.series import ForecastDataError, Series
from manymodels.segment.spec import Candidate, ForecastPlan
from manymodels.segment.transforms import forward

FORMAT_FORECAST = "forecast"
ENSEMBLE = "ensemble"
STATISTICAL = "statsforecast"
WHOLE = 1 << 40  # the tail width of a forecaster that forecasts from the whole history (a statistical model)
_MAGIC = b"MMFC1\n"
BASELINES = ("naive", "seasonal_naive", "drift", "window_average", "mean", "median")


@dataclass
class Forecaster:
    """One segment's fitted forecast model, and the state it forecasts from (`state`, set by `with_state`).

    Attributes:
        candidate: the candidate's name.
        estimator: `lightgbm`, `sklearn`, `python`, `baseline`, `statsforecast` or `ensemble`.
        strategy: `recursive` or `direct`.
        method, period, window, value: a baseline's method, season, window, and fitted value (mean, median).
        scales: the transforms' fitted (mean, std) per transform (NaN for those that fit nothing).
        plan: the plan it was fitted with (its features and transforms): a pack may hold segments trained with
            other plans (a promotion keeps the champion's where the challenger lost).
        models: the fitted models (one, or one per step with `direct`); none for a baseline.
        frames: whether the models read a pandas frame with the feature names (LightGBM and models that impute),
            rather than a bare array (faster: scikit-learn checks a frame's names at every call).
        formats: each model's format; blobs: each model's bytes (empty until serialized).
        state: tail (the last label values), last (time), first (first known label), span (steps from it to the
            last), static (values), count (steps of history).
        shared: a pooled candidate's: the checksum of the one model every segment that chose it shares (a pack
            keeps it once; this forecaster keeps its own scales and state, and no model until the pack attaches it).
        members, weights: an ensemble's (estimator `ensemble`): its members' forecasters (no state of their own:
            they forecast from the ensemble's) and the weight of each in the mean of their forecasts.
        measured: with `refit`, the forecaster the holdout measured (fitted on the steps before it), kept for
            `evaluate`; this one was fitted again on every step.
        residuals: the selection's validation-window errors (windows x steps; each window's by the candidate the
            other windows chose: `forecast_fit.chosen_elsewhere`), from which its prediction intervals come
            (`segment.intervals`); None where none were kept (no selection, a fallback).
        model_residuals: the chosen candidate's own window errors, where they differ from `residuals` (None: the
            same): how one model's errors hang together within a forecast, for monitoring's design effect
            (`own_errors`), which a mix of candidates' errors would overstate.
        own_intervals: a statistical model's: its prediction intervals are the model's own (statsforecast's), not
            conformal ones from `residuals`.
    """

    candidate: str
    estimator: str
    strategy: str = "recursive"
    method: str | None = None
    period: int | None = None
    window: int | None = None
    value: float | None = None
    scales: np.ndarray | None = None
    plan: ForecastPlan | None = None
    frames: bool = False
    models: list[Predictor] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    blobs: list[bytes] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    shared: str | None = None
    members: list[Forecaster] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    measured: Forecaster | None = None
    residuals: np.ndarray | None = None
    own_intervals: bool = False
    model_residuals: np.ndarray | None = None

    @property
    def own_errors(self) -> np.ndarray | None:
        """The kept model's own validation-window errors (windows x steps), or None."""
        return self.residuals if self.model_residuals is None else self.model_residuals

    @property
    def is_baseline(self) -> bool:
        """Whether it forecasts by a rule, with no fitted model."""
        return self.estimator == "baseline"

    @property
    def is_statistical(self) -> bool:
        """Whether it is a statsforecast model, which forecasts from the whole history of label values."""
        return self.estimator == STATISTICAL

    @property
    def is_ensemble(self) -> bool:
        """Whether it forecasts the weighted mean of its members' forecasts."""
        return self.estimator == ENSEMBLE

    @property
    def constant(self) -> bool:
        """Whether every inner model predicts one value whatever its features (LightGBM found no split)."""
        if self.is_ensemble:
            return all(m.constant for m in self.members)
        return bool(self.blobs) and all(is_constant(f, b) for f, b in zip(self.formats, self.blobs, strict=True))

    def with_state(self, series: Series, plan: ForecastPlan, grid: TimeGrid) -> Forecaster:
        """This forecaster with the state of `series` (its whole history): what a pack forecasts from."""
        width = tail_width(plan, self)
        known = np.flatnonzero(np.isfinite(series.y))
        first = int(known[0]) if known.size else 0
        self.state = {
            "tail": [_json_float(v) for v in series.y[-width:].tolist()],
            "last": time_text(series.times[-1], grid.kind),
            "first": _json_float(float(series.y[first])) if known.size else None,
            "span": int(len(series) - 1 - first),
            "static": [_json_float(v) for v in series.static.tolist()],
            "count": len(series),
        }
        if width == WHOLE and series.known.shape[1]:  # a statistical model's regressors, over the same history
            self.state["known"] = [[_json_float(v) for v in row] for row in series.known.tolist()]
        return self

    def to_bytes(self) -> bytes:
        """The forecaster's bytes: a JSON header, then each inner model's bytes in its own format (an ensemble's:
        each member's forecaster bytes)."""
        formats, blobs = self.formats, self.blobs
        if self.is_ensemble:
            formats, blobs = [FORMAT_FORECAST] * len(self.members), [m.to_bytes() for m in self.members]
        header = {
            "version": 1,
            "candidate": self.candidate,
            "estimator": self.estimator,
            "strategy": self.strategy,
            "method": self.method,
            "period": self.period,
            "window": self.window,
            "value": self.value,
            "scales": None if self.scales is None else [[_json_float(v) for v in row] for row in self.scales.tolist()],
            "formats": list(formats),
            "frames": self.frames,
            "plan": None if self.plan is None else asdict(self.plan),
            "sizes": [len(b) for b in blobs],
            "state": self.state,
        }
        if self.shared is not None:
            header["shared"] = self.shared
        if self.is_ensemble:
            header["weights"] = [float(w) for w in self.weights]
        if self.residuals is not None:
            header["residuals"] = [[_json_float(v) for v in row] for row in self.residuals.tolist()]
        if self.model_residuals is not None:
            header["model_residuals"] = [[_json_float(v) for v in row] for row in self.model_residuals.tolist()]
        if self.own_intervals:
            header["own_intervals"] = True
        measured = self.measured.to_bytes() if self.measured is not None else b""
        if measured:
            header["measured"] = len(measured)  # its bytes follow the inner models'
        text = json.dumps(header, sort_keys=True, allow_nan=False).encode()
        return b"".join([_MAGIC, struct.pack(">Q", len(text)), text, *blobs, measured])


def _json_float(value: float) -> float | None:
    """JSON has no NaN: a missing value is null."""
    return None if value is None or not np.isfinite(value) else float(value)


def floats(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def forecaster_header(blob: bytes) -> tuple[dict[str, Any], int]:
    """A forecaster's JSON header (what `Forecaster.to_bytes` wrote before its inner models) and where they start;
    read without loading any model.

    Raises:
        ValueError: not a forecaster's bytes.
    """
    if not blob.startswith(_MAGIC):
        raise ValueError("not a forecast model")
    start = len(_MAGIC) + 8
    (size,) = struct.unpack(">Q", blob[len(_MAGIC) : start])
    return json.loads(blob[start : start + size].decode()), start + size


def header_residuals(header: dict[str, Any], key: str = "residuals") -> np.ndarray | None:
    """The validation-window errors (windows x steps) a forecaster's header keeps under `key`, or None."""
    rows = header.get(key)
    return np.array([floats(row) for row in rows]) if rows else None


def shared_references(blob: bytes) -> dict[str, str]:
    """The pooled models a forecaster's bytes reference (its own, or its ensemble's members'): checksum -> the
    candidate; read from the headers, no model loaded.

    Raises:
        ValueError: not a forecaster's bytes.
    """
    if b'"shared"' not in blob:  # no header of it names one (most segments: read at every verify)
        return {}
    header, at = forecaster_header(blob)
    found = {str(header["shared"]): str(header.get("candidate", ""))} if header.get("shared") else {}
    for size in header["sizes"]:
        if header.get("estimator") == ENSEMBLE:
            found.update(shared_references(blob[at : at + size]))
        at += size
    if header.get("measured"):
        found.update(shared_references(blob[at : at + int(header["measured"])]))
    return found


def load_forecaster(blob: bytes) -> Forecaster:
    """Read back what `Forecaster.to_bytes` wrote (inner models loaded in their own formats).

    Raises:
        ValueError: not a forecaster's bytes.
    """
    header, at = forecaster_header(blob)
    blobs = []
    for length in header["sizes"]:
        blobs.append(blob[at : at + length])
        at += length
    scales = header.get("scales")
    forecaster = Forecaster(
        candidate=header["candidate"],
        estimator=header["estimator"],
        strategy=header["strategy"],
        method=header.get("method"),
        period=header.get("period"),
        window=header.get("window"),
        value=header.get("value"),
        scales=None if scales is None else np.array([floats(row) for row in scales]).reshape(-1, 2),
        frames=bool(header.get("frames", False)),
        plan=ForecastPlan.from_dict(header["plan"]) if header.get("plan") else None,
        models=[] if header["estimator"] == ENSEMBLE else
        [load_model(f, b, "regression") for f, b in zip(header["formats"], blobs, strict=True)],
        formats=list(header["formats"]),
        blobs=blobs,
        state=header["state"],
        shared=header.get("shared"),
        members=[load_forecaster(b) for b in blobs] if header["estimator"] == ENSEMBLE else [],
        weights=[float(w) for w in header.get("weights", [])],
        residuals=header_residuals(header),
        model_residuals=header_residuals(header, "model_residuals"),
        own_intervals=bool(header.get("own_intervals", False)),
    )
    if header.get("measured"):
        forecaster.measured = load_forecaster(blob[at : at + int(header["measured"])])
    for inner in (*forecaster.members, forecaster.measured):  # they forecast from its history
        if inner is not None:
            _give_state(inner, forecaster.state)
    return forecaster


def _give_state(forecaster: Forecaster, state: dict[str, Any]) -> None:
    forecaster.state = state
    for member in forecaster.members:
        _give_state(member, state)


def tail_width(plan: ForecastPlan, forecaster: Forecaster | None = None) -> int:
    """How many of its last label values a segment keeps to forecast from (features, transforms, baselines)."""
    if forecaster is not None and forecaster.is_ensemble:
        return max(tail_width(plan, m) for m in forecaster.members)
    if forecaster is not None and forecaster.is_statistical:
        return WHOLE
    if forecaster is not None and forecaster.plan is not None:
        plan = forecaster.plan
    need = plan.reach + plan.differencing
    if forecaster is not None:
        need = max(need, forecaster.period or 0, forecaster.window or 0)
    return max(need, 1)


def fit_forecaster(
    candidate: Candidate,
    params: dict[str, Any],
    plan: ForecastPlan,
    series: Series,
    impute: str | None = None,
    serialize: bool = False,
) -> Forecaster:
    """Fit one candidate on a segment's history (all of `series`).

    Raises:
        ForecastDataError: too few steps to train on.
        ValueError: a baseline or transform that cannot fit these values.
    """
    if candidate.estimator == "baseline":
        return _fit_baseline(candidate, plan, series)
    if candidate.estimator == STATISTICAL:
        name = str(candidate.entry)
        model = fit_statistical(name, params, statistical_values(series.y),
                                statistical_known(series) if uses_exog(name) else None)
        return Forecaster(candidate.name, STATISTICAL, plan.strategy, plan=plan, models=[StatisticalModel(model)],
                          formats=[FORMAT_STATSFORECAST], blobs=[dump_statistical(model) if serialize else b""],
                          own_intervals=candidate.own_intervals)
    return fit_pooled_forecaster(candidate, params, plan, [series], impute, serialize)


def fit_pooled_forecaster(
    candidate: Candidate,
    params: dict[str, Any],
    plan: ForecastPlan,
    histories: Sequence[Series],
    impute: str | None = None,
    serialize: bool = False,
) -> Forecaster:
    """Fit one model on the training rows of every history (one: a segment's own; many: a fallback's, whose
    transforms then fit nothing per series: `scale` is left out of a fallback's plan).

    Raises:
        ForecastDataError: fewer than 2 steps to train on, over all histories.
    """
    shifts = range(plan.horizon) if plan.strategy == "direct" else range(1)
    # LightGBM keeps the feature names in its model text; a model that imputes fills a frame's columns by name.
    frames = candidate.estimator == "lightgbm" or impute is not None
    fitted_scales = None
    blocks: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in shifts]
    for series in histories:
        levels, scales = forward(series.y[None, :], plan.transforms)
        fitted_scales = scales[0]
        z = levels[-1]
        calendar = calendar_rows(plan, series.times)
        for k, shift in enumerate(shifts):
            at = np.arange(plan.differencing + plan.reach + shift, len(series), dtype=np.int64)
            at = at[np.isfinite(z[0, at])]
            rows = feature_rows(plan, z, np.zeros(len(at), dtype=np.int64), at, calendar[at], series.known[at],
                                series.static[None, :], shift)
            blocks[k].append((rows, z[0, at]))
    out = Forecaster(candidate.name, candidate.estimator, plan.strategy,
                     scales=fitted_scales if len(histories) == 1 else None, plan=plan, frames=frames)
    for k, shift in enumerate(shifts):
        rows = np.concatenate([r for r, _ in blocks[k]]) if blocks[k] else np.zeros((0, len(plan.feature_names)))
        target = np.concatenate([t for _, t in blocks[k]]) if blocks[k] else np.zeros(0)
        if len(target) < 2:
            start = plan.differencing + plan.reach + shift
            raise ForecastDataError(
                f"{len(target)} step(s) to train on after the lags, rolling windows and differencing take {start} "
                f"(history: {', '.join(str(len(s)) for s in histories[:3])}{'...' if len(histories) > 3 else ''} "
                "steps)"
            )
        given = pd.DataFrame(rows, columns=plan.feature_names) if frames else rows
        predictor, fmt, blob = fit_model(candidate.estimator, candidate.entry, params, "regression", given, target,
                                         impute=impute, serialize=serialize)
        out.models.append(predictor)
        out.formats.append(fmt)
        out.blobs.append(blob)
    return out


def statistical_values(y: np.ndarray) -> np.ndarray:
    """A history's label values as a statistical model takes them: every step's, none missing.

    Raises:
        ForecastDataError: a missing value (statsforecast's models take none), or fewer than 2 steps.
    """
    missing = int(np.count_nonzero(~np.isfinite(y)))
    if missing:
        raise ForecastDataError(f"statsforecast models need every step's label: {missing} of {len(y)} steps have "
                                "none (gaps: missing); use gaps: zero, or fill them in the data")
    if len(y) < 2:
        raise ForecastDataError(f"{len(y)} step(s) of history: a statistical model needs 2 or more")
    return y


def statistical_known(series: Series) -> np.ndarray | None:
    """A history's known features as a statistical model reads them (exogenous regressors), None without any.

    Raises:
        ForecastDataError: a step without its known values.
    """
    if series.known.shape[1] == 0:
        return None
    missing = int(np.count_nonzero(~np.isfinite(series.known).all(axis=1)))
    if missing:
        raise ForecastDataError(f"statsforecast models read the known features of every step: {missing} of "
                                f"{len(series)} steps lack them")
    return series.known


def _fit_baseline(candidate: Candidate, plan: ForecastPlan, series: Series) -> Forecaster:
    method = str(candidate.method)
    if method not in BASELINES:
        raise ValueError(f"baseline {method!r} does not forecast; use one of {', '.join(BASELINES)}")
    value = None
    known = series.y[np.isfinite(series.y)]
    if known.size == 0:
        raise ForecastDataError("no label value to forecast from")
    if method == "mean":
        value = float(known.mean())
    elif method == "median":
        value = float(np.median(known))
    need = candidate.period if method == "seasonal_naive" else candidate.window if method == "window_average" else 1
    if need and len(series) < need:
        raise ForecastDataError(f"baseline {candidate.name} needs {need} steps of history; the segment has "
                                f"{len(series)}")
    return Forecaster(candidate.name, "baseline", plan.strategy, method=method, period=candidate.period,
                      window=candidate.window, value=value, plan=plan)


def calendar_rows(plan: ForecastPlan, times: np.ndarray) -> np.ndarray:
    """Calendar features of times (any shape), as an array of that shape plus one axis."""
    if not plan.calendar:
        return np.zeros((*np.shape(times), 0))
    return calendar_values(times, plan.calendar)
