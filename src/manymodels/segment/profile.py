"""Reference profiles of a segment's data, made when it is fitted, and drift against them, for every segment at once.

A profile describes, for each feature and for the model's predictions on its training rows,
where the values fell: a numeric column by its deciles (9 edges) and its largest value, and the
share of rows in each of the 10 bins the edges make, a text column by the share of rows in each
of 10 hash buckets of its values; then a bin for values above the largest seen in training (so a
constant or 0/1 column that moves up shows), and one for missing values. One column is 23
float32 numbers (kind, 9 edges, the largest value, 12 shares): a segment with 8 features and its
predictions keeps 828 bytes. A profile may end with one more row, of the same kind: where the model's errors on
the holdout fell (each row's loss under the metric, `with_losses`), which monitoring compares the errors on new
rows with (`significance.loss_rank_p`).

Drift (`drift`) takes the rows of many segments at once and computes, per segment and column,
the population stability index (PSI), a Kolmogorov-Smirnov-type distance (the largest gap
between the two cumulative shares over the bins) and how likely such a PSI is without drift,
with grouped array operations: no Python loop over segments.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

BINS = 10  # value bins per column (then one for values above training's largest, one for missing values)
EDGES = BINS - 1
ABOVE, MISSING = BINS, BINS + 1  # the last two bins
SHARES = BINS + 2
TOP = 1 + EDGES  # the largest value's slot in a profile row
WIDTH = 1 + EDGES + 1 + SHARES  # kind, edges, largest value, shares
NUMERIC, TEXT = 0.0, 1.0
_QUANTILES = np.linspace(0.0, 1.0, BINS + 1)[1:-1]
_HALF = 0.5  # rows added to every bin before shares are compared (an empty bin is a finite difference)


def is_text(values: pd.Series) -> bool:
    """Whether a column is profiled by hash buckets (text, categories) rather than by deciles."""
    return not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values))


def text_buckets(values: pd.Series) -> np.ndarray:
    """Each value's bucket, the same in every process and run (pandas' keyed hash of its text); missing: MISSING."""
    missing = values.isna().to_numpy()
    text = values.astype("string").fillna("").to_numpy(dtype=object)
    buckets = (pd.util.hash_array(text) % np.uint64(BINS)).astype(np.int64)
    buckets[missing] = MISSING
    return buckets


def numeric_bins(values: np.ndarray, edges: np.ndarray, top: np.ndarray | float) -> np.ndarray:
    """Each value's bin given its edges (rows x EDGES: the count of edges at or below it) and training's largest
    value (above it: ABOVE); missing: MISSING."""
    bins = (values[:, None] >= edges).sum(axis=1)
    with np.errstate(invalid="ignore"):
        bins[values > top] = ABOVE
    bins[np.isnan(values)] = MISSING
    return bins


def column_profile(values: pd.Series) -> np.ndarray:
    """One column's profile row: kind, edges (NaN for text), shares of the rows per bin."""
    row = np.full(WIDTH, np.nan, dtype=np.float64)
    if is_text(values):
        row[0] = TEXT
        bins = text_buckets(values)
    else:
        row[0] = NUMERIC
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
        present = numbers[~np.isnan(numbers)]
        if present.size:
            row[1:TOP] = np.quantile(present, _QUANTILES)
            row[TOP] = present.max()
        bins = numeric_bins(numbers, np.broadcast_to(row[1:TOP], (len(numbers), EDGES)), row[TOP])
    counts = np.bincount(bins, minlength=SHARES).astype(np.float64)
    row[TOP + 1 :] = counts / max(1, len(values))
    return row


def make_profile(features: pd.DataFrame, predictions: np.ndarray) -> bytes:
    """A segment's profile: one row per feature (in order), then one for the predictions; float32 bytes."""
    rows = [column_profile(features[c]) for c in features.columns]
    rows.append(column_profile(pd.Series(np.asarray(predictions, dtype=np.float64))))
    return np.asarray(rows, dtype=np.float32).tobytes()


def with_losses(profile: bytes | None, losses: np.ndarray) -> bytes | None:
    """A profile with its holdout's losses appended as one more row (None stays None: no profile, nothing to add)."""
    if profile is None:
        return None
    finite = np.asarray(losses, dtype=np.float64)
    row = column_profile(pd.Series(finite[np.isfinite(finite)]))
    return profile + row.astype(np.float32).tobytes()


def read_profiles(blobs: Sequence[bytes | None], columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Profiles as one array (segments x columns x WIDTH) and which segments have one (a profile of the
    wrong size, say from other features, counts as none); a holdout-loss row after the columns is left out."""
    out = np.full((len(blobs), columns, WIDTH), np.nan, dtype=np.float32)
    size = columns * WIDTH * 4
    have = np.fromiter((isinstance(b, bytes) and len(b) in (size, size + WIDTH * 4) for b in blobs), dtype=bool,
                       count=len(blobs))
    if have.any():
        joined = b"".join(b[:size] for b, ok in zip(blobs, have, strict=True) if ok)  # type: ignore[index]
        out[have] = np.frombuffer(joined, dtype=np.float32).reshape(-1, columns, WIDTH)
    return out, have


def read_losses(blobs: Sequence[bytes | None], columns: int) -> np.ndarray:
    """Each profile's holdout-loss row (segments x WIDTH); NaN for a profile without one (trained before they
    existed, or of another size)."""
    out = np.full((len(blobs), WIDTH), np.nan, dtype=np.float32)
    size = columns * WIDTH * 4
    have = np.fromiter((isinstance(b, bytes) and len(b) == size + WIDTH * 4 for b in blobs), dtype=bool,
                       count=len(blobs))
    if have.any():
        joined = b"".join(b[size:] for b, ok in zip(blobs, have, strict=True) if ok)  # type: ignore[index]
        out[have] = np.frombuffer(joined, dtype=np.float32).reshape(-1, WIDTH)
    return out


def drift(
    positions: np.ndarray,
    columns: Sequence[pd.Series],
    profiles: np.ndarray,
    segments: int,
    reference_rows: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PSI, KS distance and the chance of such a PSI without drift, per segment and column, against the profiles.

    Shares are smoothed (half a row added to every bin, on both sides), so an empty bin is a
    finite difference. A PSI from few rows is large by chance alone (about bins / rows), so with
    it comes a p-value: `rows_eff * PSI` follows a chi-square law with (bins - 1) degrees of
    freedom when nothing drifted (rows_eff = 1 / (1/new rows + 1/reference rows)).

    Args:
        positions: each row's segment, as a position in `profiles` (0 <= p < segments).
        columns: the new rows' values, one series per profiled column, in profile order.
        profiles: segments x columns x WIDTH, as `read_profiles` returns them.
        segments: how many segments `profiles` holds.
        reference_rows: per segment, the rows its profile was made from.

    Returns:
        psi, ks, p (segments x columns; NaN where a segment has no new rows or no profile), and the rows
        per segment.
    """
    from scipy.stats import chi2

    rows = np.bincount(positions, minlength=segments).astype(np.float64)
    shape = (segments, len(columns))
    psi, ks, chance = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    reference_rows = np.maximum(np.asarray(reference_rows, dtype=np.float64), 1.0)
    effective = 1.0 / (1.0 / np.maximum(rows, 1.0) + 1.0 / reference_rows)
    for c, values in enumerate(columns):
        reference = profiles[:, c, TOP + 1 :].astype(np.float64)
        if np.nanmax(profiles[:, c, 0], initial=NUMERIC) == TEXT:  # as training saw the column
            bins = text_buckets(values)
        else:  # a value that is not a number now counts as missing: drift, not a crash
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
            edges = profiles[positions, c, 1:TOP].astype(np.float64)
            bins = numeric_bins(numbers, edges, profiles[positions, c, TOP].astype(np.float64))
        counts = np.bincount(positions * SHARES + bins, minlength=segments * SHARES).reshape(segments, SHARES)
        new = counts / np.maximum(rows, 1.0)[:, None]
        q = (counts + _HALF) / (rows[:, None] + _HALF * SHARES)
        p = (reference * reference_rows[:, None] + _HALF) / (reference_rows[:, None] + _HALF * SHARES)
        judged = (rows > 0) & np.isfinite(reference).all(axis=1)
        psi[judged, c] = ((q - p) * np.log(q / p)).sum(axis=1)[judged]
        ks[judged, c] = np.abs(np.cumsum(new - reference, axis=1)).max(axis=1)[judged]
        freedom = np.maximum((reference > 0).sum(axis=1) - 1, 1)
        chance[judged, c] = chi2.sf(effective * psi[:, c], freedom)[judged]
    return psi, ks, chance, rows
