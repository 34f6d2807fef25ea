"""The Python API: a bundle loaded for a target, with train / score / run as methods."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import pandas as pd

from manymodels.bundle import BundleConfig, check_bundle, load_config
from manymodels.errors import BundleError
from manymodels.jobs.evaluate import Evaluation, evaluate, registered_name
from manymodels.jobs.promote import PromoteOutcome, RollbackOutcome, model_versions, promote, rollback
from manymodels.jobs.runner import JobOutcome, run_job
from manymodels.jobs.score import open_pack, resolve_run, score, score_with_spark
from manymodels.jobs.train import TrainOutcome, experiment_name, train
from manymodels.registry import RunInfo, Tracker
from manymodels.registry.tracking import quiet_mlflow
from manymodels.registry.versions import VersionInfo
from manymodels.segment import metric_names


@dataclass
class TrainRun:
    """A finished training run, as the Python API returns it."""

    outcome: TrainOutcome

    @property
    def run_id(self) -> str:
        """The MLflow run id."""
        return self.outcome.run_id

    @property
    def manifest(self) -> pd.DataFrame:
        """One row per segment: keys, status, error, rows, metrics, shard, fingerprint."""
        return self.outcome.manifest

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per segment: its keys, status, rows and holdout metrics."""
        m = self.outcome.manifest
        keys = list(m.columns[: list(m.columns).index("segment_index")])
        cols = [*keys, "status", "rows", *[c for c in m.columns if c in _ALL_METRICS]]
        return m[cols].copy()

    @property
    def failed(self) -> pd.DataFrame:
        """The segments that failed, with their errors."""
        m = self.outcome.manifest
        return m[m["status"] != "ok"].copy()

    @property
    def summary(self) -> dict[str, float]:
        """Segment counts and each metric's mean / p50 / p95 over segments."""
        return dict(self.outcome.summary)

    @property
    def warnings(self) -> list[str]:
        """What the run found worth a look (oversized segments, constant models), one line each."""
        return list(self.outcome.warnings)


_ALL_METRICS = {*metric_names("regression"), *metric_names("binary")}

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _quiet(method: _Method) -> _Method:
    """A Project method that keeps MLflow's INFO lines and run links out of the caller's output."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with quiet_mlflow():
            return method(*args, **kwargs)

    return cast(_Method, wrapper)


class Project:
    """A bundle resolved for one target.

    Example:
        >>> project = load_bundle("manymodels.yml", target="dev")  # doctest: +SKIP
        >>> run = project.train("demand")  # doctest: +SKIP
        >>> scored = project.score("demand", frame)  # doctest: +SKIP
    """

    def __init__(self, config: BundleConfig) -> None:
        self.config = config

    @property
    def target(self) -> str:
        """The target this project was loaded for."""
        return self.config.target

    @property
    def tracking_uri(self) -> str:
        """Where runs are tracked."""
        return self.config.tracking_uri

    def validate(self, data: bool = True) -> list[str]:
        """Every problem of the bundle (references, import paths, and with `data` the columns)."""
        return check_bundle(self.config, data=data)

    @_quiet
    def train(
        self,
        model: str,
        segments: Sequence[str] | None = None,
        workers: int | None = None,
        on_progress: Callable[[int], None] | None = None,
        spark: Any = None,
        changed_only: bool = False,
    ) -> TrainRun:
        """Train one model per segment; returns the run (its metrics: one row per segment).

        Pass `spark=` a SparkSession to train on it (a notebook's cluster) whatever the target's engine.
        With `changed_only`, only segments whose fingerprint differs from the champion's are fitted;
        the others' models are carried over.
        """
        outcome = train(
            self.config,
            model,
            segments=segments,
            workers=workers,
            on_progress=on_progress,
            spark=spark,
            changed_only=changed_only,
        )
        return TrainRun(outcome)

    @_quiet
    def score(
        self,
        model: str,
        data: Any,
        run_id: str | None = None,
        output: str | Path | None = None,
        spark: Any = None,
        partition_by_segment: bool = False,
    ) -> Any:
        """Predictions for `data` (a frame, a dataset name or a path): its columns plus `prediction`.

        With `spark=` a SparkSession, Spark reads the data (a name, a path or a Spark DataFrame),
        scores it on the executors and writes `output` (required) as Parquet, optionally partitioned
        by segment; the written Spark DataFrame is returned.
        """
        out = Path(output) if output is not None else None
        if spark is not None:
            if out is None:
                raise BundleError("scoring on Spark writes its output with Spark: give output=PATH")
            return score_with_spark(self.config, model, spark, data, out, run_id, partition_by_segment).frame
        return score(self.config, model, data, output=out, run_id=run_id).frame

    @_quiet
    def evaluate(self, model: str, run_id: str | None = None, data: Any = None, save: bool = True) -> Evaluation:
        """The challenger run (default: latest) against the champion, per segment; see `Evaluation.table`.

        `data` (a frame, dataset name or path) evaluates on all its rows instead of the holdout.
        """
        return evaluate(self.config, model, run_id=run_id, data=data, save=save)

    @_quiet
    def promote(
        self, model: str, run_id: str | None = None, take_all: bool = False, force: bool = False
    ) -> PromoteOutcome:
        """A new champion version: the challenger where it won, the champion elsewhere.

        Raises `GateError` (nothing promoted) when the evaluation's gate failed, unless `force`.
        """
        return promote(self.config, model, run_id=run_id, take_all=take_all, force=force)

    @_quiet
    def rollback(self, model: str, to: int | None = None) -> RollbackOutcome:
        """Point `champion` back at `to` (default: the version with alias `previous`)."""
        return rollback(self.config, model, to=to)

    @_quiet
    def versions(self, model: str) -> list[VersionInfo]:
        """The model's registered versions, newest first, with their aliases."""
        return model_versions(self.config, model)[1]

    def registered_model(self, model: str) -> str:
        """The MLflow registered model name: `mlflow.pyfunc.load_model(f"models:/{name}@champion")`."""
        return registered_name(self.config, model)

    @_quiet
    def run(self, job: str, spark: Any = None) -> JobOutcome:
        """Run a job's tasks in dependency order (on `spark=` a SparkSession, if given)."""
        return run_job(self.config, job, spark=spark)

    @_quiet
    def runs(self, model: str, limit: int = 50) -> list[RunInfo]:
        """The model's training runs, newest first."""
        self.config.model(model)
        tracker = Tracker(self.config.tracking_uri, self.config.embedded_artifacts)
        return tracker.runs(experiment_name(self.config, model), model, limit=limit)

    @_quiet
    def manifest(self, model: str, run_id: str | None = None) -> pd.DataFrame:
        """The manifest of a run (default: the latest successful one)."""
        info = resolve_run(self.config, model, run_id)
        return open_pack(self.config, info).manifest


def load_bundle(
    path: str | Path | None = None,
    target: str | None = None,
    variables: Mapping[str, str] | None = None,
    check: bool = True,
) -> Project:
    """Load a bundle for a target.

    Args:
        path: manymodels.yml or its folder (default: found from the current folder up).
        target: the target (default: the one marked `default: true`).
        variables: variable values, as `--var k=v` would give them.
        check: also check references between resources and estimator import paths.

    Raises:
        BundleError: every problem found, one line each.
    """
    config = load_config(path, target, variables)
    if check:
        problems = check_bundle(config, data=False)
        if problems:
            raise BundleError(problems)
    return Project(config)
