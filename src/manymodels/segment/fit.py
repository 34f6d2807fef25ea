"""`fit_segment`: one segment's rows in, one result out (model bytes, metrics, status, error)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from manymodels import faults
from manymodels.estimators import FORMAT_BASELINE, add_import_roots, fit_model, is_constant, time_values
from manymodels.segment.forecast_fit import fit_forecast
from manymodels.segment.forecast_windows import ThinSegment
from manymodels.segment.forecaster import FORMAT_FORECAST
from manymodels.segment.metrics import compute_metrics
from manymodels.segment.profile import make_profile, with_losses
from manymodels.segment.select import Selection, describe, select
from manymodels.segment.series import ForecastDataError
from manymodels.segment.shards import checksum, join_location, shard_name, write_shard
from manymodels.segment.significance import row_losses
from manymodels.segment.spec import SegmentSpec

OK = "ok"
FAILED = "failed"


class SegmentDataError(ValueError):
    """A segment's rows cannot train a model (too few, bad labels, nothing to hold out)."""


@dataclass
class SegmentResult:
    """What fitting one segment produced. `model` is None when the segment failed."""

    index: int
    status: str
    rows: int
    fingerprint: str
    n_train: int = 0
    n_test: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    model_format: str | None = None
    model: bytes | None = None
    seconds: float = 0.0
    shard: str | None = None
    checksum: str | None = None  # of the model's bytes (segment.shards.checksum): checked before it is loaded
    shard_checksum: str | None = None  # of its shard file
    constant: bool = False  # the model predicts one value whatever the features (LightGBM found no split)
    # Model selection (specs with validation): the winner, its parameters (JSON), its CV metric, every candidate's.
    candidate: str | None = None
    params: str | None = None
    cv_folds: int = 0
    cv_mean: float = float("nan")
    cv_std: float = float("nan")
    cv_baseline: float = float("nan")
    cv_scores: str | None = None
    # Where its training rows' features and predictions fell (segment.profile), for drift monitoring.
    profile: bytes | None = None
    # Forecasts: the primary metric of each holdout step (JSON list), and the naive forecast's on the holdout.
    step_metric: str | None = None
    holdout_naive: float = float("nan")
    # A thin forecast segment's state (JSON: its last values and time), for a fallback to forecast it from.
    forecast_state: str | None = None
    # A pooled candidate's fit over the fleet: each series' window metrics and holdout forecast (JSON).
    series_scores: str | None = None
    # Forecasts: its prediction intervals judged on the holdout (JSON: per level, coverage and Winkler score).
    interval_scores: str | None = None
    # Forecasts: its recent history, holdout, holdout forecast and interval widths (JSON), which the report draws.
    holdout_plot: str | None = None


def row_hashes(frame: pd.DataFrame, spec: SegmentSpec) -> np.ndarray:
    """One 64-bit hash per row, of the columns training reads, whatever their dtypes.

    Values are normalised first (numbers as float64, anything else as text), so the same rows
    read by pyarrow or by Spark (int32 or int64, Arrow or object strings) hash the same.
    """
    norm = {}
    for col in spec.columns:
        values = frame[col]
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            norm[col] = values.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            norm[col] = values.astype(str).to_numpy(dtype=object)
    return pd.util.hash_pandas_object(pd.DataFrame(norm), index=False).to_numpy(dtype=np.uint64)


def data_fingerprint(frame: pd.DataFrame, spec: SegmentSpec, hashes: np.ndarray | None = None) -> str:
    """A hash of a segment's rows that does not depend on their order, combined with the spec's."""
    if len(frame) == 0:
        return f"{spec.fingerprint}-0-0"
    hashes = row_hashes(frame, spec) if hashes is None else hashes
    total = int(hashes.sum(dtype=np.uint64))  # wraps mod 2**64: a sum is order-independent
    return f"{spec.fingerprint}-{len(frame)}-{total:016x}"


def segment_fingerprints(
    frame: pd.DataFrame, starts: np.ndarray, spec: SegmentSpec, hashes: np.ndarray | None = None
) -> list[str]:
    """`data_fingerprint` of every segment of a frame grouped by segment (`starts`: where each begins).

    The rows are hashed once (or `hashes`, `row_hashes(frame, spec)` computed already), then
    summed per segment (wrapping, as `data_fingerprint` does).
    """
    if len(starts) <= 1:
        return []
    sizes = np.diff(starts)
    if hashes is None:
        hashes = row_hashes(frame, spec) if len(frame) else np.empty(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        totals = np.add.reduceat(hashes, starts[:-1]) if len(hashes) else np.zeros(len(sizes), dtype=np.uint64)
    return [
        f"{spec.fingerprint}-{n}-{int(t):016x}" if n else f"{spec.fingerprint}-0-0"
        for n, t in zip(sizes.tolist(), totals.tolist(), strict=True)
    ]


def fit_segment(frame: pd.DataFrame, spec: SegmentSpec, index: int = 0, hashes: np.ndarray | None = None
                ) -> SegmentResult:
    """Split, fit and evaluate one segment; any failure is returned as a failed result, never raised.

    Args:
        frame: the segment's rows (at least the spec's columns), in any order: they are put in a
            canonical order (by row hash) first, so every engine, whatever order its data
            arrives in, splits and fits the same rows the same way.
        spec: the model family's recipe.
        index: the segment's number in its run.
        hashes: `row_hashes(frame, spec)`, when already computed for many segments at once.
    """
    start = time.perf_counter()
    rows = len(frame)
    try:
        hashes = row_hashes(frame, spec) if hashes is None else hashes
        fingerprint = data_fingerprint(frame, spec, hashes)
        frame = frame.iloc[np.argsort(hashes, kind="stable")]
    except Exception as exc:  # noqa: BLE001 - a segment's trouble is a row, not a dead run
        fingerprint = f"{spec.fingerprint}-{rows}-unhashable"
        return SegmentResult(index, FAILED, rows, fingerprint, error=_describe(exc))
    result = SegmentResult(index, FAILED, rows, fingerprint)
    if spec.forecast is not None:
        _fit_forecast(result, frame, spec)
        result.seconds = time.perf_counter() - start
        return result
    try:
        X, y = _features_and_label(frame, spec)  # noqa: N806
        train, test = _split(frame, spec)
        if spec.selecting:
            # time windows test as far ahead as the holdout does, unless the validation says how far
            ahead = len(np.unique(time_values(frame.iloc[test][spec.split_by]))) if spec.split_by else 0
            chosen = select(frame.iloc[train], X.iloc[train], y[train], spec, ahead)
            predictor, fmt, blob = chosen.predictor, chosen.model_format, chosen.model
            _record(result, chosen)
        else:
            predictor, fmt, blob = fit_model(
                spec.estimator, spec.entry, spec.params, spec.task, X.iloc[train], y[train], impute=spec.impute
            )
        # A baseline reads its time column; every other model its features.
        held_out = frame.iloc[test] if fmt == FORMAT_BASELINE else X.iloc[test]
        predicted = predictor.predict(held_out)
        result.metrics = compute_metrics(spec.task, y[test], predicted)
        result.profile = with_losses(
            _profile(predictor, frame.iloc[train] if fmt == FORMAT_BASELINE else X.iloc[train], X.iloc[train]),
            row_losses(spec.metric, y[test], predicted))
        result.n_train, result.n_test = len(train), len(test)
        result.model_format, result.model, result.status = fmt, blob, OK
        result.checksum = checksum(blob)
        result.constant = is_constant(fmt, blob)
    except Exception as exc:  # noqa: BLE001 - a segment's trouble is a row, not a dead run
        result.error = _describe(exc)
    result.seconds = time.perf_counter() - start
    return result


def _fit_forecast(result: SegmentResult, frame: pd.DataFrame, spec: SegmentSpec) -> None:
    """A forecast segment's result: its winner's bytes (with the state it forecasts from) and holdout metrics."""
    try:
        forecaster, chosen, kept = fit_forecast(frame, spec)
        if chosen is not None:
            _record(result, chosen)
        blob = forecaster.to_bytes()
        result.metrics, result.step_metric = kept["metrics"], kept["step_metric"]
        result.holdout_naive, result.profile = kept["holdout_naive"], kept["profile"]
        result.n_train, result.n_test = kept["n_train"], kept["n_test"]
        result.series_scores = kept.get("scores")
        result.interval_scores = kept.get("intervals")
        result.holdout_plot = kept.get("plot")
        result.model_format, result.model, result.status = FORMAT_FORECAST, blob, OK
        result.checksum = checksum(blob)
        result.constant = forecaster.constant
    except ThinSegment as exc:
        result.error, result.forecast_state = str(exc), json.dumps(exc.state, sort_keys=True)
    except Exception as exc:  # noqa: BLE001 - a segment's trouble is a row, not a dead run
        result.error = _describe(exc)


def _profile(predictor: Any, inputs: pd.DataFrame, features: pd.DataFrame) -> bytes | None:
    """The segment's reference profile; a model that cannot predict its own training rows gets none (monitoring
    then judges it on its metric alone): a profile never costs a segment its model."""
    try:
        fitted = getattr(predictor, "fitted_values", lambda: None)()  # LightGBM kept them while boosting
        if fitted is None or len(fitted) != len(inputs):
            fitted = predictor.predict(inputs)
        return make_profile(features, fitted)
    except Exception:  # noqa: BLE001 - see above
        return None


def _record(result: SegmentResult, chosen: Selection) -> None:
    winner = chosen.winner
    result.candidate = winner.name
    result.params = json.dumps(winner.params, sort_keys=True, default=str)
    result.cv_folds = chosen.n_folds
    result.cv_mean, result.cv_std, result.cv_baseline = winner.mean, winner.std, chosen.best_baseline
    result.cv_scores = chosen.scores_json()


def evaluation_rows(frame: pd.DataFrame, spec: SegmentSpec, hashes: np.ndarray | None = None) -> np.ndarray:
    """Positions in `frame` (one segment's rows) of the rows `fit_segment` holds out for its metrics.

    Args:
        frame: one segment's rows.
        spec: the model family's recipe.
        hashes: `row_hashes(frame, spec)`, when already computed for many segments at once.

    Raises:
        SegmentDataError: the rows cannot be split (a time split with nothing after the cutoff).
    """
    order = np.argsort(row_hashes(frame, spec) if hashes is None else hashes, kind="stable")
    _, test = _split(frame.iloc[order], spec)
    return np.asarray(order[test], dtype=np.int64)


def fit_chunk(
    frame: pd.DataFrame,
    bounds: list[tuple[int, int, int]],
    spec: SegmentSpec,
    chunk_id: int,
    shard_dir: str | None,
    progress: Callable[[int], None] | None = None,
) -> list[SegmentResult]:
    """Fit the segments of one chunk and write their models to one shard.

    Args:
        frame: the chunk's rows, grouped by segment.
        bounds: (segment index, first row, end row) of each segment within `frame`.
        spec: the model family's recipe.
        chunk_id: names the shard file.
        shard_dir: the folder (a local path or an fsspec URL) to write the shard in; None keeps
            model bytes in the results instead.
        progress: called with the number of this chunk's segments done so far, after each one.

    Returns:
        One result per segment; with a shard written, their `model` bytes are dropped.
    """
    from threadpoolctl import threadpool_limits

    add_import_roots(spec.import_roots)
    results = []
    try:  # the chunk's rows hashed at once (a pandas call per segment costs more than the hashing)
        hashes: np.ndarray | None = row_hashes(frame, spec) if len(frame) else None
    except Exception:  # noqa: BLE001 - then each segment hashes its own, and one that cannot is its failed row
        hashes = None
    with threadpool_limits(limits=1):
        for index, lo, hi in bounds:
            results.append(fit_segment(frame.iloc[lo:hi], spec, index, None if hashes is None else hashes[lo:hi]))
            if progress is not None:
                progress(len(results))
            faults.point("fit.segment")
    if shard_dir is None:
        return results
    ok = [r for r in results if r.model is not None]
    if ok:
        name = shard_name(chunk_id)
        written = write_shard(
            join_location(shard_dir, name),
            [r.index for r in ok],
            [str(r.model_format) for r in ok],
            [r.model for r in ok if r.model is not None],
        )
        for r in ok:
            r.shard, r.model, r.shard_checksum = name, None, written
    return results


def _features_and_label(frame: pd.DataFrame, spec: SegmentSpec) -> tuple[pd.DataFrame, np.ndarray]:
    rows = len(frame)
    if rows < spec.min_rows:
        raise SegmentDataError(f"segment has {rows} row(s); min_rows is {spec.min_rows}")
    y = pd.to_numeric(frame[spec.label], errors="coerce").to_numpy(dtype=float)
    bad = int((~np.isfinite(y)).sum())
    if bad:
        raise SegmentDataError(f"label {spec.label!r} has {bad} missing or infinite value(s) of {rows}")
    if np.all(y == y[0]):
        raise SegmentDataError(f"label {spec.label!r} is constant ({y[0]:g} in all {rows} rows): nothing to learn")
    if spec.task == "binary" and not np.isin(y, (0.0, 1.0)).all():
        raise SegmentDataError(f"label {spec.label!r} must be 0 or 1 for task binary")
    X = frame[list(spec.features)]  # noqa: N806
    # LightGBM takes missing values; most others do not (with candidates: checked per candidate)
    if not spec.selecting and spec.estimator != "lightgbm" and spec.impute is None:
        missing = X.isna().sum()
        missing = missing[missing > 0]
        if len(missing):
            named = ", ".join(f"{col!r} ({int(n)} of {rows})" for col, n in missing.items())
            raise SegmentDataError(
                f"missing values in feature(s) {named}, which {spec.entry} may not take: set impute (median or "
                "zero), fill them in a feature step (a python task), or use estimator type lightgbm"
            )
    return X, y


def _split(frame: pd.DataFrame, spec: SegmentSpec) -> tuple[np.ndarray, np.ndarray]:
    n = len(frame)
    if spec.split_by is None:
        from sklearn.model_selection import train_test_split

        train, test = train_test_split(np.arange(n), test_size=spec.test_size, random_state=spec.seed)
        return np.asarray(train), np.asarray(test)
    when = frame[spec.split_by]
    cutoff: Any = spec.cutoff
    if pd.api.types.is_datetime64_any_dtype(when) or not pd.api.types.is_numeric_dtype(when):
        when = pd.to_datetime(when)
        cutoff = pd.Timestamp(str(spec.cutoff))
        if when.dt.tz is not None and cutoff.tzinfo is None:
            cutoff = cutoff.tz_localize(when.dt.tz)
    else:
        cutoff = float(str(spec.cutoff))
    before = (when < cutoff).to_numpy()
    train, test = np.flatnonzero(before), np.flatnonzero(~before)
    if len(train) < 2:
        raise SegmentDataError(f"{len(train)} row(s) before cutoff {spec.cutoff}: too few to train")
    if len(test) == 0:
        raise SegmentDataError(f"no rows at or after cutoff {spec.cutoff}: nothing to evaluate on")
    return train, test


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, SegmentDataError | ForecastDataError) else describe(exc)
