"""The HTML report of a run: what training, an evaluation or a promotion decided, per segment.

Training logs `report.html` in its run; an evaluation logs `evaluation/vs-vN.html` beside its
table in the challenger's run; a promotion logs `report.html` in its run; `manymodels report`
builds the page of any run, with the evaluations it holds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from manymodels.bundle.schema import HIGHER_IS_BETTER
from manymodels.data.timegrid import TimeGrid
from manymodels.engines.operations import EVAL_ROWS
from manymodels.jobs.decide import (
    CHALLENGER,
    CHAMPION,
    CHANGE,
    DECISION,
    LOST,
    REASON,
    STATUS,
    STATUS_ORDER,
    worst_first,
)
from manymodels.jobs.drift import COVERAGE, DEGRADED_Q, DRIFTED_Q, INCREASE, PSI_MAX, PSI_PREFIX, WORST_COLUMN
from manymodels.jobs.drift import ROWS as MON_ROWS
from manymodels.jobs.drift import STATUS as MON_STATUS
from manymodels.registry import manifest as mf
from manymodels.registry.hierarchy import LevelAccuracy
from manymodels.report import (
    Chart,
    Section,
    Table,
    bars,
    cell,
    fleet_section,
    forecast_section,
    heatmap,
    histogram,
    render_page,
    scatter,
    segment_labels,
    selection_section,
    write_page,
)
from manymodels.report.forecast_plots import forecast_plots_section
from manymodels.report.sections import WORST, hierarchy_section

EVALUATION_FOLDER = "evaluation"  # in a challenger's run: vs-v<N>.parquet (the table) and vs-v<N>.html
PROMOTION_TABLE = "promotion.parquet"  # in a promotion's run: the table it promoted by


def run_facts(
    run_id: str, started: float | None, target: str | None, extra: Sequence[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """The facts naming a run: its id, when it started, the target."""
    facts = [("run", run_id)]
    if started:
        facts.append(("started", dt.datetime.fromtimestamp(started).isoformat(sep=" ", timespec="seconds")))
    if target:
        facts.append(("target", target))
    return [*facts, *extra]


def training_sections(
    manifest: pd.DataFrame, segment_by: Sequence[str], metric: str, facts: list[tuple[str, str]],
    plots: pd.Series | None = None, grid: TimeGrid | None = None, levels: LevelAccuracy | None = None,
) -> list[Section]:
    """Fleet summary, distributions, worst segments, failures, and model selection when the run selected; a
    forecast's error by step and its segments drawn (from the manifest's HOLDOUT_PLOT, else `plots`)."""
    sections = fleet_section(manifest, segment_by, metric, metric in HIGHER_IS_BETTER, facts)
    chosen = selection_section(manifest)
    if chosen is not None:
        sections.append(chosen)
    steps = forecast_section(manifest, metric)
    if steps is not None:
        sections.append(steps)
        drawn = forecast_plots_section(manifest, plots, segment_labels(manifest, segment_by), metric,
                                       metric in HIGHER_IS_BETTER, grid)
        if drawn is not None:
            sections.append(drawn)
    if levels is not None:
        sections.append(hierarchy_section(levels))
    if mf.SOURCE_RUN in manifest.columns:
        served = mf.served(manifest)[mf.SOURCE_RUN].astype("string").fillna("(none)").value_counts()
        if len(served) > 1 or mf.CARRIED not in manifest.columns:
            sections[0].tables.append(
                Table(
                    ["training run", "segments served"],
                    [[str(k), f"{int(v):,}"] for k, v in served.items()],
                    caption="Where the served models come from",
                    css="sources",
                )
            )
    return sections


def evaluation_section(
    table: pd.DataFrame,
    segment_by: Sequence[str],
    metric: str,
    title: str,
    facts: list[tuple[str, str]],
    worst: int = WORST,
) -> Section:
    """Counts by status and decision, champion vs challenger per segment, the largest regressions."""
    higher = metric in HIGHER_IS_BETTER
    labels = segment_labels(table, segment_by)
    status = table[STATUS].astype(str)
    by_status = status.value_counts().reindex([s for s in STATUS_ORDER if s in set(status)])
    decisions = table[DECISION].astype(str).value_counts()
    section = Section(title, "evaluation", facts=[*facts, *[(s, f"{int(n):,}") for s, n in by_status.items()]])
    shown = scatter(
        table[CHAMPION],
        table[CHALLENGER],
        labels,
        f"{metric}: challenger vs champion, per segment",
        f"champion {metric}",
        f"challenger {metric}",
        groups=status.tolist(),
        diagonal=True,
    )
    total = int(
        (
            np.isfinite(table[CHAMPION].to_numpy(dtype=float)) & np.isfinite(table[CHALLENGER].to_numpy(dtype=float))
        ).sum()
    )
    better = "above" if higher else "below"
    section.charts = [
        Chart(bars(list(by_status.index), list(by_status.to_numpy()), "Segments by status", "status")),
        Chart(bars(list(decisions.index), list(decisions.to_numpy()), "Segments by decision", "decision")),
        Chart(
            shown[0],
            f"Points {better} the dotted line: the challenger is better. "
            + (
                f"A seeded sample of {shown[1]:,} of {total:,}."
                if total > shown[1]
                else f"All {total:,} segments with both."
            ),
        ),
        Chart(
            histogram(
                table[CHANGE].to_numpy(dtype=float),
                f"Relative change in {metric} (challenger vs champion)",
                "relative change",
            ),
            "Negative: the challenger's metric is smaller.",
        ),
    ]
    ordered = worst_first(table.assign(_label=labels))
    head = ordered.head(worst)
    rows = [
        [
            str(r["_label"]),
            str(r[STATUS]),
            cell(r[CHAMPION]),
            cell(r[CHALLENGER]),
            _percent(r[CHANGE]),
            f"{int(r[EVAL_ROWS]):,}" if EVAL_ROWS in head.columns else "",
            str(r[DECISION]),
            cell(r[REASON]),
        ]
        for _, r in head.iterrows()
    ]
    lost = int((status == LOST).sum())
    section.tables.append(
        Table(
            ["segment", "status", "champion", "challenger", "change", "rows", "decision", "reason"],
            rows,
            caption=f"The first {len(rows)} segments to look at ({lost:,} lost; losses first, largest first)",
            css="evaluation",
        )
    )
    return section


def _share(value: Any) -> str:
    number = float(value) if isinstance(value, int | float | np.floating) else float("nan")
    return f"{number:.0%}" if np.isfinite(number) else ""


def _percent(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if not np.isfinite(number) else f"{number:+.1%}"


def page(model: str, kind: str, sections: Sequence[Section]) -> str:
    """The page of a run of `model` (kind: training, evaluation, promotion)."""
    return render_page(f"{model}: {kind} report", "manymodels: one model per segment", sections)


def write_report(
    path: Path, model: str, kind: str, sections: Callable[[], Sequence[Section]], warn: Callable[[str], None]
) -> Path | None:
    """Write a run's page; a report that cannot be made is a warning, never a lost run (the tables are kept)."""
    try:
        return write_page(path, page(model, kind, sections()))
    except Exception as exc:  # noqa: BLE001 - the run's models and tables matter more than its page
        warn(f"{path.name} not written ({type(exc).__name__}: {exc}); the run's tables are complete")
        return None


HEATMAP_ROWS = 30  # segments in a monitoring page's heatmap


def monitoring_section(table: pd.DataFrame, segment_by: Sequence[str], metric: str, counts: dict[str, int],
                       problems: Sequence[str], facts: list[tuple[str, str]], worst: int = WORST) -> Section:
    """Drift of the worst segments by column (heatmap), the spread of drift and of metric change, the segments to
    look at first (the table is ordered worst first)."""
    labels = segment_labels(table, segment_by)
    psi_columns = [c for c in table.columns if c.startswith(PSI_PREFIX)]
    section = Section("Monitoring: drift and performance on new rows", "monitoring",
                      facts=[*facts, *[(s.replace("_", " "), f"{n:,}") for s, n in counts.items()]],
                      notes=list(problems))
    head = table.head(HEATMAP_ROWS)
    grid = head[psi_columns].to_numpy(dtype=float) if psi_columns else np.empty((0, 0))
    section.charts = [
        Chart(heatmap(grid, labels[: len(head)], [c[len(PSI_PREFIX):] for c in psi_columns],
                      f"PSI of the first {len(head)} segments to look at, by column", "PSI"),
              "Darker: a larger shift. A PSI of few rows is large by chance alone (about 10 / rows): a segment is "
              "flagged only when a PSI is above monitoring.psi_max and unlikely by chance (q: its p-value adjusted "
              "for the fleet's count of segments)."),
        Chart(histogram(table[PSI_MAX].to_numpy(dtype=float), "Largest PSI per segment", "PSI")),
        Chart(bars(list(counts), list(counts.values()), "Segments by status", "status")),
    ]
    if np.isfinite(table[INCREASE].to_numpy(dtype=float)).any():
        section.charts.append(Chart(histogram(table[INCREASE].to_numpy(dtype=float),
                                              f"Change of {metric} on new rows against the holdout", "relative change"),
                                    "Positive: worse than when the model was trained."))
    covered = table[COVERAGE].to_numpy(dtype=float) if COVERAGE in table.columns else np.empty(0)
    if np.isfinite(covered).any():
        section.facts.append(("new actuals inside their 95% band (median segment)",
                              f"{np.nanmedian(covered):.0%} of {int(np.isfinite(covered).sum()):,} segments"))
    columns = [c for c in (DEGRADED_Q, DRIFTED_Q) if c in table.columns]
    least = table[columns].min(axis=1, skipna=True) if columns else pd.Series(np.nan, index=table.index)
    rows = [[labels[i], str(r[MON_STATUS]), f"{int(r[MON_ROWS]):,}", cell(r[WORST_COLUMN]), cell(r[PSI_MAX]),
             cell(r[metric]), cell(r[f"{metric}_holdout"]), _percent(r[INCREASE]), cell(least.iloc[i]),
             *([_share(r[COVERAGE])] if len(covered) else [])]
            for i, (_, r) in enumerate(table.head(worst).iterrows())]
    section.tables.append(Table(["segment", "status", "rows", "worst column", "PSI", metric, f"{metric} (holdout)",
                                 "change", "q", *(["in 95% band"] if len(covered) else [])], rows,
                                caption=f"The first {len(rows)} segments to look at (q: the chance that the fleet's "
                                        "flags at this segment's level are by chance alone)", css="monitor"))
    return section
