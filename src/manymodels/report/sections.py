"""The report's sections, built from the tables a run keeps: a pack's manifest, an evaluation table.

Every section works from columns only (no per-segment Python loop over the fleet): at 100,000
segments the page stays a few hundred kilobytes of data beside plotly.js.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from manymodels.registry import manifest as mf
from manymodels.registry.hierarchy import LevelAccuracy
from manymodels.report.charts import MAX_POINTS, bars, boxes, ecdf, histogram, scatter
from manymodels.report.page import Chart, Section, Table, cell

WORST = 25  # segments in a worst-segments table
REASONS = 12  # failure reasons listed (the rest counted as "other")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def segment_labels(frame: pd.DataFrame, segment_by: Sequence[str]) -> list[str]:
    """Each row's segment as text: its value, or `a=1, b=x` for several columns ('(all rows)' without any)."""
    if not segment_by:
        return ["(all rows)"] * len(frame)
    if len(segment_by) == 1:
        return frame[segment_by[0]].astype(str).tolist()
    parts = [f"{c}=" + frame[c].astype(str) for c in segment_by]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + ", " + part
    return joined.tolist()


def _order(values: np.ndarray, higher: bool) -> np.ndarray:
    """Positions worst first (NaN last)."""
    key = np.where(np.isfinite(values), values, -np.inf if not higher else np.inf)
    return np.argsort(key if higher else -key, kind="stable")


def reason_of(error: str) -> str:
    """An error's reason: its first line, numbers as N (so '3 rows' and '4 rows' count as one reason)."""
    first = error.strip().splitlines()[0] if error.strip() else "(no message)"
    return _NUMBER.sub("N", first)[:160]


def fleet_section(
    manifest: pd.DataFrame,
    segment_by: Sequence[str],
    metric: str,
    higher: bool,
    facts: list[tuple[str, str]],
    worst: int = WORST,
) -> list[Section]:
    """Summary, metric distribution, metric vs size, worst segments (linked to their manifest rows), failures."""
    ok = mf.is_ok(manifest).to_numpy()
    values = manifest[metric].to_numpy(dtype=float) if metric in manifest.columns else np.full(len(manifest), np.nan)
    good = values[ok & np.isfinite(values)]
    summary = Section(
        "Fleet",
        "fleet",
        facts=[
            *facts,
            ("segments", f"{len(manifest):,}"),
            ("ok", f"{int(ok.sum()):,}"),
            ("failed", f"{int((~ok).sum()):,}"),
            ("rows", f"{int(manifest[mf.ROWS].sum()):,}"),
        ],
    )
    if good.size:
        p50, p90 = np.percentile(good, [50, 90 if not higher else 10])
        summary.facts += [
            (f"{metric} p50", cell(float(p50))),
            (f"{metric} {'p10' if higher else 'p90'}", cell(float(p90))),
        ]
    if mf.CONSTANT in manifest.columns:
        constant = int((manifest[mf.CONSTANT].astype("boolean").fillna(False).to_numpy(dtype=bool) & ok).sum())
        if constant:
            summary.notes.append(f"{constant:,} segment(s) got a constant model (every tree one leaf).")
    if mf.CARRIED in manifest.columns:
        carried = int(manifest[mf.CARRIED].astype("boolean").fillna(False).sum())
        summary.facts.append(("carried unchanged", f"{carried:,}"))
    labels = segment_labels(manifest, segment_by)
    size = (
        manifest[mf.N_TRAIN].to_numpy(dtype=float)
        if mf.N_TRAIN in manifest.columns
        else manifest[mf.ROWS].to_numpy(dtype=float)
    )
    summary.charts = [
        Chart(histogram(good, f"{metric} over segments", metric), f"{good.size:,} segments with a {metric}."),
        Chart(
            ecdf(good, f"{metric}: cumulative share of segments", metric),
            "Read off: the share of segments at or below a value.",
        ),
    ]
    sizes = size[ok & np.isfinite(values) & np.isfinite(size)]
    if sizes.size and np.ptp(sizes) == 0:  # one column of points says nothing about size
        summary.notes.append(f"Every segment trained on {int(sizes[0]):,} rows: the chart of {metric} by training "
                             "rows is left out.")
    else:
        shown = scatter(np.where(ok, size, np.nan), values, labels, f"{metric} vs training rows",
                        "training rows (log)", metric, log_x=True)
        summary.charts.append(Chart(shown[0], _sampled(shown[1], int(np.isfinite(values[ok]).sum()))))
    sections = [summary, _worst(manifest, labels, values, ok, metric, higher, worst, segment_by)]
    failures = _failures(manifest, labels, ok)
    if failures is not None:
        sections.append(failures)
    return sections


def _sampled(shown: int, total: int) -> str:
    if total > shown:
        return f"A seeded sample of {shown:,} of {total:,} segments (at most {MAX_POINTS:,} points are drawn)."
    return f"All {total:,} segments."


def _worst(
    manifest: pd.DataFrame,
    labels: list[str],
    values: np.ndarray,
    ok: np.ndarray,
    metric: str,
    higher: bool,
    worst: int,
    segment_by: Sequence[str],
) -> Section:
    at = np.flatnonzero(ok & np.isfinite(values))
    at = at[_order(values[at], higher)][:worst]
    anchors = [f"segment-{i}" for i in at]
    rows = [[labels[i], cell(values[i]), f"{int(manifest[mf.ROWS].iat[i]):,}", "manifest row"] for i in at]
    table = Table(
        ["segment", metric, "rows", "details"],
        rows,
        caption=f"The {len(at)} worst segments by {metric}",
        links={"details": [f"#manifest-{i}" for i in at]},
        anchors=anchors,
        css="worst",
    )
    hidden = {mf.SEGMENT_INDEX, mf.ATTEMPT, mf.PROFILE, *segment_by}
    columns = [c for c in manifest.columns if c not in hidden]
    detail_rows = [[labels[i], *[_short(cell(manifest[c].iat[i])) for c in columns]] for i in at]
    details = Table(
        ["segment", *columns],
        detail_rows,
        caption="Their rows of the run's manifest (model/pack/manifest.parquet)",
        anchors=[f"manifest-{i}" for i in at],
        css="manifest",
    )
    return Section("Worst segments", "worst", tables=[table, details])


def _short(text: str, limit: int = 90) -> str:
    """A cell of at most `limit` characters (cv_scores' JSON runs to kilobytes: the manifest has it whole)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _failures(manifest: pd.DataFrame, labels: list[str], ok: np.ndarray) -> Section | None:
    failed = np.flatnonzero(~ok)
    if failed.size == 0:
        return None
    errors = manifest[mf.ERROR].astype("string").fillna("").to_numpy(dtype=object)[failed]
    reasons = pd.Series([reason_of(str(e)) for e in errors])
    counts = reasons.value_counts()
    top = counts.iloc[:REASONS]
    label_of = np.asarray(labels, dtype=object)[failed]
    rows = []
    for reason, count in top.items():
        examples = label_of[(reasons == reason).to_numpy()][:3]
        rows.append([str(reason), f"{int(count):,}", ", ".join(str(e) for e in examples)])
    if len(counts) > REASONS:
        rows.append(["(other reasons)", f"{int(counts.iloc[REASONS:].sum()):,}", ""])
    chart = bars(
        [r[0][:70] for r in rows],
        [float(r[1].replace(",", "")) for r in rows],
        "Failures by reason",
        "",
        horizontal=True,
    )
    return Section(
        "Failures",
        "failures",
        facts=[("failed segments", f"{failed.size:,}")],
        charts=[Chart(chart, "Numbers in messages are shown as N, so one reason counts once.")],
        tables=[Table(["reason", "segments", "for example"], rows, caption="Failures by reason", css="failures")],
    )


def selection_section(manifest: pd.DataFrame) -> Section | None:
    """Which candidate won how many segments, the fold spread, and how far winners beat the best baseline."""
    if mf.CANDIDATE not in manifest.columns:
        return None
    ok = mf.is_ok(manifest).to_numpy()
    won = manifest.loc[ok, mf.CANDIDATE].astype("string").fillna("(none)").value_counts()
    spread = {
        str(name): manifest.loc[ok & (manifest[mf.CANDIDATE] == name).fillna(False).to_numpy(), mf.CV_STD]
        for name in won.index
    }
    mean = manifest.loc[ok, mf.CV_MEAN].to_numpy(dtype=float)
    base = manifest.loc[ok, mf.CV_BASELINE].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = (base - mean) / np.abs(base)
    section = Section(
        "Model selection (cross-validation)",
        "selection",
        facts=[
            ("folds", cell(float(np.nanmedian(manifest[mf.CV_FOLDS].to_numpy(dtype=float))) if ok.any() else None)),
            *[(f"won by {name}", f"{int(count):,}") for name, count in won.items()],
        ],
    )
    section.charts = [
        Chart(bars(list(won.index), list(won.to_numpy()), "Segments won, by candidate", "candidate")),
        Chart(
            boxes(spread, "Fold spread of the winner (std of its fold metric)", "std over folds"),
            "Per candidate, over the segments it won: min, quartiles, max.",
        ),
    ]
    if np.isfinite(gain).any():
        section.charts.append(
            Chart(
                histogram(gain, "Winner vs the best baseline (relative gain in CV metric)", "gain"),
                "Positive: the winner's mean fold error is below the best baseline's.",
            )
        )
    regret = mf.selection_regrets(manifest.loc[ok])
    if regret.notna().any():
        measured = regret.dropna().to_numpy(dtype=float)
        section.facts += [("chose the holdout's best", f"{int((measured <= 0).sum()):,} of {measured.size:,}"),
                          ("regret on the holdout (median)", cell(float(np.median(measured))))]
        section.charts.append(Chart(
            histogram(measured, "Selection's regret on the holdout", "winner's error minus the best candidate's"),
            "0: the segment chose the candidate that did best on its holdout; above 0: what the choice cost there.",
        ))
    section.notes += _best_params(manifest, ok)
    return section


def _best_params(manifest: pd.DataFrame, ok: np.ndarray) -> list[str]:
    params = manifest.loc[ok, mf.PARAMS].dropna().astype(str)
    if params.empty:
        return []
    common = params.value_counts()
    top, count = common.index[0], int(common.iloc[0])
    try:
        shown = json.dumps(json.loads(top), sort_keys=True)
    except ValueError:
        shown = top
    return [f"The most common winning parameters ({count:,} segments): {shown[:300]}"]


def forecast_section(manifest: pd.DataFrame, metric: str) -> Section | None:
    """A forecast family's holdout error step by step after the origin, and the segments where `naive` did better."""
    if mf.STEP_METRIC not in manifest.columns:
        return None
    ok = mf.is_ok(manifest).to_numpy()
    rows = [json.loads(text) for text in manifest.loc[ok, mf.STEP_METRIC].dropna().astype(str)]
    if not rows:
        return None
    steps = max(len(r) for r in rows)
    table = np.full((len(rows), steps), np.nan)
    for i, r in enumerate(rows):
        table[i, : len(r)] = [np.nan if v is None else float(v) for v in r]
    chosen = manifest.loc[ok, metric].to_numpy(dtype=float)
    naive = manifest.loc[ok, mf.HOLDOUT_NAIVE].to_numpy(dtype=float)
    judged = np.isfinite(chosen) & np.isfinite(naive)
    worse = int((chosen[judged] > naive[judged] + 1e-12).sum())
    section = Section(
        "Forecast error by step (holdout)",
        "forecast-steps",
        facts=[("horizon", f"{steps} steps"),
               ("worse than naive on the holdout", f"{worse:,} of {int(judged.sum()):,} segments"),
               (f"naive's {metric} (median)", cell(float(np.median(naive[judged])) if judged.any() else None)),
               (f"the chosen models' {metric} (median)", cell(float(np.median(chosen[judged])) if judged.any()
                                                                else None))],
    )
    groups = {f"{k + 1}": table[:, k][np.isfinite(table[:, k])] for k in range(steps)}
    section.charts = [Chart(boxes(groups, f"{metric} of each step after the origin, over segments", metric),
                            "Each segment's holdout forecast, step by step: min, quartiles, max over the segments.")]
    section.tables = [Table(["step", f"median {metric}", f"90th percentile {metric}"],
                            [[str(k + 1), cell(_nan_stat(np.nanmedian, table[:, k])),
                              cell(_nan_stat(lambda v: np.nanpercentile(v, 90), table[:, k]))]
                             for k in range(steps)],
                            caption="The holdout's error by step", css="steps")]
    section.facts += _interval_facts(manifest.loc[ok])
    return section


def _interval_facts(manifest: pd.DataFrame) -> list[tuple[str, str]]:
    """Per level training measured, its prediction intervals on the holdout: the median segment's coverage and
    Winkler score, and how many segments had too few window errors for an interval at that level."""
    found, judged = mf.interval_scores_by_level(manifest)
    facts = []
    for level, values in found.items():
        if not values:
            facts.append((f"{level}% interval (holdout)", f"none: all {judged:,} segments had too few window "
                                                          "errors for it"))
            continue
        coverage, winkler = np.median([v[0] for v in values]), np.median([v[1] for v in values])
        short = judged - len(values)
        facts.append((f"{level}% interval (holdout)",
                      f"median coverage {coverage:.0%}, median Winkler score {cell(float(winkler))}"
                      + (f"; {short:,} segments with too few window errors for it" if short else "")))
    return facts


def _nan_stat(stat: Any, values: np.ndarray) -> float | None:
    return float(stat(values)) if np.isfinite(values).any() else None


def hierarchy_section(levels: LevelAccuracy) -> Section:
    """A hierarchy's holdout accuracy per level: each level's median metric of its own forecasts and of the
    reconciled ones (or why the holdout was not reconciled)."""
    section = Section("Hierarchy: accuracy by level (holdout)", "hierarchy",
                      facts=[("reconciliation", levels.method), ("levels", f"{len(levels.table):,} with the total")])
    if levels.problem:
        section.notes.append(f"Not reconciled: {levels.problem}.")
        return section
    metric = levels.metric
    section.tables = [Table(
        ["level", "series", f"median {metric}: own forecasts", f"median {metric}: reconciled", "change"],
        [[str(r.level), f"{int(r.series):,}", cell(_finite(r.base)), cell(_finite(r.reconciled)),
          _change(float(r.base), float(r.reconciled))] for r in levels.table.itertuples(index=False)],
        caption="Each level's series forecast the holdout with their own models, then reconciled so that every "
                "level adds up: the median over the level's series of each.",
        css="levels",
    )]
    return section


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _change(before: float, after: float) -> str:
    if not (np.isfinite(before) and np.isfinite(after)) or before == 0:
        return ""
    return f"{(after - before) / abs(before):+.1%}"
