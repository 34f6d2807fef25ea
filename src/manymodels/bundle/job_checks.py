"""Checks of a bundle's jobs: task keys, dependencies and their cycles, the models, datasets and outputs tasks name."""

from __future__ import annotations

from pathlib import Path

from manymodels.bundle.loader import BundleConfig
from manymodels.bundle.messages import did_you_mean
from manymodels.bundle.schema import JobSpec
from manymodels.bundle.source import dotted
from manymodels.data import output_format
from manymodels.errors import BundleError, DataError
from manymodels.estimators import (
    resolve_entry,
)


def check_job(config: BundleConfig, name: str, job: JobSpec) -> list[str]:
    """One job's problems: duplicate task keys, unknown dependencies or models or datasets, outputs in no format
    manymodels writes, a cycle."""
    problems: list[str] = []
    res = config.resolved.resources
    keys = [t.key for t in job.tasks]
    for i, task in enumerate(job.tasks):
        base = ("resources", "jobs", name, "tasks", i)
        if keys.count(task.key) > 1 and keys.index(task.key) != i:
            problems.append(f"{config.where((*base, 'key'))}{dotted(base)}.key {task.key!r} is used by two tasks")
        for j, dep in enumerate(task.depends_on):
            if dep not in keys:
                problems.append(
                    f"{config.where((*base, 'depends_on', j))}{dotted(base)}.depends_on: no task "
                    f"{dep!r} in job {name}{did_you_mean(dep, keys)}"
                )
        model, kind = task.model, task.kind
        if task.python is not None:
            try:
                resolve_entry(task.python)
            except BundleError as exc:
                problems.append(f"{config.where((*base, 'python'))}{dotted(base)}.python: {exc}")
        elif model is not None and model not in res.models:
            field = (kind,) if kind == "train" else (kind, "model")
            problems.append(
                f"{config.where((*base, *field))}{dotted(base)}.{'.'.join(field)}: no model {model!r} in "
                f"resources.models{did_you_mean(model, res.models)}"
            )
        if task.score is not None and config.resolved.engine.kind != "spark":  # Spark writes a folder
            try:
                output_format(Path(task.score.output))
            except DataError as exc:
                problems.append(f"{config.where((*base, 'score', 'output'))}{dotted(base)}.score.output: {exc}")
        named: list[tuple[tuple[str, ...], str | None]] = [
            (("score", "dataset"), task.score.dataset if task.score else None),
            (("evaluate", "data"), task.evaluate.data if task.evaluate else None),
            (("monitor", "data"), task.monitor.data if task.monitor else None),
        ]
        if task.forecast is not None:
            named += [(("forecast", "known"), task.forecast.known), (("forecast", "data"), task.forecast.data)]
            if model in res.models and res.models[model].task != "forecast":
                at = (*base, "forecast", "model")
                problems.append(f"{config.where(at)}{dotted(at)}: model {model!r} is not a forecast model (task "
                                f"{res.models[model].task}): use a score task")
            try:
                output_format(Path(task.forecast.output))
            except DataError as exc:
                problems.append(f"{config.where((*base, 'forecast', 'output'))}{dotted(base)}.forecast.output: {exc}")
        for key, dataset in named:
            if dataset is not None and dataset not in res.datasets:
                problems.append(
                    f"{config.where((*base, *key))}{dotted(base)}.{'.'.join(key)}: no dataset "
                    f"{dataset!r} in resources.datasets{did_you_mean(dataset, res.datasets)}"
                )
    cycle = find_cycle({t.key: list(t.depends_on) for t in job.tasks})
    if cycle:
        problems.append(
            f"{config.where(('resources', 'jobs', name))}resources.jobs.{name}: tasks depend on each "
            f"other in a cycle: {' -> '.join(cycle)}"
        )
    return problems


def find_cycle(graph: dict[str, list[str]]) -> list[str]:
    """A cycle of the dependency graph as the path that closes it (its first node again at the end), or []."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep in graph and dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []
