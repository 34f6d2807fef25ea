"""Rich output for the CLI: progress bars and the summary tables of train, score, jobs and runs."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Console, ConsoleDimensions
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table
from rich.text import Text

from manymodels.bundle.schema import HIGHER_IS_BETTER
from manymodels.registry import manifest as mf

if TYPE_CHECKING:  # the jobs layer pulls in MLflow; `--help` and `validate` need none of it

    from manymodels.jobs import ScoreOutcome, TrainOutcome
    from manymodels.jobs.forecast import ForecastOutcome
    from manymodels.registry import RunInfo

# Markup and emoji codes off: what is printed is data (segment values, errors, names may hold "[/]" or ":smile:",
# which crashed or changed the output); our own colours are Text styles.
# Control characters in data (an ESC starting a terminal sequence, a carriage return) are shown escaped, never sent.
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if chr(c) not in "\n\t"}


def safe(text: str) -> str:
    """`text` with its control characters escaped (`\\x1b`), so data cannot drive the terminal."""
    return text.translate(_CONTROL)


# The width tables take when written to a file or a pipe (rich would take 80 columns and cut names short in a
# CI log or a `| grep`): a table is as wide as its values then, up to this.
PIPED_WIDTH = 1_000


class _DataConsole(Console):
    """A console whose strings are data: no markup, no emoji codes, control characters escaped."""

    def __init__(self, *args: Any, wide_when_piped: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wide_when_piped = wide_when_piped

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(safe(text), **kwargs)

    @property
    def size(self) -> ConsoleDimensions:
        found = super().size
        if self._wide_when_piped and not self.is_terminal and not os.environ.get("COLUMNS"):
            return ConsoleDimensions(PIPED_WIDTH, found.height)
        return found

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


out = _DataConsole(highlight=False, soft_wrap=True, markup=False, emoji=False, wide_when_piped=True)
err = _DataConsole(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)


class _Rate(ProgressColumn):
    """Segments per second, measured over the recent updates (the bar hears of each segment)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f}/s" if speed else "–/s", style="progress.data.speed")


@contextmanager
def segment_progress(label: str) -> Iterator[dict[str, Any]]:
    """Hooks (`on_start`, `on_progress`) that drive a progress bar: segments done / total, rate, ETA.

    Every column but the bar keeps its text whole (no wrapping, no "…"); the bar takes what is left,
    so the line fits 80 columns.
    """
    whole = Column(no_wrap=True)
    progress = Progress(
        TextColumn("{task.description}", style="bold", markup=False,
                   table_column=Column(no_wrap=True, overflow="ellipsis")),
        BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=5)),
        MofNCompleteColumn(table_column=whole),
        _Rate(table_column=whole),
        TimeElapsedColumn(table_column=whole),
        TextColumn("eta", table_column=whole),
        TimeRemainingColumn(table_column=whole),
        console=err,
        transient=False,
        expand=True,
    )
    state: dict[str, Any] = {}

    def on_start(total: int, run_id: str) -> None:
        state["task"] = progress.add_task(f"{label} ({run_id[:8]})", total=total)

    def on_progress(n: int) -> None:
        if "task" in state:
            progress.advance(state["task"], n)

    def on_warning(line: str) -> None:
        progress.console.print(Text.assemble(("warning:", "yellow"), " ", safe(line)), highlight=False)

    with progress:
        yield {"on_start": on_start, "on_progress": on_progress, "on_warning": on_warning}


def train_summary(outcome: TrainOutcome) -> None:
    """The table printed after training: counts, metric spread, where the pack went, wall time."""
    s = outcome.summary
    table = Table(title=f"train {outcome.model}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("run", outcome.run_id)
    constant = int(s.get("segments_constant", 0))
    table.add_row(
        "segments",
        f"{int(s['segments_ok']):,} ok / {int(s['segments_failed']):,} failed of {int(s['segments_total']):,}"
        + (f" ({constant:,} ok but constant: see the warning)" if constant else ""),
    )
    m = outcome.metric
    if f"{m}_mean" in s:
        table.add_row(f"{m} (holdout)", f"mean {s[f'{m}_mean']:.4g}  p50 {s[f'{m}_p50']:.4g}  p95 {s[f'{m}_p95']:.4g}")
    wins = {k[len("won."):]: int(v) for k, v in s.items() if k.startswith("won.")}
    if wins:
        line = "  ".join(f"{name} {n:,}" for name, n in sorted(wins.items(), key=lambda kv: -kv[1]))
        if "baseline_gain_p50" in s:
            line += f"; winners beat the best baseline by {s['baseline_gain_p50']:.1%} (median)"
        table.add_row("won (CV)", line)
    covered = sorted((float(k.split("_")[1]), v) for k, v in s.items() if k.startswith("coverage_") and
                     k.endswith("_p50"))
    if covered:
        table.add_row("intervals (holdout)", "  ".join(
            f"{level:g}%: median coverage {value:.0%} ({int(s.get(f'segments_with_interval_{level:g}', 0)):,} "
            "segments)" for level, value in covered))
    if "regret_p50" in s:
        table.add_row("regret (holdout)", f"{int(s['segments_chose_best']):,} of {int(s['segments_ok']):,} chose the "
                      f"holdout's best candidate; the winner's {m} minus the best's: median {s['regret_p50']:.4g}, "
                      f"mean {s['regret_mean']:.4g}")
    levels = {k[len("level."): -len(f".{m}_base")]: (v, s.get(k[: -len("_base")] + "_reconciled"))
              for k, v in s.items() if k.startswith("level.") and k.endswith(f".{m}_base")}
    if levels:
        table.add_row("levels (holdout)", "  ".join(f"{name} {own:.4g} -> {after:.4g}" for name, (own, after)
                                                    in levels.items() if after is not None)
                      + f"  (median {m}, own -> reconciled)")
    if "segments_carried" in s:
        table.add_row(
            "changed only",
            f"{int(s['segments_trained']):,} trained ({int(s['segments_changed']):,} changed, "
            f"{int(s['segments_new']):,} new), {int(s['segments_carried']):,} carried from the champion, "
            f"{int(s['segments_gone']):,} gone"
            + (f", {int(s['segments_damaged']):,} damaged (trained again)" if s.get("segments_damaged") else "")
            + (f", {int(s['segments_untrusted']):,} in an untrusted format (trained again)"
               if s.get("segments_untrusted") else ""),
        )
    if "segments_resumed" in s:
        kept = int(s["segments_resumed"])
        table.add_row("resumed", f"{kept:,} segment(s) kept from before the run stopped, "
                                 f"{int(s['segments_total']) - kept - int(s.get('segments_carried', 0)):,} fitted now")
    if "fallback_ok" in s:
        groups = int(s["fallback_ok"] + s["fallback_failed"])
        thin = (f"; it forecasts the {int(s['segments_thin_by_fallback']):,} thin segment(s)"
                if s.get("segments_thin_by_fallback") else "")
        table.add_row("fallback", f"{int(s['fallback_ok']):,} ok / {int(s['fallback_failed']):,} failed of {groups:,}"
                                  f"{thin}")
    table.add_row("rows", f"{int(s['rows_total']):,}")
    table.add_row("model pack", f"{outcome.artifact_uri}/model")
    table.add_row("report", f"{outcome.artifact_uri}/report.html")
    table.add_row("wall time", f"{outcome.seconds:.1f} s")
    out.print(table)
    failed_segments(outcome.manifest, outcome.run_id)


def failed_segments(manifest: pd.DataFrame, run_id: str, limit: int = 10) -> None:
    """The first failed segments with their errors."""
    failed = manifest[~mf.is_ok(manifest)]
    if failed.empty:
        return
    table = Table(title=f"failed segments ({len(failed):,})", title_justify="left")
    for col in [*_keys(manifest), "rows", "error"]:
        table.add_column(col)
    for _, row in failed.head(limit).iterrows():
        table.add_row(*[cell_text(row[c]) for c in [*_keys(manifest), "rows", "error"]])
    out.print(table)
    if len(failed) > limit:
        out.print(f"… and {len(failed) - limit:,} more (manymodels show {run_id} --json lists them all)")


def score_summary(outcome: ScoreOutcome) -> None:
    """The table printed after scoring."""
    table = Table(title=f"score {outcome.model}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("run", outcome.run_id + (f" (champion, version {outcome.version})" if outcome.version else ""))
    table.add_row("rows", f"{outcome.rows:,} ({outcome.rows - outcome.rows_without_model:,} predicted)")
    if outcome.rows_fallback:
        table.add_row("fallback", f"{outcome.rows_fallback:,} rows predicted by the fallback model")
    if outcome.rows_damaged:
        table.add_row(
            Text("damaged", style="yellow"),
            f"{outcome.rows_damaged:,} rows predicted by the fallback: their segment's model is damaged "
            "(model_source 'damaged'; train those segments again or roll back)",
        )
    table.add_row(
        "no model",
        f"{outcome.rows_without_model:,} rows in {outcome.segments_without_model:,} segments (prediction is null)",
    )
    if outcome.output is not None:
        table.add_row("scores", str(outcome.output))
    out.print(table)


def forecast_summary(outcome: ForecastOutcome) -> None:
    """The table printed after forecasting."""
    table = Table(title=f"forecast {outcome.model}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("run", outcome.run_id + (f" (version {outcome.version})" if outcome.version else ""))
    start = "each segment's latest rows of --data" if outcome.from_data else "the history kept in the pack"
    table.add_row("forecasts", f"{outcome.segments:,} segments x {outcome.steps} steps, from {start}")
    if outcome.segments_fallback:
        table.add_row("fallback", f"{outcome.segments_fallback:,} of them by the fallback (too thin for a model of "
                                  "their own, or unseen in training)")
    if outcome.segments_without_model:
        table.add_row(Text("no model", style="yellow"),
                      f"{outcome.segments_without_model:,} segments (failed or thin in training: not forecast)")
    if outcome.reconcile is not None and outcome.reconcile_problem is None:
        table.add_row("hierarchy", f"every level forecast and reconciled ({outcome.reconcile}): the segments add up "
                                   "to each level above them at every step (`level` column; `base_prediction`: each "
                                   "level's own forecast)")
    elif outcome.reconcile is not None:
        table.add_row(Text("hierarchy", style="yellow"), f"{outcome.reconcile_problem} (each level's own forecast)")
    if outcome.output is not None:
        table.add_row("written to", str(outcome.output))
    out.print(table)


def runs_table(model: str, runs: list[RunInfo], metric: str, champion: dict[str, int] | None = None) -> None:
    """The runs of a model, newest first; `champion`: segments of the champion each run supplied."""
    from manymodels.jobs.selection import WON  # the segments each candidate won, in a selecting run's metrics

    champion = champion or {}
    table = Table(title=f"runs of {model}", title_justify="left")
    table.add_column("run", no_wrap=True)
    table.add_column("started", no_wrap=True)
    for col in ("status", "ok/failed", f"{metric} p50", "estimator", "champion"):
        table.add_column(col, overflow="fold")
    for r in runs:
        m = r.metrics
        estimator = r.params.get("estimator.entry") or r.params.get("estimator", "")
        won = sorted(((int(v), k[len(WON):]) for k, v in m.items() if k.startswith(WON)), key=lambda w: (-w[0], w[1]))
        if won:  # selection among candidates: the segments each won, most first
            estimator = "won: " + ", ".join(f"{name} {count:,}" for count, name in won)
        served = champion.get(r.run_id)
        table.add_row(
            r.run_id,
            when_text(r.start_time),
            r.status,
            f"{int_text(m.get('segments_ok'))}/{int_text(m.get('segments_failed'))}",
            _num(m.get(f"{metric}_p50")),
            estimator,
            f"{served:,} segments" if served else "",
        )
    out.print(table)
    if champion and not any(r.run_id in champion for r in runs):
        out.print("the champion's segments come from runs older than those listed (--limit shows more)")


def show_run(report: dict[str, Any]) -> None:
    """A run's summary, failed segments and worst segments."""
    table = Table(title=f"run {report['run_id']}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key in ("model", "status", "started", "bundle", "target", "git_commit"):
        if report.get(key):
            table.add_row(key, str(report[key]))
    for key, value in sorted(report["metrics"].items()):
        table.add_row(key, f"{value:.6g}")
    out.print(table)
    params = report.get("params") or {}
    if params:
        shown = Table(title="params", show_header=False, title_justify="left")
        shown.add_column(style="bold", no_wrap=True)
        shown.add_column(overflow="fold")
        for key, value in sorted(params.items()):
            shown.add_row(key, str(value))
        out.print(shown)
    for title in ("failed", "worst"):
        rows = report.get(title) or []
        if not rows:
            continue
        direction = "lowest" if report.get("metric") in HIGHER_IS_BETTER else "highest"
        heading = (
            f"failed segments ({report['segments_failed']:,})"
            if title == "failed"
            else f"worst segments by {report['metric']} ({direction})"
        )
        t = Table(title=heading, title_justify="left")
        for col in rows[0]:
            t.add_column(col)
        for row in rows:
            t.add_row(*[cell_text(v) for v in row.values()])
        out.print(t)


def _keys(manifest: pd.DataFrame) -> list[str]:
    return mf.segment_columns(manifest)


def cell_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def when_text(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def int_text(v: float | None) -> str:
    return "–" if v is None else f"{int(v):,}"


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.4g}"


def _secs(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f} s"
