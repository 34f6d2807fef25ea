"""`manymodels`: init, validate, schema, train, evaluate, promote, rollback, models, score, run, runs, show,
deploy, destroy, summary.

Exit codes: 0 success; 1 the work failed (every segment failed, a task failed); 2 bad input
(bundle, data, command line), one line per problem, no traceback unless --debug.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from manymodels.bundle import BundleConfig, check_bundle, load_config
from manymodels.bundle.schema import bundle_json_schema
from manymodels.cli import render
from manymodels.errors import BundleError, ManymodelsError

app = typer.Typer(
    name="manymodels",
    help="Train, track and score one model per segment, from a manymodels.yml bundle.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


class _State:
    bundle: Path | None = None
    debug: bool = False


state = _State()

TargetOpt = Annotated[str | None, typer.Option("--target", "-t", help="Target to use (default: the default target).")]


def _bundle_here(value: Path | None) -> Path | None:
    if value is not None:  # given after the command: the same as before it
        state.bundle = value
    return value


BundleOpt = Annotated[
    Path | None,
    typer.Option(
        "--bundle", "-b", help="manymodels.yml or its folder (default: found from the current folder up).",
        callback=_bundle_here,
    ),
]
VarOpt = Annotated[list[str] | None, typer.Option("--var", help="Set a variable: --var key=value (repeatable).")]


def _version(value: bool) -> None:
    if value:
        from manymodels.distribution import version

        render.out.print(f"manymodels {version()}", markup=False)
        raise typer.Exit()


@app.callback()
def _main(
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle", "-b", help="manymodels.yml or its folder (default: found from the current folder up)."
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="Show manymodels' version and exit.", is_eager=True, callback=_version)
    ] = False,
) -> None:
    state.bundle = bundle
    state.debug = debug
    # MLflow's INFO lines (database migrations and the like) and its "View run" links drown our output;
    # MLflow reads these when it is imported (later, by the command), so they are set before. --debug keeps them.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if debug else "WARNING")
    if not debug:
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow").setLevel(logging.DEBUG if debug else logging.WARNING)


def _fail(exc: BaseException) -> NoReturn:
    if state.debug:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, BundleError):
        for line in exc.problems:
            render.err.print(line, markup=False)
    elif isinstance(exc, ManymodelsError):
        render.err.print(f"error: {exc}", markup=False)
    else:
        render.err.print(f"error: {type(exc).__name__}: {exc} (--debug shows the traceback)", markup=False)
    code = exc.exit_code if isinstance(exc, ManymodelsError) else 1
    raise typer.Exit(code)


def _guarded(body: Callable[[], int]) -> None:
    try:
        code = body()
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        render.err.print("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - every error becomes one line and an exit code
        _fail(exc)
    if code:
        raise typer.Exit(code)


def _config(target: str | None, var: list[str] | None) -> BundleConfig:
    values: dict[str, str] = {}
    for item in var or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BundleError(f"--var {item!r}: expected key=value")
        values[key.strip()] = value
    return load_config(state.bundle, target, values)


def _checked(target: str | None, var: list[str] | None) -> BundleConfig:
    config = _config(target, var)
    problems = check_bundle(config, data=False)
    if problems:
        raise BundleError(problems)
    return config


@app.command()
def validate(
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    no_data: Annotated[bool, typer.Option("--no-data", help="Skip the dataset checks.")] = False,
) -> None:
    """Check the bundle: schema, references, variables, import paths, datasets and their columns."""

    def body() -> int:
        config = _config(target, var)
        problems = check_bundle(config, data=not no_data)
        if problems:
            raise BundleError(problems)
        res = config.resolved.resources
        render.out.print(
            f"{config.file.name}: valid for target {config.target} "
            f"({len(res.datasets)} datasets, {len(res.models)} models, {len(res.jobs)} jobs)"
        )
        return 0

    _guarded(body)


@app.command()
def schema() -> None:
    """Print the bundle's JSON schema (for editors)."""
    sys.stdout.write(json.dumps(bundle_json_schema(), indent=2) + "\n")


@app.command("init")
def init_cmd(
    arguments: Annotated[
        list[str],
        typer.Argument(
            metavar="[TEMPLATE] DIR",
            help="The template (default: default) and the new project's folder (new, or empty of its files).",
            show_default=False,
        ),
    ],
    config_file: Annotated[
        Path | None,
        typer.Option("--config-file", help="Answers to the template's questions (YAML or JSON): no prompts."),
    ] = None,
) -> None:
    """Make a new project: `default` (bundle with dev/staging/prod, src/, tests, CI/CD workflows) or `minimal`.

    Asks the template's questions at a terminal; with --config-file, or without a terminal,
    what is not answered takes its default.
    """
    from manymodels import templates

    def body() -> int:
        if len(arguments) > 2:
            raise templates.InitError(f"expected [TEMPLATE] DIR, got {len(arguments)} arguments")
        name, folder = ("default", arguments[0]) if len(arguments) == 1 else arguments
        chosen = templates.template(name)
        given, smap = templates.read_answers(config_file, chosen) if config_file else ({}, None)
        interactive = config_file is None and sys.stdin.isatty()

        def ask(question: templates.Question, default: str) -> str:
            if interactive:
                return str(typer.prompt(question.prompt, default=default, value_proc=checked(question.key)))
            render.err.print(f"{question.key}: {default} (default)", markup=False)
            return default

        def checked(key: str) -> Callable[[str], str]:
            def check(value: str) -> str:
                problem = chosen.check(key, value)
                if problem:  # click shows it and asks again
                    raise typer.BadParameter(f"{key} {problem}")
                return value

            return check

        project = Path(folder)
        answers = templates.resolve_answers(chosen, project, given, ask, smap)
        written = templates.render(chosen, answers, project)
        targets = templates.check_project(project)
        render.init_summary(chosen.name, project, written, targets, templates.next_steps(project, answers))
        for line in templates.install_warnings(answers):
            render.err.print(f"warning: {line}", markup=False)
        return 0

    _guarded(body)


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
    changed_only: Annotated[
        bool,
        typer.Option(
            "--changed-only", help="Fit only segments whose rows or spec differ from the champion's; carry the rest."
        ),
    ] = False,
) -> None:
    """Train one model per segment and log them as one MLflow run."""
    from manymodels.jobs import train

    def body() -> int:
        config = _checked(target, var)
        wanted = [s.strip() for s in segments.split(",") if s.strip()] if segments else None
        with render.segment_progress(f"train {model}") as hooks:
            outcome = train(config, model, segments=wanted, workers=workers, changed_only=changed_only, **hooks)
        render.train_summary(outcome)
        return 0 if outcome.ok else 1

    _guarded(body)


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
) -> None:
    """Predict each row with its segment's model; write the input columns plus `prediction`.

    On a target whose engine is Spark, Spark reads the data and writes the Parquet.
    """
    from manymodels.jobs import score
    from manymodels.jobs.score import score_with_spark
    from manymodels.jobs.train import engine_for

    def body() -> int:
        config = _checked(target, var)
        if config.resolved.engine.kind != "spark":
            render.score_summary(score(config, model, data, output=out, run_id=run))
            return 0
        engine = engine_for(config)
        try:
            engine.start()
            spark = engine.session  # type: ignore[attr-defined]
            outcome = score_with_spark(config, model, spark, data, out, run, partition_by_segment)
            render.score_summary(outcome)
        finally:
            engine.close()
        return 0

    _guarded(body)


ForceLockOpt = Annotated[
    bool, typer.Option("--force-lock", help="Break a lock left by a process that died (check it did first).")
]


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
        config = _checked(target, var)
        if out is not None:
            from manymodels.data import output_format

            output_format(out)  # an unknown suffix is an error before any work
        result = evaluate(config, model, run_id=run, data=data)
        render.evaluation_summary(result, limit)
        if out is not None:
            _write_table(result.table, out)
        return 0 if result.passed else 1

    _guarded(body)


def _write_table(table: Any, path: Path) -> None:
    from manymodels.data import write_table

    write_table(table, path)
    render.out.print(f"table: {path}")


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
    force_lock: ForceLockOpt = False,
) -> None:
    """A new champion version: the challenger where it won, the champion elsewhere (old one: alias previous).

    Refuses (exit 1, nothing promoted) when the evaluation's gate failed, unless --force.
    """
    from manymodels.jobs.promote import promote

    def body() -> int:
        config = _checked(target, var)
        outcome = promote(config, model, run_id=run, take_all=take_all, force_lock=force_lock, force=force)
        render.promote_summary(outcome)
        return 0

    _guarded(body)


@app.command("rollback")
def rollback_cmd(
    model: Annotated[str, typer.Argument(help="The model family.")],
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    to: Annotated[int | None, typer.Option("--to", min=1, help="Version to serve (default: alias previous).")] = None,
    force_lock: ForceLockOpt = False,
) -> None:
    """Point alias champion back at an earlier version, instantly, without retraining."""
    from manymodels.jobs.promote import rollback

    def body() -> int:
        config = _checked(target, var)
        render.rollback_summary(rollback(config, model, to=to, force_lock=force_lock))
        return 0

    _guarded(body)


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
        config = _checked(target, var)
        if model is None:
            rows = models_overview(config)
            if as_json:
                sys.stdout.write(json.dumps(rows, indent=2) + "\n")
            else:
                render.models_table(rows)
            return 0
        config.model(model)
        registered, versions = model_versions(config, model)
        if as_json:
            doc = {"model": model, "registered_model": registered, "versions": [asdict(v) for v in versions]}
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        else:
            render.versions_table(model, registered, versions)
        return 0

    _guarded(body)


@app.command("deploy")
def deploy_cmd(
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Production mode: deploy from a dirty tree or another branch anyway.")
    ] = False,
    force_lock: ForceLockOpt = False,
) -> None:
    """Create and tag the target's experiments and registered models; record the deployment."""
    from manymodels.jobs.deploy import deploy

    def body() -> int:
        config = _checked(target, var)
        render.deploy_summary(deploy(config, force=force, force_lock=force_lock))
        return 0

    _guarded(body)


@app.command("destroy")
def destroy_cmd(
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Do not ask first.")] = False,
    force_lock: ForceLockOpt = False,
) -> None:
    """Remove what deploy made for the target (experiments, registered models and their versions), nothing else."""
    from manymodels.jobs.deploy import DestroyPlan, destroy

    def body() -> int:
        config = _checked(target, var)

        def approve(plan: DestroyPlan) -> bool:
            if not plan.lines():
                return True
            render.out.print(f"destroy removes from target {config.target}:", markup=False)
            for line in plan.lines():
                render.out.print(f"  {line}", markup=False)
            if auto_approve:
                return True
            try:
                return typer.confirm("Remove them?", default=False)
            except typer.Abort:  # no answer (no terminal, end of input) is no
                return False

        done = destroy(config, approve=approve, force_lock=force_lock)
        if done is None:
            render.out.print("nothing removed")
            return 1
        render.out.print(f"removed {len(done.lines())} item(s) from target {config.target}")
        if done.experiments:
            render.out.print(_files_note(done.purged, config.tracking_uri), markup=False)
        return 0

    _guarded(body)


def _files_note(purged: bool, tracking_uri: str) -> str:
    if purged:
        return "their runs and files were removed from this machine's store"
    return (
        f"the server at {tracking_uri} keeps the deleted runs' files until its operator runs "
        f"`mlflow gc --backend-store-uri <its store>` (with MLFLOW_TRACKING_URI={tracking_uri})"
    )


@app.command("gc")
def gc_cmd(
    model: Annotated[str, typer.Argument(help="The model family.")],
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    keep: Annotated[int, typer.Option("--keep", min=0, help="How many of the newest training runs to keep.")] = 5,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Do not ask.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would go.")] = False,
    force_lock: ForceLockOpt = False,
) -> None:
    """Remove a model's old runs and their files: keeps the runs behind champion, previous and challenger,
    and the --keep newest training runs."""
    from manymodels.jobs.prune import PrunePlan, prune, prune_plan

    def body() -> int:
        config = _checked(target, var)

        def show(plan: PrunePlan) -> None:
            for run_id, why in plan.kept.items():
                render.out.print(f"keep   run {run_id}: {why}", markup=False)
            for line in plan.lines():
                render.out.print(f"remove {line}", markup=False)

        if dry_run:
            plan = prune_plan(config, model, keep)
            show(plan)
            render.out.print(f"{len(plan.runs)} run(s) would be removed (--dry-run: nothing was)", markup=False)
            return 0

        def approve(plan: PrunePlan) -> bool:
            show(plan)
            if not plan.runs or auto_approve:
                return True
            try:
                return typer.confirm(f"Remove {len(plan.runs)} run(s)?", default=False)
            except typer.Abort:  # no answer (no terminal, end of input) is no
                return False

        done = prune(config, model, keep=keep, approve=approve, force_lock=force_lock)
        if done is None:
            render.out.print("nothing removed")
            return 1
        render.out.print(f"removed {len(done.runs)} run(s) and {len(done.versions)} version(s) of {model}")
        if done.runs:
            render.out.print(_files_note(done.purged, config.tracking_uri), markup=False)
        return 0

    _guarded(body)


@app.command("summary")
def summary_cmd(
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (with the resolved bundle).")] = False,
) -> None:
    """The target: resolved bundle, last deployment, each model's champion and latest runs."""
    from manymodels.jobs.deploy import summary

    def body() -> int:
        config = _checked(target, var)
        report = summary(config)
        if as_json:
            sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
        else:
            render.target_summary(report)
        return 0

    _guarded(body)


@app.command("run")
def run_cmd(
    job: Annotated[str, typer.Argument(help="The job (resources.jobs.<name>).")],
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    force_lock: ForceLockOpt = False,
) -> None:
    """Run a job's tasks in dependency order."""
    from contextlib import ExitStack

    from manymodels.jobs import run_job

    def body() -> int:
        config = _checked(target, var)
        started = time.perf_counter()
        stack = ExitStack()

        def on_task(task: Any) -> dict[str, object]:
            stack.close()
            render.err.print(f"[bold]task {task.key}[/] ({task.kind})")
            if task.kind == "train":
                return dict(stack.enter_context(render.segment_progress(f"train {task.train}")))
            return {}

        def on_done(outcome: Any) -> None:
            stack.close()
            shown: dict[str, Callable[[Any], None]] = {
                "train": render.train_summary,
                "evaluate": render.evaluation_summary,
                "promote": render.promote_summary,
                "score": render.score_summary,
                "python": lambda _: None,  # the job summary shows what it returned
            }
            if outcome.result is not None:
                shown[outcome.kind](outcome.result)
            if outcome.error and (outcome.result is None or outcome.kind == "evaluate"):
                render.err.print(f"task {outcome.key} {outcome.status}: {outcome.error}", markup=False)

        with stack:
            result = run_job(config, job, on_task=on_task, on_done=on_done, force_lock=force_lock)
        render.job_summary(result, time.perf_counter() - started)
        return 0 if result.ok else 1

    _guarded(body)


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
        config = _checked(target, var)
        runs = Project(config).runs(model, limit=limit)
        render.runs_table(model, runs, config.model(model).primary_metric, champion_sources(config, model))
        return 0

    _guarded(body)


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
        config = _checked(target, var)
        report = run_report(config, run_id, worst=worst, failed_limit=None if as_json else 20)
        if as_json:
            sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
        else:
            render.show_run(report)
        return 0

    _guarded(body)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
