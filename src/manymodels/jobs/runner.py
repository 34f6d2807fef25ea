"""Run a job: its tasks in dependency order; a failed task skips the tasks that depend on it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from manymodels.bundle import BundleConfig, TaskSpec
from manymodels.errors import BundleError, ManymodelsError
from manymodels.jobs.deploy import holding_target
from manymodels.jobs.evaluate import Evaluation, evaluate
from manymodels.jobs.promote import PromoteOutcome, promote
from manymodels.jobs.score import ScoreOutcome, score, score_with_spark
from manymodels.jobs.train import TrainOutcome, engine_for, train


@dataclass
class PythonOutcome:
    """What a python task's function returned (shown shortened in the job's summary)."""

    entry: str
    value: Any


Result = TrainOutcome | Evaluation | PromoteOutcome | ScoreOutcome | PythonOutcome


@dataclass
class TaskOutcome:
    """One task's end: `ok`, `failed` or `skipped`, with what it produced or why it failed."""

    key: str
    kind: str
    status: str
    seconds: float = 0.0
    error: str | None = None
    result: Result | None = None


@dataclass
class JobOutcome:
    """A job's end: every task's outcome, in the order they ran."""

    job: str
    tasks: list[TaskOutcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every task succeeded."""
        return all(t.status == "ok" for t in self.tasks)


def task_order(tasks: list[TaskSpec]) -> list[TaskSpec]:
    """Tasks sorted so each comes after what it depends on; ties keep the bundle's order."""
    done: set[str] = set()
    ordered: list[TaskSpec] = []
    pending = list(tasks)
    while pending:
        ready = [t for t in pending if set(t.depends_on) <= done]
        if not ready:
            raise BundleError(f"tasks {', '.join(t.key for t in pending)} depend on each other in a cycle")
        task = ready[0]
        ordered.append(task)
        done.add(task.key)
        pending.remove(task)
    return ordered


def run_job(
    config: BundleConfig,
    name: str,
    on_task: Callable[[TaskSpec], dict[str, object]] | None = None,
    on_done: Callable[[TaskOutcome], None] | None = None,
    spark: Any = None,
    force_lock: bool = False,
) -> JobOutcome:
    """Run a job's tasks in dependency order.

    On a Spark target (or with `spark=` a session) every task runs on one Spark session: training
    on the cluster, scoring read and written by Spark.

    Args:
        config: the bundle resolved for a target.
        name: the job.
        on_task: called before each task; returns extra keyword arguments for it (progress hooks).
        on_done: called after each task with its outcome.
        spark: a SparkSession to run on instead of the target's engine.
        force_lock: break a target lock left by a process that died.

    Raises:
        LockedError: a deploy, destroy or another run of this target is going on.
    """
    jobs = config.resolved.resources.jobs
    if name not in jobs:
        from manymodels.bundle.messages import did_you_mean

        hint = did_you_mean(name, jobs) or f" (jobs: {', '.join(jobs) or 'none'})"
        raise BundleError(f"{config.file.name}: no job {name!r} in resources.jobs{hint}")
    ordered = task_order(jobs[name].tasks)
    with holding_target(config, f"run {name}", force_lock):
        return _run(config, ordered, name, on_task, on_done, spark)


def _run(
    config: BundleConfig,
    ordered: list[TaskSpec],
    name: str,
    on_task: Callable[[TaskSpec], dict[str, object]] | None,
    on_done: Callable[[TaskOutcome], None] | None,
    spark: Any,
) -> JobOutcome:
    outcome = JobOutcome(name)
    failed: set[str] = set()
    trained: dict[str, str] = {}
    engine = None
    if spark is None and config.resolved.engine.kind == "spark":
        engine = engine_for(config)  # one session for the whole job: the JVM starts once
        engine.start()
        spark = engine.session  # type: ignore[attr-defined]
    try:
        for task in ordered:
            blocked = [d for d in task.depends_on if d in failed]
            if blocked:
                done = TaskOutcome(task.key, task.kind, "skipped", error=f"depends on failed task {blocked[0]}")
                failed.add(task.key)
            else:
                done = _run_task(config, task, trained, on_task(task) if on_task else {}, spark)
                if done.status != "ok":
                    failed.add(task.key)
            outcome.tasks.append(done)
            if on_done:
                on_done(done)
    finally:
        if engine is not None:
            engine.close()
    return outcome


def _run_task(
    config: BundleConfig, task: TaskSpec, trained: dict[str, str], hooks: dict[str, object], spark: Any
) -> TaskOutcome:
    start = time.perf_counter()
    result: Result
    error = None
    try:
        if task.train is not None:
            trained_run = train(
                config,
                task.train,
                spark=spark,
                changed_only=task.changed_only,
                **hooks,  # type: ignore[arg-type]
            )
            trained[task.train] = trained_run.run_id
            error = None if trained_run.ok else "every segment failed"
            result = trained_run
        elif task.evaluate is not None:
            # A model trained earlier in this job is the challenger; else its latest run.
            spec = task.evaluate
            evaluation = evaluate(config, spec.model, run_id=trained.get(spec.model), data=spec.data)
            error = None if evaluation.passed else "gate: " + "; ".join(evaluation.problems)
            result = evaluation
        elif task.python is not None:
            result = PythonOutcome(task.python, call_python(config, task.python, task.parameters))
        elif task.promote is not None:
            model = task.promote.model
            result = promote(
                config, model, run_id=trained.get(model), take_all=task.promote.all, force=task.promote.force
            )
            trained.pop(model, None)  # from here on the champion serves (new, or kept)
        else:
            assert task.score is not None  # noqa: S101 - a task has exactly one kind (schema)
            spec_score = task.score
            run_id = spec_score.run or trained.get(spec_score.model)  # a run trained in this job scores
            output = config.resolve_path(spec_score.output)
            if spark is not None:
                result = score_with_spark(config, spec_score.model, spark, spec_score.dataset, output, run_id)
            else:
                result = score(config, spec_score.model, spec_score.dataset, output, run_id)
    except ManymodelsError as exc:
        return TaskOutcome(task.key, task.kind, "failed", time.perf_counter() - start, str(exc))
    status = "ok" if error is None else "failed"
    return TaskOutcome(task.key, task.kind, status, time.perf_counter() - start, error, result)


def call_python(config: BundleConfig, entry: str, parameters: dict[str, Any]) -> Any:
    """Call a python task's function with its parameters; its failure is the task's (a ManymodelsError).

    The bundle's folder and its `src/` are importable, as for estimators, and the function runs
    in the bundle's folder, so relative paths in its parameters mean what they mean in the bundle.
    """
    from contextlib import chdir

    from manymodels.estimators import add_import_roots, resolve_entry

    add_import_roots([str(config.root / "src"), str(config.root)])
    function = resolve_entry(entry)
    try:
        with chdir(config.root):
            return function(**parameters)
    except Exception as exc:  # noqa: BLE001 - a user function's error fails its task, not the job runner
        text = str(exc).strip().splitlines()
        raise TaskError(f"{entry} raised {type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")) from exc


class TaskError(ManymodelsError):
    """A job task's own code failed."""
