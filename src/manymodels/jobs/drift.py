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
from manymodels.engines.operations import MON_METRIC, MON_MODEL, MON_ROWS, PREDICTION
from manymodels.registry import manifest as mf

MONITORING_TABLE = "monitoring.parquet"  # in a monitoring run: the table
# Segment statuses of a monitoring table, worst first.
DEGRADED, DRIFTED, OK, NOT_JUDGED = "degraded", "drifted", "ok", "not_judged"
UNSEEN, NO_PROFILE = "unseen", "no_profile"
STATUS_ORDER = (DEGRADED, DRIFTED, OK, NO_PROFILE, NOT_JUDGED, UNSEEN)
# Columns beside the segment columns (and psi.<column> / ks.<column> per feature and for `prediction`).
STATUS, ROWS, PSI_MAX, WORST_COLUMN = "status", "rows", "psi_max", "worst_column"
DRIFTED_COL, DEGRADED_COL, INCREASE, SERVED_BY = "drifted", "degraded", "metric_increase", "served_by"
PSI_PREFIX, KS_PREFIX, P_PREFIX = "psi.", "ks.", "p."  # p: the chance of such a PSI without drift


def judge(raw: pd.DataFrame, manifest: pd.DataFrame, segment_by: list[str], features: list[str], metric: str,
           policy: Any, has_fallback: bool) -> pd.DataFrame:
    """Name the engine's columns, add the holdout metric, decide each segment's status; worst first.

    Judged: a segment with a model and at least `policy.min_rows` new rows. Degraded: its metric on
    the new rows is worse than its holdout metric by more than `metric_increase_max` (relative).
    Drifted: a column's PSI above `psi_max`, and unlikely by chance (below `significance`). Not
    judged: too few rows. Unseen: no model (the fallback serves it, when there is one). No profile:
    a model trained before profiles existed (judged on its metric only).
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
    shifted &= np.nan_to_num(chance, nan=1.0) < policy.significance
    drifted = judged & shifted.any(axis=1)
    degraded = judged & np.isfinite(increase) & (increase > policy.metric_increase_max)
    status = np.select(
        [~known, ~judged, degraded, drifted, ~has_psi],
        [UNSEEN, NOT_JUDGED, DEGRADED, DRIFTED, NO_PROFILE],
        default=OK,
    )
    table[DRIFTED_COL], table[DEGRADED_COL], table[STATUS] = drifted, degraded, status
    table[SERVED_BY] = np.where(known, "segment", "fallback" if has_fallback else "none")
    rank = pd.Series(status).map({s: i for i, s in enumerate(STATUS_ORDER)}).to_numpy()
    size = np.where(degraded, np.nan_to_num(increase, nan=0.0), np.nan_to_num(table[PSI_MAX].to_numpy(dtype=float)))
    order = np.lexsort((-size, rank))
    return table.iloc[order].reset_index(drop=True)
