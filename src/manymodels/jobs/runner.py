"""Run a job: its tasks in dependency order; a failed task skips the tasks that depend on it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from manymodels.bundle import TaskSpec
from manymodels.engines import Engine
from manymodels.errors import BundleError, ManymodelsError
from manymodels.jobs.context import Target
from manymodels.jobs.deploy import holding_target
from manymodels.jobs.evaluate import Evaluation, evaluate
from manymodels.jobs.forecast import ForecastOutcome, forecast
from manymodels.jobs.monitor import MonitorOutcome, monitor
from manymodels.jobs.promote import PromoteOutcome, promote
from manymodels.jobs.score import ScoreOutcome, score
from manymodels.jobs.train import TrainOutcome, train


@dataclass
class PythonOutcome:
    """What a python task's function returned (shown shortened in the job's summary)."""

    entry: str
    value: Any


Result = TrainOutcome | Evaluation | PromoteOutcome | ScoreOutcome | ForecastOutcome | MonitorOutcome | PythonOutcome


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
    target: Target,
    name: str,
    on_task: Callable[[TaskSpec], dict[str, object]] | None = None,
    on_done: Callable[[TaskOutcome], None] | None = None,
    force_lock: int = 0,
) -> JobOutcome:
    """Run a job's tasks in dependency order, every one on one engine (a Spark target's JVM starts once).

    Args:
        target: the bundle resolved for a target (and the Spark session to run on, if it holds one).
        name: the job.
        on_task: called before each task; returns extra keyword arguments for it (progress hooks).
        on_done: called after each task with its outcome.
        force_lock: break a target lock left by a process that died.

    Raises:
        LockedError: a deploy, destroy or another run of this target is going on.
    """
    config = target.config
    jobs = config.resolved.resources.jobs
    if name not in jobs:
        from manymodels.bundle.messages import did_you_mean

        hint = did_you_mean(name, jobs) or f" (jobs: {', '.join(jobs) or 'none'})"
        raise BundleError(f"{config.file.name}: no job {name!r} in resources.jobs{hint}")
    ordered = task_order(jobs[name].tasks)
    with holding_target(target, f"run {name}", force_lock), target.engine() as engine:
        return _run(target, ordered, name, on_task, on_done, engine)


def _run(
    target: Target,
    ordered: list[TaskSpec],
    name: str,
    on_task: Callable[[TaskSpec], dict[str, object]] | None,
    on_done: Callable[[TaskOutcome], None] | None,
    engine: Engine,
) -> JobOutcome:
    outcome = JobOutcome(name)
    failed: set[str] = set()
    trained: dict[str, str] = {}
    for task in ordered:
        blocked = [d for d in task.depends_on if d in failed]
        if blocked:
            done = TaskOutcome(task.key, task.kind, "skipped", error=f"depends on failed task {blocked[0]}")
            failed.add(task.key)
        else:
            done = _run_task(target, task, trained, on_task(task) if on_task else {}, engine)
            if done.status != "ok":
                failed.add(task.key)
        outcome.tasks.append(done)
        if on_done:
            on_done(done)
    return outcome


def _run_task(
    target: Target, task: TaskSpec, trained: dict[str, str], hooks: dict[str, object], engine: Engine
) -> TaskOutcome:
    start = time.perf_counter()
    result: Result
    error = None
    try:
        if task.train is not None:
            trained_run = train(
                target,
                task.train,
                changed_only=task.changed_only,
                engine=engine,
                **hooks,  # type: ignore[arg-type]
            )
            trained[task.train] = trained_run.run_id
            error = None if trained_run.ok else "every segment failed"
            result = trained_run
        elif task.evaluate is not None:
            # A model trained earlier in this job is the challenger; else its latest run.
            spec = task.evaluate
            evaluation = evaluate(target, spec.model, run_id=trained.get(spec.model), data=spec.data, engine=engine)
            error = None if evaluation.passed else "gate: " + "; ".join(evaluation.problems)
            result = evaluation
        elif task.python is not None:
            result = PythonOutcome(task.python, call_python(target, task.python, task.parameters))
        elif task.forecast is not None:
            spec_forecast = task.forecast
            result = forecast(target, spec_forecast.model, horizon=spec_forecast.horizon, data=spec_forecast.data,
                              known=spec_forecast.known, output=target.config.resolve_path(spec_forecast.output),
                              run_id=trained.get(spec_forecast.model), engine=engine)
        elif task.monitor is not None:
            spec_monitor = task.monitor
            output = target.config.resolve_path(spec_monitor.output) if spec_monitor.output else None
            watched = monitor(target, spec_monitor.model, spec_monitor.data, version=spec_monitor.version,
                              output=output, engine=engine)
            error = None if not watched.breached else "breach: " + "; ".join(watched.problems)
            result = watched
        elif task.promote is not None:
            model = task.promote.model
            result = promote(
                target,
                model,
                run_id=trained.get(model),
                take_all=task.promote.all,
                force=task.promote.force,
                engine=engine,
            )
            trained.pop(model, None)  # from here on the champion serves (new, or kept)
        else:
            assert task.score is not None  # noqa: S101 - a task has exactly one kind (schema)
            spec_score = task.score
            run_id = spec_score.run or trained.get(spec_score.model)  # a run trained in this job scores
            output = target.config.resolve_path(spec_score.output)
            result = score(target, spec_score.model, spec_score.dataset, output, run_id, engine=engine)
    except ManymodelsError as exc:
        return TaskOutcome(task.key, task.kind, "failed", time.perf_counter() - start, str(exc))
    status = "ok" if error is None else "failed"
    return TaskOutcome(task.key, task.kind, status, time.perf_counter() - start, error, result)


def call_python(target: Target, entry: str, parameters: dict[str, Any]) -> Any:
    """Call a python task's function with its parameters; its failure is the task's (a ManymodelsError).

    The bundle's folder and its `src/` are importable, as for estimators, and the function runs
    in the bundle's folder, so relative paths in its parameters mean what they mean in the bundle.
    """
    from contextlib import chdir

    from manymodels.estimators import add_import_roots, resolve_entry

    root = target.config.root
    add_import_roots([str(root / "src"), str(root)])
    function = resolve_entry(entry)
    try:
        with chdir(root):
            return function(**parameters)
    except Exception as exc:  # noqa: BLE001 - a user function's error fails its task, not the job runner
        text = str(exc).strip().splitlines()
        raise TaskError(f"{entry} raised {type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")) from exc


class TaskError(ManymodelsError):
    """A job task's own code failed."""
