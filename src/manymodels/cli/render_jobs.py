"""What `run`, `deploy`, `summary`, `init` and `monitor` print: a job's tasks, a target, a new project, drift."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from manymodels.cli.render import (
    err,
    forecast_summary,
    out,
    safe,
    score_summary,
    train_summary,
)
from manymodels.cli.render_registry import evaluation_summary, promote_summary

if TYPE_CHECKING:
    from pathlib import Path

    from manymodels.jobs import JobOutcome
    from manymodels.jobs.deploy import DeployOutcome
    from manymodels.jobs.monitor import MonitorOutcome


def job_summary(outcome: JobOutcome, seconds: float) -> None:
    """One row per task of a finished job."""
    table = Table(title=f"job {outcome.job} ({seconds:.1f} s)", title_justify="left")
    for col in ("task", "kind", "status", "time"):
        table.add_column(col, no_wrap=True)
    table.add_column("detail", overflow="fold")
    for t in outcome.tasks:
        style = {"ok": "green", "failed": "red", "skipped": "yellow"}[t.status]
        table.add_row(
            t.key, t.kind, Text(t.status, style=style), f"{t.seconds:.1f} s", _detail(t.kind, t.result, t.error)
        )
    out.print(table)


def init_summary(template: str, folder: Path, written: list[Path], targets: list[str], steps: list[str]) -> None:
    """What `init` wrote, and what to do next."""
    out.print(f"{folder}: new project from template {template} ({len(written)} files, targets {', '.join(targets)})")
    for rel in written:
        out.print(f"  {rel.as_posix()}", markup=False)
    out.print("next:")
    for step in steps:
        out.print(f"  {step}", markup=False)


def deploy_summary(outcome: DeployOutcome) -> None:
    """What a deployment created, re-tagged and recorded."""
    if not outcome.changed:
        out.print(f"target {outcome.target}: already deployed (bundle {outcome.bundle_hash}), nothing changed")
        return
    table = Table(title=f"deploy {outcome.target}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("bundle hash", outcome.bundle_hash)
    table.add_row("created", "\n".join(outcome.created) or "–")
    table.add_row("re-tagged", "\n".join(outcome.updated) or "–")
    table.add_row("record", f"run {outcome.record_run}")
    out.print(table)


def target_summary(report: dict[str, Any]) -> None:
    """A target at a glance."""
    table = Table(title=f"{report['bundle']} on target {report['target']}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("mode", str(report["mode"] or "–"))
    table.add_row("tracking", report["tracking_uri"])
    deployment = report["deployment"]
    if deployment is None:
        table.add_row("deployed", "never (manymodels deploy)")
    else:
        state = "current" if deployment["current"] else f"the bundle changed since (now {report['bundle_hash']})"
        table.add_row(
            "deployed",
            f"{deployment['at']} by {deployment['by']}, bundle {deployment['bundle_hash']} ({state}), "
            f"commit {deployment['git_commit'] or '–'}",
        )
    if report.get("lock"):
        table.add_row("lock", f"held by {report['lock']}")
    out.print(table)
    models = Table(title="models", title_justify="left")
    for col in ("model", "registered model", "champion", "latest runs", "lock"):
        models.add_column(col, overflow="fold")
    for name, m in report["models"].items():
        champion = m["champion"]
        runs = ", ".join(f"{r['run_id'][:8]} {r['status']}" for r in m["latest_runs"]) or "–"
        models.add_row(name, m["registered_model"], f"version {champion['version']}" if champion else "–", runs,
                       m.get("lock") or "–")
    out.print(models)


def task_result(kind: str, result: Any) -> None:
    """A finished job task's own summary, as its command would print it (a python task's: in the job summary)."""
    shown: dict[str, Callable[[Any], None]] = {
        "train": train_summary,
        "evaluate": evaluation_summary,
        "promote": promote_summary,
        "score": score_summary,
        "forecast": forecast_summary,
        "monitor": monitor_summary,
    }
    if kind in shown:
        shown[kind](result)


def _detail(kind: str, result: Any, error: str | None) -> str:
    if error:
        return error.splitlines()[0]
    if result is None:
        return ""
    if kind == "train":
        s = result.summary
        return f"run {result.run_id[:8]}: {int(s['segments_ok'])} ok / {int(s['segments_failed'])} failed"
    if kind == "evaluate":
        c = result.counts
        return f"{c['won']} won, {c['lost']} lost, {c['tied']} tied, {c['new']} new: {c['promote']} to promote"
    if kind == "promote":
        return f"champion version {result.version}" if result.version else "nothing promoted"
    if kind == "monitor":
        c = result.counts
        return (f"{c['drifted']:,} drifted, {c['degraded']:,} degraded of {result.judged:,} judged "
                f"({result.drifted_fraction:.1%})")
    if kind == "forecast":
        return (f"{result.segments:,} segments x {result.steps} steps -> {result.output} "
                f"({result.segments_without_model:,} without model)")
    if kind == "python":
        shown = repr(result.value)
        return f"{result.entry} returned {shown[:80] + '…' if len(shown) > 80 else shown}"
    return f"{result.rows:,} rows -> {result.output} ({result.rows_without_model:,} without model)"


def monitor_summary(outcome: MonitorOutcome, limit: int = 15) -> None:
    """Counts, the fleet's verdict and the first segments to look at."""
    head = Table(title=f"monitor {outcome.model}", show_header=False, title_justify="left")
    head.add_column(style="bold", no_wrap=True)
    head.add_column(overflow="fold")
    serving = f"run {outcome.pack_run}" + (f" (version {outcome.version})" if outcome.version else "")
    head.add_row("models", serving)
    head.add_row("on", outcome.data)
    head.add_row("segments", ", ".join(f"{n:,} {s.replace('_', ' ')}" for s, n in outcome.counts.items()))
    verdict = Text.assemble(("breached", "red"), safe(": " + "; ".join(outcome.problems))) if outcome.breached else (
        Text.assemble(("within thresholds", "green"),
                      f" ({outcome.drifted_fraction:.1%} of judged segments drifted or degraded)"))
    if not outcome.breached and outcome.judged == 0:  # no segment had the rows to judge: say so, not "within"
        verdict = Text.assemble(("nothing judged", "yellow"), f": no segment with a model has {outcome.min_rows:,} new "
                                "rows or more (monitoring.min_rows); send more rows per segment, or lower min_rows")
    head.add_row("fleet", verdict)
    import numpy as np

    from manymodels.jobs import drift as d

    judged = outcome.table[d.STATUS].isin([d.OK, d.DRIFTED, d.DEGRADED, d.NO_PROFILE]).to_numpy()
    past = judged & (outcome.table[d.INCREASE].to_numpy(dtype=float) > outcome.metric_increase_max)
    head.add_row("beyond chance", f"a flag needs q < {outcome.significance:g} (the fleet's false discovery rate); "
                                  f"{int(past.sum()):,} judged segment(s) have {outcome.metric} worse than the "
                                  f"holdout's by more than {outcome.metric_increase_max:.0%}, "
                                  f"{outcome.counts[d.DEGRADED]:,} degraded beyond chance")

    if d.COVERAGE in outcome.table.columns:
        covered = outcome.table[d.COVERAGE].to_numpy(dtype=float)
        if np.isfinite(covered).any():
            head.add_row("95% band", f"{np.nanmedian(covered):.0%} of new actuals inside (median of "
                                     f"{int(np.isfinite(covered).sum()):,} segments)")
    if outcome.steps is not None and len(outcome.steps):
        per_step = [f"{int(r['step'])}: {_shown(r[outcome.metric])}" for _, r in outcome.steps.iterrows()
                    if r["segments"]]
        head.add_row(f"{outcome.metric} by step", ", ".join(per_step) or "no new row within the horizon")
    if outcome.output is not None:
        head.add_row("table", str(outcome.output))
    if outcome.run_id:
        head.add_row("logged", f"run {outcome.run_id} (monitoring.parquet, report.html)")
    out.print(head)
    for line in outcome.warnings:
        err.print(f"warning: {line}", markup=False)
    flagged = outcome.table[outcome.table[d.STATUS].isin([d.DEGRADED, d.DRIFTED])]
    shown = flagged.head(limit)
    if shown.empty:
        return
    table = Table(title=f"segments to look at ({len(shown):,} of {len(flagged):,})", title_justify="left")
    columns = [*outcome.segment_by, d.STATUS, d.ROWS, d.WORST_COLUMN, d.PSI_MAX, outcome.metric, d.INCREASE,
               *[c for c in (d.DEGRADED_Q, d.DRIFTED_Q, d.COVERAGE) if c in shown.columns]]
    for column in columns:
        table.add_column(column, overflow="fold")
    for _, row in shown.iterrows():
        table.add_row(*[_shown(row[c]) for c in columns])
    out.print(table)


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.4g}"
    return "" if value is None else str(value)
