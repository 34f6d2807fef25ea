"""Hierarchical reconciliation by hierarchicalforecast: forecasts of every level made to add up.

hierarchicalforecast is an optional dependency (`pip install 'manymodels[hierarchy]'`), imported only when a
hierarchy's forecasts are reconciled. Its methods are used as they are, on arrays: the summing matrix, the base
forecasts (series x steps), for `min_trace_shrink` the series' validation-window errors (series x observations,
NaN where a series has none), and for intervals each series' standard deviation per step.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from manymodels.errors import BundleError

EXTRA = "pip install 'manymodels[hierarchy]'"
METHODS = ("bottom_up", "top_down", "min_trace_ols", "min_trace_shrink")


class MissingHierarchyExtra(BundleError):
    """hierarchicalforecast is not installed."""


def _methods() -> Any:
    try:
        return importlib.import_module("hierarchicalforecast.methods")
    except ImportError as exc:
        raise MissingHierarchyExtra(
            f"a hierarchy's forecasts are reconciled by hierarchicalforecast, which is not installed: {EXTRA}"
        ) from exc


def require() -> None:
    """Nothing, when hierarchicalforecast is installed.

    Raises:
        BundleError: it is not (the message names the extra).
    """
    _methods()


def _reconciler(method: str) -> Any:
    methods = _methods()
    if method == "bottom_up":
        return methods.BottomUp()
    if method == "top_down":
        return methods.TopDown(method="forecast_proportions")
    if method == "min_trace_ols":
        return methods.MinTrace(method="ols")
    if method == "min_trace_shrink":
        return methods.MinTrace(method="mint_shrink")
    raise BundleError(f"unknown reconcile method {method!r}: one of {', '.join(METHODS)}")


def reconcile(method: str, summing: np.ndarray, tags: dict[str, np.ndarray], forecasts: np.ndarray,
              errors: np.ndarray | None = None, widths: dict[float, np.ndarray] | None = None
              ) -> tuple[np.ndarray, dict[float, tuple[np.ndarray, np.ndarray]]]:
    """Reconciled forecasts (series x steps) and, for each level of `widths` (half-widths, series x steps, of the
    base intervals), the reconciled bounds (lower, upper), by the normal law the base widths imply; a level is
    left out where the method gives no such bounds (top_down) or a series has no interval.

    Raises:
        BundleError: hierarchicalforecast is not installed; `min_trace_shrink` without errors for every series.
        ValueError: the method failed on these forecasts (its own message).
    """
    from scipy.stats import norm  # here, not at import: validate and --help import this module

    _reconciler(method)  # an unknown method, or no hierarchicalforecast: before any work
    # hierarchicalforecast takes the series top level first, the bottom ones last (it finds them there)
    order = np.concatenate([np.asarray(v, dtype=np.int64) for v in tags.values()])
    back = np.argsort(order)
    placed, start = {}, 0
    for name, positions in tags.items():
        placed[name] = np.arange(start, start + len(positions))
        start += len(positions)
    given: dict[str, Any] = {"S": summing[order], "y_hat": forecasts[order], "tags": placed}
    if method == "min_trace_shrink" and (errors is None or not np.isfinite(errors).any(axis=1).all()):
        raise BundleError("reconcile min_trace_shrink weighs each series by its validation windows' errors, and "
                          "some series have none (trained without validation windows?): use min_trace_ols")
    if errors is not None and np.isfinite(errors).any(axis=1).all():  # errors as observations less zero fits
        given["y_insample"] = errors[order]
        given["y_hat_insample"] = np.where(np.isfinite(errors), 0.0, np.nan)[order]
    mean: np.ndarray | None = None
    bounds: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library warns of what it handles (negative or near-zero values)
        for level, width in (widths or {}).items():
            z = float(norm.ppf(0.5 + level / 200.0))
            sigma = np.where(np.isfinite(width), width / z, np.nan)[order]
            if not np.isfinite(sigma).all() or method == "top_down":
                continue  # a series without an interval, or top-down (the library samples its intervals from
                # whole histories): the caller centres the base widths on the reconciled forecast
            out = _reconciler(method).fit_predict(**given, sigmah=sigma, level=[_level_arg(level)],
                                                  intervals_method="normality")
            quantiles = np.asarray(out["quantiles"], dtype=np.float64)[back]  # series x steps x (lower, upper)
            bounds[level] = (quantiles[:, :, 0], quantiles[:, :, -1])
            mean = np.asarray(out["mean"], dtype=np.float64)[back]  # the same with any sigmah: not fitted again
        if mean is None:
            mean = np.asarray(_reconciler(method).fit_predict(**given)["mean"], dtype=np.float64)[back]
    return mean, bounds


def _level_arg(level: float) -> float | int:
    return int(level) if float(level).is_integer() else float(level)


def residual_matrix(residuals: Sequence[np.ndarray | None], steps: int) -> np.ndarray:
    """Each series' validation-window errors in one row, windows aligned from the latest (NaN where a series has
    fewer windows, or none): the observations min_trace_shrink estimates the errors' covariance from."""
    windows = max((r.shape[0] for r in residuals if r is not None and r.ndim == 2), default=0)
    out = np.full((len(residuals), windows * steps), np.nan)
    for i, r in enumerate(residuals):
        if r is None or r.ndim != 2 or r.size == 0:
            continue
        width = min(steps, r.shape[1])
        block = np.full((windows, steps), np.nan)
        block[windows - r.shape[0]:, :width] = r[:, :width]
        out[i] = block.ravel()
    return out
