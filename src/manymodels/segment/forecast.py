"""Forecasters: a segment's fitted forecast model and the state it forecasts from; forecasts of many at once.

A forecaster is one candidate fitted on a segment's history up to an origin: a baseline
(`naive`, `seasonal_naive`, `drift`, `window_average`, `mean`, `median`, each defined at the
origin), or an estimator (LightGBM, sklearn, a project's own) on the forecast plan's features of
the transformed label, one model (`recursive`: its forecasts feed the next step's lags) or one
per step (`direct`). Its bytes hold the inner models in their own formats (LightGBM text, ...)
behind a JSON header with the transforms' fitted scales and the segment's state: the last values
the features and transforms read, the time of its last row, its static values. So a pack
forecasts with no training data.

`forecast_many` forecasts many segments from their origins in one pass per step: features,
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

from manymodels.data.timegrid import NUMBER, TimeGrid, calendar_values, parse_times, time_from_text, time_text
from manymodels.estimators import (
    FORMAT_LIGHTGBM,
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
from manymodels.segment.spec import Candidate, ForecastPlan
from manymodels.segment.transforms import forward, inverse, quiet_nan

FORMAT_FORECAST = "forecast"
ENSEMBLE = "ensemble"
STATISTICAL = "statsforecast"
WHOLE = 1 << 40  # the tail width of a forecaster that forecasts from the whole history (a statistical model)
_MAGIC = b"MMFC1\n"
BASELINES = ("naive", "seasonal_naive", "drift", "window_average", "mean", "median")


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
        residuals: its validation windows' errors (windows x steps), from which its prediction intervals come
            (`segment.intervals`); None where none were kept (no selection, a fallback).
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


def _floats(values: Sequence[float | None]) -> np.ndarray:
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


def header_residuals(header: dict[str, Any]) -> np.ndarray | None:
    """The validation-window errors (windows x steps) a forecaster's header keeps, or None."""
    rows = header.get("residuals")
    return np.array([_floats(row) for row in rows]) if rows else None


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
        scales=None if scales is None else np.array([_floats(row) for row in scales]).reshape(-1, 2),
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
        calendar = _calendar(plan, series.times)
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


def _calendar(plan: ForecastPlan, times: np.ndarray) -> np.ndarray:
    """Calendar features of times (any shape), as an array of that shape plus one axis."""
    if not plan.calendar:
        return np.zeros((*np.shape(times), 0))
    return calendar_values(times, plan.calendar)


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
        values = _floats(f.state["tail"])
        if len(values):
            tail[i, width - len(values) :] = values
    last = np.array([time_from_text(f.state["last"], grid.kind) for f in forecasters],
                    dtype=np.float64 if grid.kind == NUMBER else "datetime64[ns]")
    first = _floats([f.state.get("first") for f in forecasters])
    span = np.array([int(f.state.get("span", 0)) for f in forecasters], dtype=np.int64)
    static = np.full((len(forecasters), len(plan.static)), np.nan)
    for i, f in enumerate(forecasters):
        values = _floats(f.state.get("static", []))
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
    values = np.array([_floats(r) for r in rows]).reshape(len(rows), len(own))
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
            part.static = np.array([_floats(f.state.get("static", [])) for f in chosen]).reshape(len(rows),
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
    calendar = _calendar(plan, grid.future(origins.last, steps))
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
