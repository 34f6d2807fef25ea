"""Holdout metrics for regression and binary classification, in plain numpy."""

from __future__ import annotations

import numpy as np

_REGRESSION = ("rmse", "mae", "mape", "r2")
_BINARY = ("logloss", "auc", "accuracy")


def metric_names(task: str) -> tuple[str, ...]:
    """The metrics computed for a task, in report order."""
    return _REGRESSION if task == "regression" else _BINARY


def compute_metrics(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Every metric of the task; NaN where a metric is undefined (e.g. AUC with one class)."""
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    if task == "regression":
        err = y_pred - y_true
        nonzero = y_true != 0
        ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
        return {
            "rmse": float(np.sqrt(np.mean(err**2))),
            "mae": float(np.mean(np.abs(err))),
            "mape": float(np.mean(np.abs(err[nonzero] / y_true[nonzero]))) if nonzero.any() else float("nan"),
            "r2": 1.0 - float(np.sum(err**2)) / ss_tot if ss_tot > 0 else float("nan"),
        }
    p = np.clip(y_pred, 1e-15, 1 - 1e-15)
    return {
        "logloss": float(-np.mean(y_true * np.log(p) + (1 - y_true) * np.log(1 - p))),
        "auc": _auc(y_true, y_pred),
        "accuracy": float(np.mean((y_pred >= 0.5) == (y_true == 1))),
    }


def _auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties given average ranks."""
    pos = y_true == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=float)
    sorted_scores = score[order]
    i = 0
    while i < len(score):
        j = i
        while j + 1 < len(score) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def grouped_metric(task: str, metric: str, groups: np.ndarray, count: int, y_true: np.ndarray,
                   y_pred: np.ndarray) -> np.ndarray:
    """`metric` per group (groups: each row's group, 0 <= g < count), as `compute_metrics` defines it.

    The regression metrics, log loss and accuracy are grouped sums (no loop over groups); AUC is
    computed group by group. Groups without rows, or with a missing value, get NaN.
    """
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    bad = ~(np.isfinite(y_true) & np.isfinite(y_pred))
    broken = np.bincount(groups[bad], minlength=count) > 0
    rows = np.bincount(groups, minlength=count).astype(float)
    y_true, y_pred = np.where(bad, 0.0, y_true), np.where(bad, 0.0, y_pred)

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(groups, weights=values, minlength=count)

    with np.errstate(divide="ignore", invalid="ignore"):
        err = y_pred - y_true
        if metric == "rmse":
            out = np.sqrt(total(err**2) / rows)
        elif metric == "mae":
            out = total(np.abs(err)) / rows
        elif metric == "mape":
            nonzero = y_true != 0
            out = total(np.where(nonzero, np.abs(err / np.where(nonzero, y_true, 1.0)), 0.0)) / total(nonzero * 1.0)
        elif metric == "r2":
            mean = total(y_true) / rows
            ss_tot = total((y_true - mean[groups]) ** 2)
            out = np.where(ss_tot > 0, 1.0 - total(err**2) / ss_tot, np.nan)
        elif metric == "logloss":
            p = np.clip(y_pred, 1e-15, 1 - 1e-15)
            out = -total(y_true * np.log(p) + (1 - y_true) * np.log(1 - p)) / rows
        elif metric == "accuracy":
            out = total(((y_pred >= 0.5) == (y_true == 1)) * 1.0) / rows
        else:
            order = np.argsort(groups, kind="stable")
            ends = np.cumsum(rows.astype(np.int64))
            out = np.array([_auc(y_true[order[e - int(n):e]], y_pred[order[e - int(n):e]]) if n else np.nan
                            for e, n in zip(ends, rows, strict=True)])
    out = np.asarray(out, dtype=float)
    out[(rows == 0) | broken] = np.nan
    return out
