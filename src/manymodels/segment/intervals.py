"""Prediction intervals of a forecast, conformal per segment, from the errors of its rolling-origin windows.

Each validation window forecast the whole horizon from its origin, exactly as the kept model forecasts, so its
errors are samples of the errors a forecast will make: each window's by the candidate the other windows chose
(`forecast_fit.chosen_elsewhere`; the winner's own are the smallest by construction). A segment has few windows
(3 by default), too few for a quantile per step; so the errors of every window and step are pooled, each divided
by the square root of its step (an error that grows as a random walk's: the spread at step h is about sqrt(h)
times step 1's), and the interval at step h is the forecast plus or minus that pool's conformal quantile times
sqrt(h). A split-conformal quantile at level L over n scores is the ceil((n + 1) L)-th smallest: it needs
n >= L / (1 - L) scores (4 for 80%, 19 for 95%); with fewer, the segment has no interval at that level (NaN),
rather than one that claims what it cannot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

HOLDOUT_LEVELS = (80, 95)  # the levels training measures on each segment's holdout


def checked_levels(levels: Sequence[object], name: str = "a level") -> tuple[float, ...]:
    """Interval levels as percents, each once, in the order given.

    Raises:
        ValueError: a level that is not a number between 0 and 100 (said as `name`'s).
    """
    wrong = [v for v in levels if isinstance(v, bool) or not (isinstance(v, int | float) and 0 < v < 100)]
    if wrong:
        raise ValueError(f"{name} is a percent between 0 and 100, e.g. 80 or 95; got {wrong[0]!r}")
    return tuple(dict.fromkeys(float(v) for v in levels))  # type: ignore[arg-type]


def window_residuals(actual: Sequence[np.ndarray], predicted: Sequence[np.ndarray]) -> np.ndarray:
    """The windows' errors (actual minus forecast): windows x steps, NaN where a step had no actual value."""
    rows = [np.asarray(a, dtype=np.float64) - np.asarray(p, dtype=np.float64)
            for a, p in zip(actual, predicted, strict=True)]
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def scores_needed(level: float) -> int:
    """How many window errors a conformal interval at `level` (percent) needs."""
    fraction = level / 100
    return max(1, math.ceil(fraction / (1 - fraction) - 1e-9))


def half_widths(residuals: np.ndarray | None, levels: Sequence[float], steps: int) -> np.ndarray:
    """Each level's half-width at each step (levels x steps): NaN where too few window errors support the level.

    Args:
        residuals: windows x steps errors (None: none kept).
        levels: percents, each in (0, 100).
        steps: how many steps ahead.
    """
    out = np.full((len(levels), steps), np.nan)
    if residuals is None or residuals.size == 0:
        return out
    scale = np.sqrt(np.arange(1, residuals.shape[1] + 1, dtype=np.float64))
    scores = np.abs(residuals) / scale[None, :]
    scores = np.sort(scores[np.isfinite(scores)])
    n = scores.size
    ahead = np.sqrt(np.arange(1, steps + 1, dtype=np.float64))
    for i, level in enumerate(levels):
        rank = math.ceil((n + 1) * level / 100)
        if n and rank <= n:
            out[i] = scores[rank - 1] * ahead
    return out


def interval_scores(actual: np.ndarray, predicted: np.ndarray, widths: np.ndarray,
                    levels: Sequence[float]) -> dict[str, dict[str, float | None]]:
    """Per level, on a holdout: the share of its actual values inside the interval (`coverage`) and the mean
    Winkler score (the interval's width, plus 2 / (1 - L) times how far an actual value fell outside it)."""
    out: dict[str, dict[str, float | None]] = {}
    known = np.isfinite(actual) & np.isfinite(predicted)
    for i, level in enumerate(levels):
        use = known & np.isfinite(widths[i])
        if not use.any():
            out[f"{level:g}"] = {"coverage": None, "winkler": None}
            continue
        lo, hi, y = predicted[use] - widths[i][use], predicted[use] + widths[i][use], actual[use]
        penalty = 2 / (1 - level / 100) * (np.maximum(lo - y, 0) + np.maximum(y - hi, 0))
        out[f"{level:g}"] = {"coverage": float(np.mean((y >= lo) & (y <= hi))),
                             "winkler": float(np.mean(hi - lo + penalty))}
    return out


def window_sums(residuals: np.ndarray | None) -> tuple[float, float, float, float, int, int]:
    """How much a forecast's errors hang together within one forecast's steps: the one-way analysis of variance of
    its windows' scores (error / sqrt(step), standardized), of their sizes (absolute) and of their signs kept, as
    (between-window and within-window sums of squares of the absolute scores, the same of the signed ones, windows,
    steps), over the windows with every step known; NaN sums with fewer than two windows.

    Errors of one forecast are not independent (a level missed in step 1 is missed in step 12 too), so monitoring
    counts a segment's new rows as fewer independent ones (`significance.design_effect`), by the intra-window
    correlation these sums give, pooled over the fleet: of the errors' sizes for the test of the errors, of the
    signed errors for the test of interval coverage (a forecast off in one direction misses its band step after
    step).
    """
    nan = float("nan")
    if residuals is None or residuals.ndim != 2 or residuals.shape[1] < 2:
        return nan, nan, nan, nan, 0, 0
    complete = residuals[np.isfinite(residuals).all(axis=1)]
    windows, steps = complete.shape
    if windows < 2:
        return nan, nan, nan, nan, windows, steps
    signed = complete / np.sqrt(np.arange(1, steps + 1, dtype=np.float64))[None, :]
    return (*_anova(np.abs(signed)), *_anova(signed), windows, steps)


def _anova(scores: np.ndarray) -> tuple[float, float]:
    """Between-row and within-row sums of squares of scores (rows x columns), standardized first; NaN if constant."""
    spread = scores.std()
    if not spread > 0:
        return float("nan"), float("nan")
    scores = (scores - scores.mean()) / spread
    means = scores.mean(axis=1)
    steps = scores.shape[1]
    return float(steps * np.sum(means**2)), float(np.sum((scores - means[:, None]) ** 2))
