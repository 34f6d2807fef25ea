"""Commands on a target: deploy, destroy, gc, summary, and running a job."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Any

import typer
from rich.text import Text

from manymodels.cli import render, render_jobs
from manymodels.cli.app import (
    BundleOpt,
    ForceLockOpt,
    TargetOpt,
    VarOpt,
    VersionOpt,
    app,
    checked,
    files_note,
    guarded,
)


@app.command("deploy")
def deploy_cmd(
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Production mode: deploy from a dirty tree or another branch anyway.")
    ] = False,
    force_lock: ForceLockOpt = 0,
) -> None:
    """Create and tag the target's experiments and registered models; record the deployment."""
    from manymodels.jobs.deploy import deploy

    def body() -> int:
        ctx = checked(target, var)
        render_jobs.deploy_summary(deploy(ctx, force=force, force_lock=force_lock))
        return 0

    guarded(body)


@app.command("destroy")
def destroy_cmd(
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Do not ask first.")] = False,
    force_lock: ForceLockOpt = 0,
) -> None:
    """Remove what deploy made for the target (experiments, registered models and their versions), nothing else."""
    from manymodels.jobs.deploy import DestroyPlan, destroy

    def body() -> int:
        ctx = checked(target, var, fits=False)
        config = ctx.config

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

        done = destroy(ctx, approve=approve, force_lock=force_lock)
        if done is None:
            render.out.print("nothing removed")
            return 1
        render.out.print(f"removed {len(done.lines())} item(s) from target {config.target}")
        if done.experiments:
            render.out.print(files_note(done.purged, config.tracking_uri), markup=False)
        return 0

    guarded(body)


@app.command("gc")
def gc_cmd(
    model: Annotated[str, typer.Argument(help="The model family.")],
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    keep: Annotated[int, typer.Option("--keep", min=0, help="How many of the newest training runs to keep.")] = 5,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Do not ask.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would go.")] = False,
    force_lock: ForceLockOpt = 0,
) -> None:
    """Remove a model's old runs and their files: keeps the runs behind champion, previous and challenger,
    and the --keep newest training runs."""
    from manymodels.jobs.prune import PrunePlan, prune, prune_plan

    def body() -> int:
        ctx = checked(target, var, fits=False)
        config = ctx.config

        def show(plan: PrunePlan) -> None:
            for run_id, why in plan.kept.items():
                render.out.print(f"keep   run {run_id}: {why}", markup=False)
            for line in plan.lines():
                render.out.print(f"remove {line}", markup=False)

        if dry_run:
            plan = prune_plan(ctx, model, keep)
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

        done = prune(ctx, model, keep=keep, approve=approve, force_lock=force_lock)
        if done is None:
            render.out.print("nothing removed")
            return 1
        render.out.print(f"removed {len(done.runs)} run(s) and {len(done.versions)} version(s) of {model}")
        if done.runs:
            render.out.print(files_note(done.purged, config.tracking_uri), markup=False)
        return 0

    guarded(body)


@app.command("upload")
def upload_cmd(
    run_id: Annotated[str | None, typer.Argument(help="The run to finish (default: every run kept here).")] = None,
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
) -> None:
    """Log the runs whose end the tracking server missed (their files kept under .manymodels/unsent/) and finish
    them, once the server answers again."""

    def body() -> int:
        from manymodels.errors import RegistryError

        ctx = checked(target, var, fits=False)
        kept = sorted(p for p in ctx.unsent.glob("*") if p.is_dir()) if ctx.unsent.is_dir() else []
        if run_id is not None:
            kept = [p for p in kept if p.name == run_id]
            if not kept:
                raise RegistryError(f"no files of run {run_id} are kept in {ctx.unsent} (nothing to upload)")
        if not kept:
            render.out.print(f"nothing to upload: no run is kept in {ctx.unsent}")
            return 0
        for folder in kept:
            done = ctx.tracker.upload(folder)
            render.out.print(f"run {done}: logged and finished")
        return 0

    guarded(body)


@app.command("verify")
def verify_cmd(
    model: Annotated[str, typer.Argument(help="The model family.")],
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    version: VersionOpt = None,
) -> None:
    """Check a version as serving would, loading no model: its signature (with a signing key), every shard's and
    model's checksum, and that its models' formats are trusted. Exit 1 when anything fails."""
    from manymodels.jobs.verify import verify_version

    def body() -> int:
        ctx = checked(target, var, fits=False)
        done = verify_version(ctx, model, version)
        formats = ", ".join(f"{n} {f}" for f, n in sorted(done.formats.items())) or "no models"
        signed = (f"signature verified with key {done.key}" if done.key is not None else
                  "no signing key configured, so no signature checked (checksums catch damage, not tampering)")
        render.out.print(Text(f"model {model} version {done.version} (run {done.run_id}): {signed}; "
                              f"{done.models} models in {done.shards} shards match their checksums ({formats})"))
        return 0

    guarded(body)


@app.command("sign")
def sign_cmd(
    model: Annotated[str, typer.Argument(help="The model family.")],
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    version: VersionOpt = None,
    run: Annotated[str | None, typer.Option("--run", help="A training run instead of a version.")] = None,
) -> None:
    """Sign a version's pack (or a run's) with the target's signing key, once its files match the checksums they were
    trained with: for packs written before the key was configured. You vouch that nobody else wrote the stores."""
    from manymodels.errors import BundleError
    from manymodels.jobs.verify import sign_version

    def body() -> int:
        if run is not None and version is not None:
            raise BundleError("give --version or --run, not both")
        ctx = checked(target, var, fits=False)
        done = sign_version(ctx, model, version, run)
        what = f"version {done.version} (run {done.run_id})" if done.version is not None else f"run {done.run_id}"
        render.out.print(Text(f"model {model} {what}: signed with key {done.key}"
                              f"{' (its fallback too)' if done.packs > 1 else ''}"))
        return 0

    guarded(body)


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
        ctx = checked(target, var, fits=False)
        report = summary(ctx)
        if as_json:
            sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
        else:
            render_jobs.target_summary(report)
        return 0

    guarded(body)


@app.command("run")
def run_cmd(
    job: Annotated[str, typer.Argument(help="The job (resources.jobs.<name>).")],
    target: TargetOpt = None,
    bundle: BundleOpt = None,
    var: VarOpt = None,
    force_lock: ForceLockOpt = 0,
) -> None:
    """Run a job's tasks in dependency order."""
    from contextlib import ExitStack

    from manymodels.jobs import run_job

    def body() -> int:
        ctx = checked(target, var)
        started = time.perf_counter()
        stack = ExitStack()

        def on_task(task: Any) -> dict[str, object]:
            stack.close()
            render.err.print(Text.assemble((render.safe(f"task {task.key}"), "bold"), f" ({task.kind})"))
            if task.kind == "train":
                return dict(stack.enter_context(render.segment_progress(f"train {task.train}")))
            return {}

        def on_done(outcome: Any) -> None:
            stack.close()
            if outcome.result is not None:
                render_jobs.task_result(outcome.kind, outcome.result)
            if outcome.error and (outcome.result is None or outcome.kind == "evaluate"):
                render.err.print(f"task {outcome.key} {outcome.status}: {outcome.error}", markup=False)

        with stack:
            result = run_job(ctx, job, on_task=on_task, on_done=on_done, force_lock=force_lock)
        render_jobs.job_summary(result, time.perf_counter() - started)
        return 0 if result.ok else 1

    guarded(body)
