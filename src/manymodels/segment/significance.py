"""Whether what monitoring sees is more than chance: per-segment tests, and the false discovery rate over a fleet.

A segment's metric on 40 new rows differs from its metric on 40 holdout rows by chance alone, often by tens of
percent; judged on the relative change only, a fleet of unchanged segments raises alarms by the dozen. So a
segment is degraded when its errors grew beyond what chance explains:

- Errors: each row's loss under the metric (rmse and r2: the squared error; mae; mape; logloss; accuracy: 0/1;
  auc, which is no mean of per-row losses: logloss) on the new rows against the holdout's, whose distribution the
  segment's profile keeps (deciles and the shares of rows between them, `profile.with_losses`). A one-sided
  Mann-Whitney test on the two samples binned alike (ties within a bin taken as ties, with the usual correction):
  the chance that the new losses rank this high above the holdout's if both came from one distribution. It needs
  no assumption about the errors' law (squared errors are far from normal, and a test that assumes they are
  flags a fleet of unchanged segments).
- Interval coverage: the count of actuals outside a segment's band at level L against a binomial law with
  probability 1 - L (one-sided: more misses than the level allows).
- A forecast's new rows are the steps of one forecast, whose errors hang together (a level missed at step 1 is
  missed at step 12): counted as independent, they would make every test far too sure. So they count as
  rows / D independent ones, D = 1 + (rows - 1) ICC the design effect, ICC the correlation of errors within a
  forecast, estimated from the validation windows' errors pooled over the fleet (`intervals.window_sums`).

Across the fleet the p-values are adjusted by Benjamini and Hochberg's procedure (scipy's), so among the
segments flagged, the expected share flagged by chance alone is at most the significance level; with no change
anywhere, the chance of any flag at all is at most that level.
"""

from __future__ import annotations

import numpy as np

from manymodels.segment.profile import MISSING, SHARES, TOP, numeric_bins


def row_losses(metric: str, actual: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Each row's loss under `metric` (auc, which is no mean of per-row losses: logloss); NaN where undefined."""
    y = np.asarray(actual, dtype=np.float64)
    guess = np.asarray(predicted, dtype=np.float64)
    if metric in ("rmse", "r2"):
        return (guess - y) ** 2
    if metric == "mae":
        return np.abs(guess - y)
    if metric == "mape":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(y != 0, np.abs((guess - y) / y), np.nan)
    if metric in ("logloss", "auc"):
        p = np.clip(guess, 1e-15, 1 - 1e-15)
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))
    if metric == "accuracy":
        return ((guess >= 0.5) != (y == 1)).astype(np.float64)
    raise ValueError(f"no per-row loss for metric {metric!r}")


def loss_rank_p(positions: np.ndarray, segments: int, losses: np.ndarray, holdout: np.ndarray,
                n_holdout: np.ndarray) -> np.ndarray:
    """Per segment, the chance that its new rows' losses rank at least this far above its holdout's without change
    (one-sided Mann-Whitney on losses binned by the holdout's deciles, ties corrected); NaN without a holdout-loss
    row, holdout rows or new rows.

    Args:
        positions: each new row's segment (0 <= p < segments).
        segments: how many segments.
        losses: each new row's loss (`row_losses`); NaN rows are left out.
        holdout: per segment, its profile's holdout-loss row (segments x WIDTH; NaN: none).
        n_holdout: per segment, the holdout rows that row was made from.
    """
    from scipy.stats import norm

    holdout = np.asarray(holdout, dtype=np.float64)
    finite = np.isfinite(losses)
    where, values = positions[finite], np.asarray(losses, dtype=np.float64)[finite]
    bins = numeric_bins(values, holdout[where, 1:TOP], holdout[where, TOP])
    new = np.bincount(where * SHARES + bins, minlength=segments * SHARES).reshape(segments, SHARES).astype(float)
    old = np.rint(holdout[:, TOP + 1 :] * np.asarray(n_holdout, dtype=np.float64)[:, None])
    new[:, MISSING] = old[:, MISSING] = 0.0  # a loss is never missing here; a NaN share means no row at all
    n1, n2 = new.sum(axis=1), np.nan_to_num(old).sum(axis=1)
    ties = new + old
    total = n1 + n2
    ranks = np.cumsum(ties, axis=1) - ties + (ties + 1) / 2  # each bin's mid-rank in the two samples together
    with np.errstate(divide="ignore", invalid="ignore"):
        u = (new * ranks).sum(axis=1) - n1 * (n1 + 1) / 2
        variance = n1 * n2 / 12 * ((total + 1) - (ties**3 - ties).sum(axis=1) / (total * (total - 1)))
        z = (u - n1 * n2 / 2 - 0.5) / np.sqrt(variance)
        p = norm.sf(z)
    usable = np.isfinite(holdout[:, TOP + 1 :]).all(axis=1) & (n1 > 0) & (n2 > 0)
    p = np.where(usable & (variance > 0), p, np.where(usable, 1.0, np.nan))  # all tied: no evidence of change
    return p


def coverage_p(misses: np.ndarray, rows: np.ndarray, level: float, design: np.ndarray | float = 1.0) -> np.ndarray:
    """Per segment, the chance of at least `misses` of `rows` actuals outside a band at `level` (percent) if the
    band held its level; NaN without rows. With a design effect D, as misses / D of rows / D independent rows
    (the binomial law's tail as a regularized incomplete beta function, which takes fractional counts)."""
    from scipy.special import betainc

    rows = np.asarray(rows, dtype=np.float64)
    misses = np.asarray(misses, dtype=np.float64)
    design = np.maximum(np.asarray(design, dtype=np.float64), 1.0)
    k, n = misses / design, rows / design
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(k > 0, betainc(np.maximum(k, 1e-12), np.maximum(n - k + 1, 1e-12), 1 - level / 100), 1.0)
    return np.where(rows > 0, p, np.nan)


def intra_correlation(between: np.ndarray, within: np.ndarray, windows: np.ndarray, steps: np.ndarray) -> float:
    """The correlation of errors within a forecast, pooled over segments (`intervals.window_sums` of each, NaN
    left out): one-way ANOVA's (MSB - MSW) / (MSB + (m - 1) MSW), clipped to [0, 1]; 0 without any."""
    between, within = np.asarray(between, dtype=np.float64), np.asarray(within, dtype=np.float64)
    windows, steps = np.asarray(windows, dtype=np.float64), np.asarray(steps, dtype=np.float64)
    use = np.isfinite(between) & np.isfinite(within) & (windows >= 2) & (steps >= 2)
    if not use.any():
        return 0.0
    msb = between[use].sum() / (windows[use] - 1).sum()
    msw = within[use].sum() / (windows[use] * (steps[use] - 1)).sum()
    size = float(np.average(steps[use], weights=windows[use]))
    denominator = msb + (size - 1) * msw
    return float(np.clip((msb - msw) / denominator, 0.0, 1.0)) if denominator > 0 else 0.0


def design_effect(rows: np.ndarray, correlation: float) -> np.ndarray:
    """How many rows count as one independent row, for rows of one forecast: 1 + (rows - 1) ICC."""
    return 1.0 + np.maximum(np.asarray(rows, dtype=np.float64) - 1.0, 0.0) * correlation


def deflated(p: np.ndarray, design: np.ndarray | float) -> np.ndarray:
    """A normal test's one-sided p-value with its variance multiplied by the design effect (z / sqrt(D))."""
    from scipy.stats import norm

    p = np.asarray(p, dtype=np.float64)
    return np.where(np.isfinite(p), norm.sf(norm.isf(p) / np.sqrt(np.maximum(design, 1.0))), np.nan)


def false_discovery(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values) over the finite ones; NaN stays NaN. A flag at q < alpha
    keeps the expected share of false flags among all flags at most alpha."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        q[finite] = false_discovery_control(p[finite], method="bh")
    return q
