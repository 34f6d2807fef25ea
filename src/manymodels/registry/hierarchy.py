"""A hierarchy's forecasts made to add up: the `forecast` rows of every level reconciled, and the holdout's accuracy
per level before and after reconciliation (what training records and the report shows).

Reconciliation needs every series of the hierarchy, on the same times: a segment without a forecast (failed, no
fallback) or ending at another time leaves the forecasts as they are, and the reason is said, never hidden.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from manymodels.data.hierarchy import LEVEL, TOTAL, level_names, summing
from manymodels.errors import DataError
from manymodels.estimators.reconcile import reconcile, residual_matrix
from manymodels.registry import manifest as mf
from manymodels.registry.forecasting import STEP, lower_column, upper_column
from manymodels.registry.pack import Pack
from manymodels.segment.forecast_windows import read_plot_record, window_metric

BASE = "base_prediction"  # the level's own forecast, before reconciliation


@dataclass
class Reconciled:
    """A forecast's rows with their `level` (and, reconciled, `base_prediction`), or why they stay as they are."""

    frame: pd.DataFrame
    method: str
    problem: str | None = None


def _codes(frame: pd.DataFrame, by: Sequence[str]) -> tuple[np.ndarray, pd.DataFrame]:
    grouped = frame.groupby(list(by), sort=False, dropna=False, observed=True)
    codes = grouped.ngroup().to_numpy()
    keys = frame[list(by)].iloc[grouped.head(1).index].reset_index(drop=True) if len(frame) else frame[list(by)]
    return codes, keys


def _missing(pack: Pack, keys: pd.DataFrame) -> str | None:
    """Which of the pack's series have no row in `keys` (the first named), or None."""
    by = pack.segment_by
    every = pack.manifest[by].drop_duplicates()
    seen = set(map(tuple, keys[by].astype(object).where(keys[by].notna(), None).itertuples(index=False, name=None)))
    rows = every.astype(object).where(every.notna(), None).itertuples(index=False, name=None)
    absent = [r for r in rows if tuple(r) not in seen]
    if not absent:
        return None
    shown = ", ".join(f"{c}={v!r}" for c, v in zip(by, absent[0], strict=True))
    return f"{len(absent):,} series have no forecast (first: {shown})"


def _reconciled(pack: Pack, keys: pd.DataFrame, method: str, base: np.ndarray,
                widths: dict[float, np.ndarray] | None = None) -> tuple[np.ndarray, dict[float, Any]]:
    """The series of `keys` (every one of the pack's hierarchy) reconciled from their forecasts `base` (series x
    steps); `min_trace_shrink` reads their window errors from the models' headers (each kept model's own: the
    errors of the forecasts it reconciles; measured, the selection's made 5 of the 6 levels of the bench's two
    panels worse).

    Raises:
        DataError: a series without the levels above it; ValueError, LinAlgError: the method failed.
    """
    assert pack.plan is not None  # noqa: S101 - callers ask only of a hierarchy's pack
    matrix, _, tags = summing(keys, pack.plan.hierarchy)
    errors = (residual_matrix(pack.window_errors(pack.locate(keys), own=True), base.shape[1])
              if method == "min_trace_shrink" else None)
    return reconcile(method, matrix, tags, base, errors, widths)


def _failure(method: str, exc: Exception) -> str:
    return str(exc) if isinstance(exc, DataError) else f"reconcile {method} failed ({exc})"


def reconcile_rows(pack: Pack, frame: pd.DataFrame, steps: int, levels: Sequence[float]) -> Reconciled:
    """A hierarchy's forecast rows reconciled by its method: `prediction` (and the `lo-`/`hi-` bounds) made to add
    up at every step, the level's own forecast kept as `base_prediction`, a `level` column added.

    Raises:
        BundleError: hierarchicalforecast is not installed.
    """
    plan = pack.plan
    assert plan is not None and plan.hierarchy  # noqa: S101 - callers ask only of a hierarchy's pack
    by = pack.segment_by
    out = frame.copy()
    out.insert(len(by), LEVEL, level_names(out, plan.hierarchy))
    method = str(plan.reconcile or "min_trace_shrink")
    if not len(out):
        return Reconciled(out, method)
    codes, keys = _codes(out, by)
    problem = _missing(pack, keys)
    step = out[STEP].to_numpy(dtype=np.int64) - 1
    times = pd.DataFrame({"code": codes, "step": step, "time": out[plan.time].astype(str)})
    if problem is None and times.groupby("step")["time"].nunique().max() > 1:
        problem = "the series' forecasts start at different times (their histories end apart)"
    if problem is None and (pd.Series(codes).value_counts() != steps).any():
        problem = "some series have fewer forecast steps than the others"
    if problem is not None:
        return Reconciled(out, method, f"{problem}: the forecasts are not reconciled")
    base = np.full((len(keys), steps), np.nan)
    base[codes, step] = out["prediction"].to_numpy(dtype=np.float64)
    widths: dict[float, np.ndarray] = {}
    for level in levels:
        width = np.full((len(keys), steps), np.nan)
        width[codes, step] = out[upper_column(level)].to_numpy(dtype=np.float64) - out["prediction"].to_numpy(
            dtype=np.float64)
        widths[level] = width
    try:
        mean, bounds = _reconciled(pack, keys, method, base, widths)
    except (DataError, ValueError, np.linalg.LinAlgError) as exc:
        return Reconciled(out, method, f"{_failure(method, exc)}: the forecasts are not reconciled")
    out.insert(out.columns.get_loc("prediction"), BASE, out["prediction"].to_numpy(dtype=np.float64))
    out["prediction"] = mean[codes, step]
    for level in levels:
        if level in bounds:
            lower, upper = bounds[level]
            out[lower_column(level)], out[upper_column(level)] = lower[codes, step], upper[codes, step]
        else:  # the base widths around the reconciled forecast
            width = widths[level][codes, step]
            out[lower_column(level)], out[upper_column(level)] = out["prediction"] - width, out["prediction"] + width
    return Reconciled(out, method)


@dataclass
class LevelAccuracy:
    """The holdout's accuracy per level of a hierarchy, before and after reconciliation (or why it is unknown)."""

    method: str
    metric: str
    table: pd.DataFrame  # level, series, base, reconciled: the median of the series' metric
    problem: str | None = None


def holdout_levels(pack: Pack) -> LevelAccuracy:
    """Each level's median holdout metric of its series' own forecasts and of their reconciled forecasts (the
    holdout forecasts reconciled as `forecast` reconciles its own), from the pack's holdout records.

    Raises:
        BundleError: hierarchicalforecast is not installed.
    """
    plan = pack.plan
    assert plan is not None and plan.hierarchy  # noqa: S101 - callers ask only of a hierarchy's pack
    method, metric = str(plan.reconcile or "min_trace_shrink"), pack.info.metric
    columns = ["level", "series", "base", "reconciled"]
    empty = pd.DataFrame(columns=columns)
    by = pack.segment_by
    manifest = pack.manifest.drop_duplicates(subset=by).reset_index(drop=True)
    plots = pack.plots()
    actual, predicted = [], []
    for index in manifest[mf.SEGMENT_INDEX].to_numpy():
        record = _record(plots.get(int(index)))
        if record is None:
            return LevelAccuracy(method, metric, empty, "some series have no holdout forecast (failed segments): "
                                                        "the holdout is not reconciled")
        actual.append(record[0])
        predicted.append(record[1])
    steps = {len(a) for a in actual}
    if len(steps) != 1:
        return LevelAccuracy(method, metric, empty, "the series' holdouts differ in length: not reconciled")
    keys = manifest[by]
    truth, base = np.array(actual), np.array(predicted)
    try:
        mean, _ = _reconciled(pack, keys, method, base)
    except (DataError, ValueError, np.linalg.LinAlgError) as exc:
        return LevelAccuracy(method, metric, empty, f"{_failure(method, exc)}: the holdout is not reconciled")
    names = level_names(keys, plan.hierarchy)
    rows = []
    for name in (TOTAL, *plan.hierarchy):
        at = np.flatnonzero(names == name)
        before = [window_metric(metric, truth[i], base[i]) for i in at]
        after = [window_metric(metric, truth[i], mean[i]) for i in at]
        rows.append({"level": name, "series": len(at), "base": _median(before), "reconciled": _median(after)})
    return LevelAccuracy(method, metric, pd.DataFrame(rows, columns=columns))


def _record(text: object) -> tuple[list[float], list[float]] | None:
    """A series' holdout actual values and forecast, from its plot record (None: none kept)."""
    record = read_plot_record(text)
    if record is None or "actual" not in record:
        return None
    return ([math.nan if v is None else float(v) for v in record["actual"]],
            [math.nan if v is None else float(v) for v in record["forecast"]])


def _median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.median(finite)) if finite else math.nan

