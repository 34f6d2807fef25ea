"""Rich output for the CLI: progress bars and the summary tables of train, score, jobs and runs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Console
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
from rich.table import Table
from rich.text import Text

from manymodels.bundle.schema import HIGHER_IS_BETTER

if TYPE_CHECKING:  # the jobs layer pulls in MLflow; `--help` and `validate` need none of it
    from manymodels.jobs import JobOutcome, ScoreOutcome, TrainOutcome
    from manymodels.registry import RunInfo

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} seg/s" if speed else "– seg/s", style="progress.data.speed")


@contextmanager
def segment_progress(label: str) -> Iterator[dict[str, Any]]:
    """Hooks (`on_start`, `on_progress`) that drive a progress bar: segments done / total, rate, ETA."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("segments"),
        _Rate(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )
    state: dict[str, Any] = {}

    def on_start(total: int, run_id: str) -> None:
        state["task"] = progress.add_task(f"{label} (run {run_id[:8]})", total=total)

    def on_progress(n: int) -> None:
        if "task" in state:
            progress.advance(state["task"], n)

    def on_warning(line: str) -> None:
        progress.console.print(f"[yellow]warning:[/] {line}", highlight=False)

    with progress:
        yield {"on_start": on_start, "on_progress": on_progress, "on_warning": on_warning}


def train_summary(outcome: TrainOutcome) -> None:
    """The table printed after training: counts, metric spread, where the pack went, wall time."""
    s = outcome.summary
    table = Table(title=f"train {outcome.model}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("run", outcome.run_id)
    table.add_row(
        "segments",
        f"{int(s['segments_ok']):,} ok / {int(s['segments_failed']):,} failed of {int(s['segments_total']):,}",
    )
    m = outcome.metric
    if f"{m}_mean" in s:
        table.add_row(f"{m} (holdout)", f"mean {s[f'{m}_mean']:.4g}  p50 {s[f'{m}_p50']:.4g}  p95 {s[f'{m}_p95']:.4g}")
    table.add_row("rows", f"{int(s['rows_total']):,}")
    table.add_row("model pack", f"{outcome.artifact_uri}/model")
    table.add_row("wall time", f"{outcome.seconds:.1f} s")
    out.print(table)
    failed_segments(outcome.manifest)


def failed_segments(manifest: pd.DataFrame, limit: int = 10) -> None:
    """The first failed segments with their errors."""
    failed = manifest[manifest["status"] != "ok"]
    if failed.empty:
        return
    table = Table(title=f"failed segments ({len(failed):,})", title_justify="left")
    for col in [*_keys(manifest), "rows", "error"]:
        table.add_column(col)
    for _, row in failed.head(limit).iterrows():
        table.add_row(*[_cell(row[c]) for c in [*_keys(manifest), "rows", "error"]])
    out.print(table)
    if len(failed) > limit:
        out.print(f"… and {len(failed) - limit:,} more (manymodels show RUN_ID --json lists them all)")


def score_summary(outcome: ScoreOutcome) -> None:
    """The table printed after scoring."""
    table = Table(title=f"score {outcome.model}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("run", outcome.run_id)
    table.add_row("rows", f"{outcome.rows:,} ({outcome.rows - outcome.rows_without_model:,} predicted)")
    table.add_row(
        "no model",
        f"{outcome.rows_without_model:,} rows in {outcome.segments_without_model:,} segments (prediction is null)",
    )
    if outcome.output is not None:
        table.add_row("scores", str(outcome.output))
    out.print(table)


def job_summary(outcome: JobOutcome, seconds: float) -> None:
    """One row per task of a finished job."""
    table = Table(title=f"job {outcome.job} ({seconds:.1f} s)", title_justify="left")
    for col in ("task", "kind", "status", "time"):
        table.add_column(col, no_wrap=True)
    table.add_column("detail", overflow="fold")
    for t in outcome.tasks:
        style = {"ok": "green", "failed": "red", "skipped": "yellow"}[t.status]
        table.add_row(
            t.key, t.kind, f"[{style}]{t.status}[/]", f"{t.seconds:.1f} s", _detail(t.kind, t.result, t.error)
        )
    out.print(table)


def runs_table(model: str, runs: list[RunInfo], metric: str) -> None:
    """The runs of a model, newest first."""
    table = Table(title=f"runs of {model}", title_justify="left")
    table.add_column("run", no_wrap=True)
    for col in ("started", "status", "segments ok", "failed", f"{metric} p50", "wall"):
        table.add_column(col)
    for r in runs:
        m = r.metrics
        table.add_row(
            r.run_id,
            _when(r.start_time),
            r.status,
            _int(m.get("segments_ok")),
            _int(m.get("segments_failed")),
            _num(m.get(f"{metric}_p50")),
            _secs(m.get("wall_seconds")),
        )
    out.print(table)


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
            t.add_row(*[_cell(v) for v in row.values()])
        out.print(t)


def _detail(kind: str, result: Any, error: str | None) -> str:
    if error:
        return error.splitlines()[0]
    if result is None:
        return ""
    if kind == "train":
        s = result.summary
        return f"run {result.run_id[:8]}: {int(s['segments_ok'])} ok / {int(s['segments_failed'])} failed"
    return f"{result.rows:,} rows -> {result.output} ({result.rows_without_model:,} without model)"


def _keys(manifest: pd.DataFrame) -> list[str]:
    return list(manifest.columns[: list(manifest.columns).index("segment_index")])


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _int(v: float | None) -> str:
    return "–" if v is None else f"{int(v):,}"


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.4g}"


def _secs(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f} s"
