"""Commands on a model family's fleet: train, score, evaluate, promote, rollback, models, runs, show, report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from manymodels.cli import render, render_registry
from manymodels.cli.app import (
    BundleOpt,
    ForceLockOpt,
    TargetOpt,
    VarOpt,
    app,
    checked,
    guarded,
    write_table,
)


@app.command("train")
def train_cmd(
    model: Annotated[str, typer.Argument(help="The model family (resources.models.<name>).")],
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    segments: Annotated[
        str | None,
        typer.Option(help="Only these segments, comma-separated (several segment_by columns: values joined by '|')."),
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Processes to fit on (default: cores).")] = None,
    segments_from: Annotated[
        str | None,
        typer.Option("--segments-from", help="Only the segments a monitoring run flagged: monitor:RUN_ID."),
    ] = None,
    changed_only: Annotated[
        bool,
        typer.Option(
            "--changed-only", help="Fit only segments whose rows or spec differ from the champion's; carry the rest."
        ),
    ] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="RUN_ID",
            help="Finish a training run that died or was stopped: fit the segments it had left, keep the rest.",
        ),
    ] = None,
) -> None:
    """Train one model per segment and log them as one MLflow run."""
    from manymodels.cli.app import Terminated
    from manymodels.jobs import train

    def body() -> int:
        ctx = checked(target, var)
        wanted = [s.strip() for s in segments.split(",") if s.strip()] if segments else None
        if segments_from is not None:
            from manymodels.jobs.monitor import flagged_segments

            kind, _, run_id = segments_from.partition(":")
            if kind != "monitor" or not run_id:
                render.err.print(f"--segments-from takes monitor:RUN_ID; got {segments_from!r}", markup=False)
                return 2
            wanted = [*(wanted or []), *flagged_segments(ctx, model, run_id)]
            if not wanted:
                render.out.print(f"monitoring run {run_id} flagged no segment: nothing to train", markup=False)
                return 0
        started: list[str] = []
        try:
            with render.segment_progress(f"train {model}") as hooks:
                begin = hooks["on_start"]

                def on_start(total: int, run_id: str) -> None:
                    started.append(run_id)
                    begin(total, run_id)

                hooks["on_start"] = on_start
                outcome = train(ctx, model, segments=wanted, workers=workers, changed_only=changed_only,
                                resume=resume, **hooks)
        except (KeyboardInterrupt, Terminated):
            if started:
                render.err.print(
                    f"run {started[0]} stopped: `manymodels train {model} --resume {started[0]}` fits the segments "
                    "it had left and keeps those it finished",
                    markup=False,
                )
            raise
        render.train_summary(outcome)
        return 0 if outcome.ok else 1

    guarded(body)


@app.command("score")
def score_cmd(
    model: Annotated[str, typer.Argument(help="The model family.")],
    data: Annotated[str, typer.Option("--data", help="A dataset of the bundle, or a Parquet/CSV path.")],
    out: Annotated[
        Path, typer.Option("--out", help="Where to write the scores: .parquet or .csv (a Spark target: a folder).")
    ],
    run: Annotated[str | None, typer.Option("--run", help="Training run to use (default: latest successful).")] = None,
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    partition_by_segment: Annotated[
        bool, typer.Option("--partition-by-segment", help="Spark targets: one output folder per segment.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Local engine: processes to score on (default: cores).")
    ] = None,
) -> None:
    """Predict each row with its segment's model; write the input columns plus `prediction`.

    On a target whose engine is Spark, Spark reads the data and writes the Parquet.
    """
    from manymodels.jobs import score

    def body() -> int:
        ctx = checked(target, var, fits=False)
        outcome = score(ctx, model, data, output=out, run_id=run, partition_by_segment=partition_by_segment,
                        workers=workers)
        render.score_summary(outcome)
        return 0

    guarded(body)


@app.command("forecast")
def forecast_cmd(
    model: Annotated[str, typer.Argument(help="The model family (task forecast).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the forecasts: .parquet or .csv.")],
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    horizon: Annotated[
        int | None, typer.Option("--horizon", min=1, help="Steps to forecast (default: the trained horizon).")
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", help="Newer history to start from: a dataset or a Parquet/CSV path (default: the "
                                    "history the models were trained on, kept in the pack)."),
    ] = None,
    known: Annotated[
        str | None,
        typer.Option("--known", help="Future values of the known features: a dataset or a Parquet/CSV path."),
    ] = None,
    version: Annotated[int | None, typer.Option("--version", min=1, help="Registered version to use.")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Training run to use.")] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Local engine: processes to forecast on (default: cores).")
    ] = None,
    level: Annotated[
        list[float] | None,
        typer.Option("--level", help="Add a prediction interval at this level (percent; repeat for more): columns "
                                     "lo-<level> and hi-<level>, conformal per segment from its validation windows."),
    ] = None,
) -> None:
    """Forecast the next steps of every segment: rows of segment, time, step, prediction, model_source (and
    lo-<level>, hi-<level> per --level).

    Uses the champion version once there is one, else the latest training run (or --version / --run).
    """
    from manymodels.jobs.forecast import forecast

    def body() -> int:
        ctx = checked(target, var, fits=False)
        outcome = forecast(ctx, model, horizon=horizon, data=data, known=known, output=out, run_id=run,
                           version=version, workers=workers, levels=level or ())
        render.forecast_summary(outcome)
        return 0

    guarded(body)


@app.command("evaluate")
def evaluate_cmd(
    model: Annotated[str, typer.Argument(help="The model family.")],
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    run: Annotated[str | None, typer.Option("--run", help="Challenger run (default: latest successful).")] = None,
    data: Annotated[
        str | None, typer.Option("--data", help="Evaluate on all rows of this dataset or file (default: holdout).")
    ] = None,
    limit: Annotated[int, typer.Option(min=0, help="How many segments to list (lost first).")] = 20,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the whole table (Parquet, or CSV).")] = None,
) -> None:
    """Challenger against champion, per segment, on the same rows; exit 1 when the promotion gate fails.

    The table is saved with the challenger's run (where `promote` reads it) and alias
    `challenger` points at the run's version.
    """
    from manymodels.jobs.evaluate import evaluate

    def body() -> int:
        ctx = checked(target, var, fits=False)
        if out is not None:
            from manymodels.data import output_format

            output_format(out)  # an unknown suffix is an error before any work
        result = evaluate(ctx, model, run_id=run, data=data)
        render_registry.evaluation_summary(result, limit)
        if out is not None:
            write_table(result.table, out)
        return 0 if result.passed else 1

    guarded(body)


@app.command("promote")
def promote_cmd(
    model: Annotated[str, typer.Argument(help="The model family.")],
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    run: Annotated[str | None, typer.Option("--run", help="Challenger run (default: latest successful).")] = None,
    take_all: Annotated[
        bool, typer.Option("--all", help="Take every segment the challenger has a model for, won or not.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Promote the segments that won even though the evaluation's gate failed.")
    ] = False,
    force_lock: ForceLockOpt = 0,
) -> None:
    """A new champion version: the challenger where it won, the champion elsewhere (old one: alias previous).

    Refuses (exit 1, nothing promoted) when the evaluation's gate failed, unless --force.
    """
    from manymodels.jobs.promote import promote

    def body() -> int:
        ctx = checked(target, var, fits=False)
        outcome = promote(ctx, model, run_id=run, take_all=take_all, force_lock=force_lock, force=force)
        render_registry.promote_summary(outcome)
        return 0

    guarded(body)


@app.command("rollback")
def rollback_cmd(
    model: Annotated[str, typer.Argument(help="The model family.")],
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    to: Annotated[int | None, typer.Option("--to", min=1, help="Version to serve (default: alias previous).")] = None,
    force_lock: ForceLockOpt = 0,
) -> None:
    """Point alias champion back at an earlier version, instantly, without retraining."""
    from manymodels.jobs.promote import rollback

    def body() -> int:
        ctx = checked(target, var, fits=False)
        render_registry.rollback_summary(rollback(ctx, model, to=to, force_lock=force_lock))
        return 0

    guarded(body)


@app.command("models")
def models_cmd(
    model: Annotated[str | None, typer.Argument(help="A model family: list its versions.")] = None,
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The bundle's model families and their champions, or one family's versions."""
    from dataclasses import asdict

    from manymodels.jobs.promote import model_versions, models_overview

    def body() -> int:
        ctx = checked(target, var, fits=False)
        config = ctx.config
        if model is None:
            rows = models_overview(ctx)
            if as_json:
                sys.stdout.write(json.dumps(rows, indent=2) + "\n")
            else:
                render_registry.models_table(rows)
            return 0
        config.model(model)
        registered, versions = model_versions(ctx, model)
        if as_json:
            doc = {"model": model, "registered_model": registered, "versions": [asdict(v) for v in versions]}
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        else:
            render_registry.versions_table(model, registered, versions)
        return 0

    guarded(body)



@app.command("runs")
def runs_cmd(
    model: Annotated[str, typer.Argument(help="The model family.")],
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="How many runs, newest first.")] = 20,
) -> None:
    """List a model's training runs, newest first, with the estimator and which runs the champion serves."""
    from manymodels.jobs import Project
    from manymodels.jobs.promote import champion_sources

    def body() -> int:
        ctx = checked(target, var, fits=False)
        config = ctx.config
        runs = Project(config).runs(model, limit=limit)
        render.runs_table(model, runs, config.model(model).primary_metric, champion_sources(ctx, model))
        return 0

    guarded(body)


@app.command("show")
def show_cmd(
    run_id: Annotated[str, typer.Argument(help="The training run's id.")],
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (every failed segment).")] = False,
    worst: Annotated[int, typer.Option(min=0, help="How many worst segments to list.")] = 10,
) -> None:
    """Show one run: summary metrics, failed segments with their errors, worst segments."""
    from manymodels.jobs.report import run_report

    def body() -> int:
        ctx = checked(target, var, fits=False)
        report = run_report(ctx, run_id, worst=worst, failed_limit=None if as_json else 20)
        if as_json:
            sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
        else:
            render.show_run(report)
        return 0

    guarded(body)


@app.command("report")
def report_cmd(
    model: Annotated[str, typer.Argument(help="The model family.")],
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    run: Annotated[str | None, typer.Option("--run", help="The run to show (a training or promotion run).")] = None,
    version: Annotated[int | None, typer.Option("--version", min=1, help="The registered version to show.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Where to write the page.")] = Path("report.html"),
    segment: Annotated[str | None, typer.Option(
        "--segment", help="A forecast's one segment (its values joined by '|'): its own page.")] = None,
) -> None:
    """Write one self-contained HTML page of a run: the fleet's metrics, worst segments, failures, evaluations.

    Default: the champion's run, else the latest training run; `--run` may name a training, promotion or
    monitoring run. A forecast's page draws its worst segments and any other one picked on the page;
    `--segment KEY` writes one segment's page. The page needs no network to view.
    """
    from manymodels.jobs.report import html_report, segment_report
    from manymodels.report import write_page

    def body() -> int:
        if run is not None and version is not None:
            render.err.print("give --run or --version, not both")
            return 2
        ctx = checked(target, var, fits=False)
        if segment is not None:
            made = segment_report(ctx, model, segment, run_id=run, version=version)
        else:
            made = html_report(ctx, model, run_id=run, version=version)
        path = write_page(out, made.html)
        shown = f"version {made.version}, run {made.run_id}" if made.version is not None else f"run {made.run_id}"
        evaluations = f", {len(made.evaluations)} evaluation(s)" if made.evaluations else ""
        render.out.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {made.kind} report of {model}, "
                         f"{shown}{evaluations}", markup=False)
        return 0

    guarded(body)


@app.command("monitor")
def monitor_cmd(
    model: Annotated[str, typer.Argument(help="The model family.")],
    data: Annotated[str, typer.Option("--data", help="New rows: a dataset of the bundle, or a Parquet/CSV path.")],
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    version: Annotated[
        int | None, typer.Option("--version", min=1, help="The version to judge (default: the champion).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write the per-segment table (.parquet or .csv).")
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Local engine: processes to use.")] = None,
) -> None:
    """Per segment: drift (PSI, KS) of each feature and of the predictions against training, and the metric when
    the rows carry the label. Exit 1 when the fleet breaches the model's `monitoring` thresholds."""
    from manymodels.cli.render_jobs import monitor_summary
    from manymodels.jobs.monitor import monitor

    def body() -> int:
        ctx = checked(target, var, fits=False)
        outcome = monitor(ctx, model, data, version=version, output=out, workers=workers)
        monitor_summary(outcome)
        return 1 if outcome.breached else 0

    guarded(body)
