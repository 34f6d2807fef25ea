"""What model selection decided across a fleet: wins per candidate, the margin over the baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd

from manymodels.registry import manifest as mf
from manymodels.segment import SegmentSpec

WON = "won."  # summary key prefix: segments each candidate won
BASELINE_WON = "segments_baseline_won"
GAIN_P50 = "baseline_gain_p50"  # the median relative margin of the winner over the best baseline
LOUD_FRACTION = 0.5  # more than this share of segments won by a baseline: a warning


def selection_summary(manifest: pd.DataFrame, spec: SegmentSpec) -> dict[str, float]:
    """Summary metrics of selection: `won.<candidate>` per candidate, segments a baseline won, and the
    median relative gain of the winner over the best baseline (e.g. 0.3: 30 % lower error)."""
    if not spec.selecting or mf.CANDIDATE not in manifest.columns:
        return {}
    ok = manifest.loc[mf.is_ok(manifest)]
    winners = ok[mf.CANDIDATE].astype("string")
    summary = {f"{WON}{c.name}": float((winners == c.name).sum()) for c in spec.choices()}
    baselines = [c.name for c in spec.choices() if c.estimator == "baseline"]
    if not baselines:
        return summary
    summary[BASELINE_WON] = float(winners.isin(baselines).sum())
    best = ok[mf.CV_BASELINE].to_numpy(dtype=float)
    mean = ok[mf.CV_MEAN].to_numpy(dtype=float)
    keep = np.isfinite(best) & np.isfinite(mean) & (best != 0)
    if keep.any():
        maximize = spec.validation is not None and spec.validation.maximize
        gain = (mean[keep] - best[keep]) if maximize else (best[keep] - mean[keep])
        summary[GAIN_P50] = float(np.median(gain / np.abs(best[keep])))
    return summary


def baseline_warning(summary: dict[str, float], spec: SegmentSpec) -> str | None:
    """A loud line when baselines won most segments: the models do not beat a naive rule there."""
    won = summary.get(BASELINE_WON)
    ok = summary.get("segments_ok", 0.0)
    if won is None or not ok or won / ok <= LOUD_FRACTION:
        return None
    names = [c.name for c in spec.choices() if c.estimator == "baseline"]
    per = ", ".join(f"{n} {int(summary.get(WON + n, 0)):,}" for n in names)
    return (
        f"a baseline won {int(won):,} of {int(ok):,} segments ({won / ok:.0%}: {per}): the models do not beat "
        "a naive rule on most segments; look at the features, the parameters (tuning) or the rows per segment"
    )
