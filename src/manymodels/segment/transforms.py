"""Target transforms of a forecast: fitted per segment on its training rows, inverted on every forecast.

A chain is applied in order to the label (`("log1p", 1)`, `("diff", period)`, `("scale", 1)`);
models learn and forecast the last level, and forecasts are turned back into the label's units by
undoing the chain in reverse. Every function takes many series at once (rows of a 2-D array,
right-aligned: the last column is each series' latest step), so a chunk of segments is
transformed and inverted in a few array operations, not a loop per segment.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

Chain = Sequence[tuple[str, int]]
KINDS = ("diff", "log1p", "scale")


def forward(y: np.ndarray, chain: Chain, scales: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Every level of the chain for each series: `levels[0]` is the label, `levels[-1]` what models learn.

    Args:
        y: the label, series x steps (NaN: missing).
        chain: the transforms, in order.
        scales: per series and transform, (mean, std) of each `scale` (series x len(chain) x 2, NaN
            elsewhere), as fitted before; None fits them here, on the values given.

    Returns:
        The levels, and the scales used (fitted here, or those given).

    Raises:
        ValueError: `log1p` of a label at or below -1.
    """
    y = np.asarray(y, dtype=np.float64)
    n = y.shape[0]
    fitted = np.full((n, len(chain), 2), np.nan) if scales is None else np.asarray(scales, dtype=np.float64)
    levels = [y]
    current = y
    for k, (kind, period) in enumerate(chain):
        if kind == "log1p":
            if np.nanmin(current, initial=0.0) <= -1.0:
                raise ValueError("target_transform log1p needs labels above -1; the segment has "
                                 f"{np.nanmin(current):g}")
            current = np.log1p(current)
        elif kind == "diff":
            shifted = np.full_like(current, np.nan)
            if period < current.shape[1]:
                shifted[:, period:] = current[:, :-period]
            current = current - shifted
        elif kind == "scale":
            if scales is None:
                with np.errstate(invalid="ignore"), quiet_nan():
                    mean = np.nanmean(current, axis=1)
                    std = np.nanstd(current, axis=1)
                std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
                fitted[:, k, 0], fitted[:, k, 1] = np.nan_to_num(mean, nan=0.0), std
            current = (current - fitted[:, k, 0:1]) / fitted[:, k, 1:2]
        else:
            raise ValueError(f"unknown target transform {kind!r}; use one of {', '.join(KINDS)}")
        levels.append(current)
    return levels, fitted


def inverse(levels: list[np.ndarray], chain: Chain, scales: np.ndarray, future: np.ndarray) -> np.ndarray:
    """Forecasts of the last level turned back into the label's units.

    Args:
        levels: each level's history (series x steps, right-aligned), as `forward` gave them.
        chain: the transforms.
        scales: as `forward` returned them.
        future: forecasts of the last level, series x horizon (the steps right after the history).

    Returns:
        The forecasts in the label's units, series x horizon.
    """
    current = np.asarray(future, dtype=np.float64)
    horizon = current.shape[1]
    for k in range(len(chain) - 1, -1, -1):
        kind, period = chain[k]
        if kind == "scale":
            current = current * scales[:, k, 1:2] + scales[:, k, 0:1]
        elif kind == "log1p":
            current = np.expm1(current)
        else:  # diff: each step adds the level `period` steps before it (history, then earlier forecasts)
            before = levels[k]
            width = before.shape[1]
            extended = np.concatenate([before, np.full((before.shape[0], horizon), np.nan)], axis=1)
            for h in range(horizon):
                extended[:, width + h] = current[:, h] + extended[:, width + h - period]
            current = extended[:, width:]
    return current


@contextmanager
def quiet_nan() -> Iterator[None]:
    """Silences numpy's warnings about all-missing rows (their statistic is NaN, which the caller handles)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        yield
