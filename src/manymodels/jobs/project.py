"""The Python API: a bundle loaded for a target, with train / score / run as methods."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import pandas as pd

from manymodels.bundle import BundleConfig, check_bundle, data_warnings, load_config
from manymodels.errors import BundleError
from manymodels.jobs.context import Target, install_trust, trust_problems
from manymodels.jobs.evaluate import Evaluation, evaluate
from manymodels.jobs.forecast import forecast
from manymodels.jobs.monitor import MonitorOutcome, flagged_segments, monitor
from manymodels.jobs.promote import PromoteOutcome, RollbackOutcome, model_versions, promote, rollback
from manymodels.jobs.report import html_report
from manymodels.jobs.runner import JobOutcome, run_job
from manymodels.jobs.score import score
from manymodels.jobs.selection import WON
from manymodels.jobs.train import TrainOutcome, train
from manymodels.jobs.verify import VerifyOutcome, verify_version
from manymodels.registry import RunInfo
from manymodels.registry import manifest as mf
from manymodels.registry.mlflow_env import quiet_mlflow
from manymodels.registry.version_info import VersionInfo
from manymodels.report import write_page
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
        cols = [*mf.segment_columns(m), mf.STATUS, mf.ROWS, *[c for c in m.columns if c in _ALL_METRICS]]
        return m[cols].copy()

    @property
    def failed(self) -> pd.DataFrame:
        """The segments that failed, with their errors."""
        m = self.outcome.manifest
        return m[~mf.is_ok(m)].copy()

    @property
    def summary(self) -> dict[str, float]:
        """Segment counts (ints: MLflow keeps every metric as a float) and each metric's mean / p50 / p95 over
        segments."""
        return {key: int(value) if key.startswith(_COUNTS) else value for key, value in self.outcome.summary.items()}

    @property
    def warnings(self) -> list[str]:
        """What the run found worth a look (oversized segments, constant models), one line each."""
        return list(self.outcome.warnings)


_ALL_METRICS = {*metric_names("regression"), *metric_names("binary")}
# Summary keys that count segments or rows (each candidate's wins, `won.<name>`, too).
_COUNTS = ("segments_", "rows_", "fallback_ok", "fallback_failed", WON)

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _quiet(method: _Method) -> _Method:
    """A Project method that keeps MLflow's INFO lines and run links out of the caller's output, run with its own
    target's trust (pickle, signing key: a process's settings), so two projects in one notebook never use each
    other's."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        config = getattr(args[0], "config", None) if args else None
        if isinstance(config, BundleConfig):
            install_trust(config)
        with quiet_mlflow():
            return method(*args, **kwargs)

    return cast(_Method, wrapper)


class Project:
    """A bundle resolved for one target.

    With `spark` a SparkSession (a notebook's), every fleet operation runs on it, whatever the
    target's engine; the session is left running. On a Spark target without one, the project
    starts a session on first use and keeps it (frames it returns stay usable) until `close()`.

    Example:
        >>> project = load_bundle("manymodels.yml", target="dev")  # doctest: +SKIP
        >>> run = project.train("demand")  # doctest: +SKIP
        >>> scored = project.score("demand", frame)  # doctest: +SKIP
    """

    def __init__(self, config: BundleConfig, spark: Any = None) -> None:
        self.config = config
        self.target_context = Target(config, spark, keep_session=True)

    def close(self) -> None:
        """Stop the Spark session the project started for a Spark target (a session given with `spark=` stays)."""
        self.target_context.close()

    @property
    def target(self) -> str:
        """The target this project was loaded for."""
        return self.config.target

    @property
    def tracking_uri(self) -> str:
        """Where runs are tracked."""
        return self.config.tracking_uri

    def validate(self, data: bool = True) -> list[str]:
        """Every problem of the bundle (references, import paths, and with `data` the columns). With `data`, what a
        dataset holds that is likely not meant (a text column of numbers and "N/A") is a `UserWarning` each."""
        problems = check_bundle(self.config, data=data) + trust_problems(self.config)
        if data and not problems:
            for line in data_warnings(self.config):
                warnings.warn(line, UserWarning, stacklevel=2)
        return problems

    @_quiet
    def train(
        self,
        model: str,
        segments: Sequence[str] | None = None,
        workers: int | None = None,
        on_progress: Callable[[int], None] | None = None,
        changed_only: bool = False,
        resume: str | None = None,
    ) -> TrainRun:
        """Train one model per segment; returns the run (its metrics: one row per segment).

        With `changed_only`, only segments whose fingerprint differs from the champion's are fitted;
        the others' models are carried over. With `resume` (a run id), a training run of this model
        that died or was stopped is finished: the segments it had left are fitted into it, those it
        finished kept.
        """
        outcome = train(
            self.target_context,
            model,
            segments=segments,
            workers=workers,
            on_progress=on_progress,
            changed_only=changed_only,
            resume=resume,
        )
        return TrainRun(outcome)

    @_quiet
    def score(
        self,
        model: str,
        data: Any,
        run_id: str | None = None,
        output: str | Path | None = None,
        partition_by_segment: bool = False,
    ) -> Any:
        """Predictions for `data` (a frame, a dataset name or a path): its columns plus `prediction`.

        On Spark (a Spark target, or a project loaded with `spark=`), Spark reads the data (a name, a
        path, a pandas or Spark DataFrame), scores it on the executors and writes `output` as Parquet,
        optionally partitioned by segment, and returns the written Spark DataFrame; without `output`,
        the scored Spark DataFrame, not written.
        """
        out = Path(output) if output is not None else None
        return score(self.target_context, model, data, output=out, run_id=run_id,
                     partition_by_segment=partition_by_segment).frame

    @_quiet
    def forecast(
        self,
        model: str,
        horizon: int | None = None,
        data: Any = None,
        known: Any = None,
        version: int | None = None,
        run_id: str | None = None,
        output: str | Path | None = None,
        levels: Sequence[float] = (),
    ) -> pd.DataFrame:
        """The next `horizon` steps (default: the trained horizon) of every segment of a forecast model: rows of
        segment columns, time, `step`, `prediction`, `model_source`, and `lo-<level>`, `hi-<level>` per `levels`
        (prediction intervals, percents).

        From the champion version (or `version`, or the run `run_id`); each segment starts from the history its
        pack keeps, or from its latest rows of `data` (a frame, dataset name or path: newer history, no
        retraining). `known`: the future values of the known features (segment columns, time, their columns).
        """
        out = Path(output) if output is not None else None
        return forecast(self.target_context, model, horizon=horizon, data=data, known=known, output=out,
                        run_id=run_id, version=version, levels=levels).frame

    @_quiet
    def evaluate(self, model: str, run_id: str | None = None, data: Any = None, save: bool = True) -> Evaluation:
        """The challenger run (default: latest) against the champion, per segment; see `Evaluation.table`.

        `data` (a frame, dataset name or path) evaluates on all its rows instead of the holdout.
        """
        return evaluate(self.target_context, model, run_id=run_id, data=data, save=save)

    @_quiet
    def promote(
        self, model: str, run_id: str | None = None, take_all: bool = False, force: bool = False
    ) -> PromoteOutcome:
        """A new champion version: the challenger where it won, the champion elsewhere.

        Raises `GateError` (nothing promoted) when the evaluation's gate failed, unless `force`.
        """
        return promote(self.target_context, model, run_id=run_id, take_all=take_all, force=force)

    @_quiet
    def rollback(self, model: str, to: int | None = None) -> RollbackOutcome:
        """Point `champion` back at `to` (default: the version with alias `previous`)."""
        return rollback(self.target_context, model, to=to)

    @_quiet
    def verify(self, model: str, version: int | None = None) -> VerifyOutcome:
        """Check a version (default: the champion) as serving would, loading no model: its signature with a signing
        key, every shard's and model's checksum, its models' formats trusted (`manymodels verify`)."""
        return verify_version(self.target_context, model, version)

    @_quiet
    def versions(self, model: str) -> list[VersionInfo]:
        """The model's registered versions, newest first, with their aliases."""
        return model_versions(self.target_context, model)[1]

    def registered_model(self, model: str) -> str:
        """The MLflow registered model name: `mlflow.pyfunc.load_model(f"models:/{name}@champion")`."""
        return self.target_context.registered_name(model)

    @_quiet
    def run(self, job: str) -> JobOutcome:
        """Run a job's tasks in dependency order, on one engine."""
        return run_job(self.target_context, job)

    @_quiet
    def runs(self, model: str, limit: int = 50) -> list[RunInfo]:
        """The model's training runs, newest first."""
        self.config.model(model)
        return self.target_context.tracker.runs(self.target_context.experiment(model), model, limit=limit)

    @_quiet
    def monitor(self, model: str, data: Any, version: int | None = None, output: str | Path | None = None,
                save: bool = True) -> MonitorOutcome:
        """Drift and performance of the serving models (the champion, or `version`) on new rows, per segment.

        `data`: a DataFrame, a dataset name or a file path (with `prediction`: not predicted again; with
        the label: the metric too). The outcome's `breached` says whether the fleet broke the model's
        `monitoring` thresholds; with `save` it is logged as a run of `<bundle>/<target>/monitoring`.
        """
        return monitor(self.target_context, model, data, version=version,
                       output=Path(output) if output is not None else None, save=save)

    @_quiet
    def flagged(self, model: str, monitoring_run: str) -> list[str]:
        """The segments a monitoring run found drifted or degraded: `train(model, segments=...)` retrains them."""
        return flagged_segments(self.target_context, model, monitoring_run)

    @_quiet
    def report(self, model: str, out: str | Path = "report.html", run_id: str | None = None,
               version: int | None = None) -> Path:
        """Write the HTML report of a run (default: the champion's, else the latest training run) to `out`."""
        made = html_report(self.target_context, model, run_id=run_id, version=version)
        return write_page(Path(out), made.html)

    @_quiet
    def manifest(self, model: str, run_id: str | None = None) -> pd.DataFrame:
        """The manifest of a run (default: the latest successful one)."""
        context = self.target_context
        return context.open_pack(context.resolve_run(model, run_id)).manifest


def load_bundle(
    path: str | Path | None = None,
    target: str | None = None,
    variables: Mapping[str, str] | None = None,
    check: bool = True,
    spark: Any = None,
) -> Project:
    """Load a bundle for a target.

    Args:
        path: manymodels.yml or its folder (default: found from the current folder up).
        target: the target (default: the one marked `default: true`).
        variables: variable values, as `--var k=v` would give them.
        check: also check references between resources and estimator import paths.
        spark: a SparkSession (a notebook's) to run every fleet operation on, whatever the target's
            engine; it is left running.

    Raises:
        BundleError: every problem found, one line each.
    """
    config = load_config(path, target, variables)
    if check:
        problems = check_bundle(config, data=False)
        if problems:
            raise BundleError(problems)
    return Project(config, spark)
