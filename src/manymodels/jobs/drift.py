"""The per-segment verdict of monitoring: statuses, the columns of its table, the order to read it.

Monitoring's table has one row per segment of the new rows: its segment columns, `rows`,
`psi.<column>` and `ks.<column>` for each feature and for `prediction`, the metric on the new rows,
the holdout metric, their relative change, and the verdict this module adds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from manymodels.bundle.schema import HIGHER_IS_BETTER
from manymodels.engines.operations import (
    MON_BANDED,
    MON_LOSS_P,
    MON_METRIC,
    MON_MISSES,
    MON_MODEL,
    MON_ROWS,
    MON_WINDOWS,
    MONITOR_LEVEL,
    PREDICTION,
)
from manymodels.registry import manifest as mf
from manymodels.segment.significance import coverage_p, deflated, design_effect, false_discovery, intra_correlation

MONITORING_TABLE = "monitoring.parquet"  # in a monitoring run: the table
# Segment statuses of a monitoring table, worst first.
DEGRADED, DRIFTED, OK, NOT_JUDGED = "degraded", "drifted", "ok", "not_judged"
UNSEEN, NO_PROFILE = "unseen", "no_profile"
STATUS_ORDER = (DEGRADED, DRIFTED, OK, NO_PROFILE, NOT_JUDGED, UNSEEN)
# Columns beside the segment columns (and psi.<column> / ks.<column> per feature and for `prediction`).
STATUS, ROWS, PSI_MAX, WORST_COLUMN = "status", "rows", "psi_max", "worst_column"
DRIFTED_COL, DEGRADED_COL, INCREASE, SERVED_BY = "drifted", "degraded", "metric_increase", "served_by"
PSI_PREFIX, KS_PREFIX, P_PREFIX = "psi.", "ks.", "p."  # p: the chance of such a PSI without drift
# The tests' p-values (the chance of what was seen without change) and, over the fleet, their Benjamini-Hochberg
# q-values: the errors against the holdout's, a forecast's actuals outside its MONITOR_LEVEL band, drift.
METRIC_P, COVERAGE, COVERAGE_P = "metric_p", f"coverage_{MONITOR_LEVEL}", "coverage_p"
DEGRADED_Q, DRIFTED_Q = "degraded_q", "drifted_q"
DESIGN = "design_effect"  # a forecast's new rows count as rows / design_effect independent ones


def judge(raw: pd.DataFrame, manifest: pd.DataFrame, segment_by: list[str], features: list[str], metric: str,
           policy: Any, has_fallback: bool) -> pd.DataFrame:
    """Name the engine's columns, add the holdout metric, decide each segment's status; worst first.

    Judged: a segment with a model and at least `policy.min_rows` new rows. Degraded: its metric on the new rows is
    worse than its holdout metric by more than `metric_increase_max` (relative) and its errors rank above the
    holdout's beyond chance (`significance.loss_rank_p`; a model trained before holdout losses were kept: the
    change alone), or (a forecast) more of its actuals fall outside its MONITOR_LEVEL band than chance explains
    (a forecast's rows count as fewer independent ones: `significance.design_effect`).
    Drifted: a column's PSI above `psi_max`, and unlikely by chance (the segment's smallest such p-value times its
    columns). Both flags are decided on Benjamini-Hochberg q-values over the judged segments (the metric and
    coverage tests one family, drift another) below `significance`. Not judged: too few rows. Unseen: no model
    (the fallback serves it, when there is one). No profile: a model trained before profiles existed (judged on
    its metric only).
    """
    names = [*features, PREDICTION]
    table = raw[segment_by].copy()
    table[ROWS] = raw[MON_ROWS].to_numpy(dtype=np.int64)
    psi = np.column_stack([raw[f"psi_{i}"].to_numpy(dtype=float) for i in range(len(names))])
    chance = np.column_stack([raw[f"p_{i}"].to_numpy(dtype=float) for i in range(len(names))])
    for i, column in enumerate(names):
        table[PSI_PREFIX + column] = psi[:, i]
        table[KS_PREFIX + column] = raw[f"ks_{i}"].to_numpy(dtype=float)
        table[P_PREFIX + column] = chance[:, i]
    model_index = raw[MON_MODEL].to_numpy(dtype=np.int64)
    known = model_index >= 0
    recorded = manifest.set_index(mf.SEGMENT_INDEX)[metric] if metric in manifest.columns else pd.Series(dtype=float)
    holdout = np.full(len(table), np.nan)
    holdout[known] = recorded.reindex(model_index[known]).to_numpy(dtype=float)
    new = raw[MON_METRIC].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        worse = (holdout - new) if metric in HIGHER_IS_BETTER else (new - holdout)
        increase = worse / np.maximum(np.abs(holdout), 1e-12)
    table[metric] = new
    table[f"{metric}_holdout"] = holdout
    table[INCREASE] = increase
    has_psi = np.isfinite(psi).any(axis=1)
    table[PSI_MAX] = np.where(has_psi, np.nanmax(np.where(np.isfinite(psi), psi, -np.inf), axis=1), np.nan)
    largest = np.argmax(np.nan_to_num(psi, nan=-1.0), axis=1)
    table[WORST_COLUMN] = np.where(has_psi, np.asarray(names, dtype=object)[largest], None)
    judged = known & (table[ROWS].to_numpy() >= policy.min_rows)
    shifted = np.nan_to_num(psi, nan=0.0) > policy.psi_max
    drift_p = _drift_p(chance, shifted)
    drift_q = np.full(len(table), np.nan)
    drift_q[judged] = false_discovery(drift_p[judged])
    drifted = judged & shifted.any(axis=1) & (np.nan_to_num(drift_q, nan=1.0) < policy.significance)
    metric_p = raw[MON_LOSS_P].to_numpy(dtype=float) if MON_LOSS_P in raw.columns else np.full(len(table), np.nan)
    cover_p = np.full(len(table), np.nan)
    if MON_BANDED in raw.columns:  # a forecast: its rows are steps of one forecast, not independent rows
        sums = [raw[c].to_numpy(dtype=float)[judged] for c in MON_WINDOWS]
        sizes, signs = intra_correlation(*sums[0:2], *sums[4:]), intra_correlation(*sums[2:4], *sums[4:])
        design = design_effect(table[ROWS].to_numpy(dtype=float), sizes)
        table[DESIGN] = design
        metric_p = deflated(metric_p, design)
        banded, misses = raw[MON_BANDED].to_numpy(dtype=np.int64), raw[MON_MISSES].to_numpy(dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            table[COVERAGE] = np.where(banded > 0, 1 - misses / banded, np.nan)
        cover_p = coverage_p(misses, banded, MONITOR_LEVEL, design_effect(banded, signs))
        table[COVERAGE_P] = cover_p
    table[METRIC_P] = metric_p
    both = np.full((len(table), 2), np.nan)
    both[judged] = false_discovery(np.column_stack([metric_p, cover_p])[judged].reshape(-1)).reshape(-1, 2)
    table[DEGRADED_Q] = np.fmin(both[:, 0], both[:, 1])
    table[DRIFTED_Q] = drift_q
    beyond_chance = np.where(np.isfinite(metric_p), np.nan_to_num(both[:, 0], nan=1.0) < policy.significance, True)
    degraded = judged & np.isfinite(increase) & (increase > policy.metric_increase_max) & beyond_chance
    degraded |= judged & (np.nan_to_num(both[:, 1], nan=1.0) < policy.significance)
    # A forecast without known features has no column to judge drift on (its own values have no reference): its
    # profile holds its holdout's errors alone, and it is judged on them, not "without profile".
    errors_only = np.full(len(table), MON_BANDED in raw.columns and not features)
    status = np.select(
        [~known, ~judged, degraded, drifted, ~has_psi & ~errors_only],
        [UNSEEN, NOT_JUDGED, DEGRADED, DRIFTED, NO_PROFILE],
        default=OK,
    )
    table[DRIFTED_COL], table[DEGRADED_COL], table[STATUS] = drifted, degraded, status
    table[SERVED_BY] = np.where(known, "segment", "fallback" if has_fallback else "none")
    rank = pd.Series(status).map({s: i for i, s in enumerate(STATUS_ORDER)}).to_numpy()
    size = np.where(degraded, np.nan_to_num(increase, nan=0.0), np.nan_to_num(table[PSI_MAX].to_numpy(dtype=float)))
    order = np.lexsort((-size, rank))
    return table.iloc[order].reset_index(drop=True)


def _drift_p(chance: np.ndarray, shifted: np.ndarray) -> np.ndarray:
    """Per segment, the chance of its drift without any: the smallest p-value of its columns whose PSI is over the
    threshold (of all its columns when none is), times its columns tested (one test of the segment, whatever its
    width)."""
    columns = np.maximum(np.isfinite(chance).sum(axis=1), 1)[:, None]  # the columns tested (with a p-value)
    scaled = np.minimum(chance * columns, 1.0)
    over = np.where(shifted & np.isfinite(scaled), scaled, np.inf).min(axis=1, initial=np.inf)
    every = np.where(np.isfinite(scaled), scaled, np.inf).min(axis=1, initial=np.inf)
    return np.where(np.isfinite(over), over, np.where(np.isfinite(every), every, np.nan))
