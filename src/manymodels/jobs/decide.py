"""The per-segment verdict of an evaluation: each segment's status and decision, the order to read them, the gate.

An evaluation table has one row per segment with both models' metric on the same rows
(`challenger`, `champion`) and what the challenger's training run said of it (`run_status`,
`error`, `train_rows`); this module adds `status`, `change`, `decision`, `reason` and
OVER_GATE, and decides whether the fleet passes the promotion gate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from manymodels.bundle import ModelSpec
from manymodels.bundle.schema import HIGHER_IS_BETTER
from manymodels.registry.manifest import OK

# Segment statuses in an evaluation table; `insufficient`: too few evaluation rows to call it either way.
WON, LOST, TIED, NEW, NO_DATA, ABSENT = "won", "lost", "tied", "new", "no_data", "absent"
CHALLENGER_FAILED = "failed"  # the challenger's run has no model for the segment (its fit failed)
INSUFFICIENT = "insufficient"
STATUSES = (WON, LOST, TIED, NEW, INSUFFICIENT, CHALLENGER_FAILED, NO_DATA, ABSENT)
# How an evaluation table is ordered: what needs a look first (then, within a status, the largest change).
STATUS_ORDER = (LOST, CHALLENGER_FAILED, WON, NEW, INSUFFICIENT, TIED, NO_DATA, ABSENT)
# Decisions: the challenger's model serves, the champion's stays, or the segment has neither.
PROMOTE, KEEP, NONE = "promote", "keep", "none"
# Columns of an evaluation table beside the segment columns.
CHALLENGER, CHAMPION = "challenger", "champion"  # each model's metric on the segment's evaluation rows
RUN_STATUS, RUN_ERROR, TRAIN_ROWS = "run_status", "error", "train_rows"  # the challenger run's manifest says
HAS_CHAMPION, SAME_MODEL = "has_champion", "same_model"
STATUS, CHANGE, DECISION, REASON = "status", "change", "decision", "reason"
# Column: whether the challenger's metric breaks promotion.max_metric / min_metric (the quality gate).
OVER_GATE = "over_quality_gate"
_TIE = 1e-12


def decide(table: pd.DataFrame, model: ModelSpec, metric: str) -> pd.DataFrame:
    """Each segment's status (won, lost, tied, new, failed, no_data, absent), change and decision, with why.

    The change is relative to the champion (negative: smaller metric); a win needs an
    improvement (in the metric's better direction) above `promotion.min_improvement`.
    """
    policy = model.promotion
    higher = metric in HIGHER_IS_BETTER
    table = table.copy()
    champ = table[CHAMPION].to_numpy(dtype=float)
    chall = table[CHALLENGER].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        change = (chall - champ) / np.maximum(np.abs(champ), _TIE)
    table[CHANGE] = change
    statuses, decisions, reasons = [], [], []
    for row, rel in zip(table.itertuples(index=False), change, strict=True):
        status, decision, reason = _judge(row, rel, higher, metric, policy)
        statuses.append(status)
        decisions.append(decision)
        reasons.append(reason)
    table[STATUS] = statuses
    table[DECISION] = decisions
    table[REASON] = pd.array(reasons, dtype="string")
    carried = table[SAME_MODEL].to_numpy(dtype=bool) if SAME_MODEL in table.columns else False
    ok = (table[RUN_STATUS] == OK).to_numpy(dtype=bool) & ~carried  # a carried model is the champion's own
    over = np.zeros(len(table), dtype=bool)
    if policy.max_metric is not None:
        over |= chall > policy.max_metric
    if policy.min_metric is not None:
        over |= chall < policy.min_metric
    table[OVER_GATE] = over & ok
    return table


def worst_first(table: pd.DataFrame) -> pd.DataFrame:
    """The table in the order a person reads it: losses (largest relative loss first), failures, wins
    (largest gain first), new, insufficient, ties, no data, absent."""
    rank = table[STATUS].map({s: i for i, s in enumerate(STATUS_ORDER)}).fillna(len(STATUS_ORDER))
    size = table[CHANGE].abs().fillna(-1.0)
    order = np.lexsort((-size.to_numpy(dtype=float), rank.to_numpy(dtype=float)))
    return table.iloc[order].reset_index(drop=True)


def _judge(row: Any, change: float, higher: bool, metric: str, policy: Any) -> tuple[str, str, str]:
    has_champion = bool(row.has_champion)
    keep = KEEP if has_champion else NONE
    run_status = row.run_status if isinstance(row.run_status, str) else None
    if run_status is None:
        return ABSENT, keep, "not in the challenger run (no rows when it trained)"
    if run_status != OK:
        error = row.error if isinstance(row.error, str) else "failed"
        return CHALLENGER_FAILED, keep, f"challenger failed: {error}"
    if bool(getattr(row, "same_model", False)):
        return TIED, KEEP, "the champion's own model, carried over (its rows did not change)"
    if row.rows == 0 or row.challenger != row.challenger:
        return NO_DATA, keep, "no evaluation rows"
    gate = _gate(row, metric, policy)
    if not has_champion:
        return NEW, (NONE, PROMOTE)[gate is None], gate or "new segment"
    if row.rows < policy.min_eval_rows:
        return INSUFFICIENT, KEEP, (
            f"{int(row.rows)} evaluation row(s) < promotion.min_eval_rows {policy.min_eval_rows}: too few to tell "
            "the models apart, the champion stays (evaluate on more rows with --data)"
        )
    improvement = -change if not higher else change
    shown = f"{metric} {row.challenger:.6g} vs {row.champion:.6g} ({change:+.2%})"
    if row.champion != row.champion:  # the champion serves it but could not be scored on these rows
        why = "the champion gave no prediction on these rows (its model damaged, or a feature missing)"
        return NEW, (KEEP, PROMOTE)[gate is None], gate or why
    if abs(row.challenger - row.champion) <= _TIE * max(1.0, abs(row.champion)):
        return TIED, KEEP, f"same {metric} ({row.champion:.6g})"
    if improvement < 0:
        return LOST, KEEP, f"challenger worse: {shown}"
    if improvement <= policy.min_improvement:
        return TIED, KEEP, f"improvement below min_improvement {policy.min_improvement:g}: {shown}"
    if gate:
        return WON, KEEP, gate
    folds, won = getattr(row, "cv_folds", np.nan), getattr(row, "cv_folds_won", np.nan)
    if won == won and folds == folds and folds > 0 and won <= folds / 2:
        return WON, KEEP, (
            f"better on the mean but on only {int(won)} of {int(folds)} folds against the champion's configuration: "
            f"the champion stays ({shown})"
        )
    return WON, PROMOTE, f"challenger better: {shown}"


def _gate(row: Any, metric: str, policy: Any) -> str | None:
    """Why the quality gate stops the challenger's model, or None if it passes."""
    train_rows = int(row.train_rows) if row.train_rows == row.train_rows else 0
    if train_rows < policy.min_rows:
        return f"gate: {train_rows} rows < promotion.min_rows {policy.min_rows}"
    if policy.max_metric is not None and row.challenger > policy.max_metric:
        return f"gate: {metric} {row.challenger:.6g} > promotion.max_metric {policy.max_metric:g}"
    if policy.min_metric is not None and row.challenger < policy.min_metric:
        return f"gate: {metric} {row.challenger:.6g} < promotion.min_metric {policy.min_metric:g}"
    return None


def gate_problems(table: pd.DataFrame, model: ModelSpec) -> list[str]:
    """Why a pipeline should stop here: too many segments need a person's look.

    Those are segments whose challenger lost or failed, or whose challenger's metric breaks the
    quality gate (`max_metric` / `min_metric`); the gate fails when they are more than
    `promotion.max_failed_fraction` of the segments evaluated. A retrain where nothing improved
    is no failure: there is just nothing to promote.
    """
    status = table[STATUS]
    evaluated = int(status.isin([WON, LOST, TIED, NEW, INSUFFICIENT, CHALLENGER_FAILED]).sum())
    regressed = status.isin([LOST, CHALLENGER_FAILED]).to_numpy(dtype=bool)
    over = table[OVER_GATE].to_numpy(dtype=bool) if OVER_GATE in table.columns else np.zeros(len(table), bool)
    needs_look = int((regressed | over).sum())
    limit = model.promotion.max_failed_fraction
    if not evaluated or needs_look / evaluated <= limit:
        return []
    parts = [f"{int((status == LOST).sum()):,} lost", f"{int((status == CHALLENGER_FAILED).sum()):,} failed"]
    if over.any():
        parts.append(f"{int(over.sum()):,} over the quality gate")
    return [
        f"{needs_look:,} of {evaluated:,} segments regress ({', '.join(parts)}: {needs_look / evaluated:.1%}), "
        f"more than promotion.max_failed_fraction {limit:.1%}"
    ]


