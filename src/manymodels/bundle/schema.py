"""The bundle's typed form: strict, frozen pydantic models, one per section of manymodels.yml."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

REGRESSION_METRICS = ("rmse", "mae", "mape", "r2")
BINARY_METRICS = ("logloss", "auc", "accuracy")
# Metrics where a larger value is better; all others are errors to minimise.
HIGHER_IS_BETTER = frozenset({"r2", "auc", "accuracy"})


class Strict(BaseModel):
    """Base of every bundle section: unknown keys are errors, values never change after load."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BundleInfo(Strict):
    """`bundle:` the project's identity."""

    name: str = Field(min_length=1)
    description: str | None = None


class VariableSpec(Strict):
    """`variables.<name>:` a value the bundle refers to as `${var.<name>}`."""

    default: str | int | float | bool | None = None
    description: str | None = None


class EngineSpec(Strict):
    """`engine:` where segments are fitted.

    `local` (default): a process pool of `workers` (default: the cores). `spark`: a Spark
    session, classic (`master`: `local[2]`, `spark://host:7077`, `yarn`) or Spark Connect
    (`remote`: `sc://host:15002`), with extra Spark `conf`; there `workers` is the task slots
    chunks are planned for (default: the cluster's default parallelism), and `staging` a folder
    or fsspec URL (`s3://bucket/tmp`) where executors write model shards when the run's artifact
    store is not a local path (a cluster's executors cannot write to the driver's disk).
    """

    kind: Literal["local", "spark"] = "local"
    workers: int | None = Field(default=None, ge=1)
    master: str | None = None
    remote: str | None = None
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)
    max_chunk_rows: int | None = Field(default=None, ge=1)
    max_segment_rows: int = Field(default=1_000_000, ge=1)
    staging: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _spark_options_need_spark(self) -> EngineSpec:
        if self.kind != "spark" and (self.master or self.remote or self.conf or self.staging):
            raise ValueError("master, remote, conf and staging are for kind spark")
        if self.master and self.remote:
            raise ValueError("give master (classic Spark) or remote (Spark Connect), not both")
        return self

    def spark_options(self) -> dict[str, Any]:
        """Keyword arguments of the Spark engine."""
        return {
            "master": self.master,
            "remote": self.remote,
            "conf": dict(self.conf),
            "max_chunk_rows": self.max_chunk_rows,
        }


class DatasetSpec(Strict):
    """`resources.datasets.<name>:` a table on disk."""

    format: Literal["parquet", "csv", "delta"] = "parquet"
    path: str = Field(min_length=1)


class EstimatorSpec(Strict):
    """`estimator:` what is fitted for each segment.

    `lightgbm` (default) takes LightGBM params plus `num_boost_round`; `sklearn` and `python`
    take `entry`, an import path (`sklearn.linear_model.Ridge` or `my_pkg.models:fit`).
    """

    type: Literal["lightgbm", "sklearn", "python"] = "lightgbm"
    entry: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _entry_matches_type(self) -> EstimatorSpec:
        if self.type == "lightgbm" and self.entry is not None:
            raise ValueError("entry is only for type sklearn or python; lightgbm needs none")
        if self.type != "lightgbm" and not self.entry:
            raise ValueError(f"type {self.type} needs entry, an import path such as 'pkg.module:Name'")
        return self


class SplitSpec(Strict):
    """`split:` how each segment's rows divide into train and holdout.

    Random (`test_size`, `seed`) by default, or by a time column: rows before `cutoff` train,
    rows at or after it are the holdout.
    """

    test_size: float = 0.2
    seed: int = 42
    by: str | None = None
    cutoff: str | None = None

    @field_validator("test_size")
    @classmethod
    def _test_size_in_unit_interval(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError("must be a float in (0, 1)")
        return value

    @model_validator(mode="after")
    def _cutoff_with_by(self) -> SplitSpec:
        if (self.by is None) != (self.cutoff is None):
            raise ValueError("a time split needs both by (the time column) and cutoff")
        return self


class ModelSpec(Strict):
    """`resources.models.<name>:` a family of models, one per segment."""

    dataset: str
    segment_by: list[str] = Field(min_length=1)
    label: str
    features: list[str] | None = None
    task: Literal["regression", "binary"] = "regression"
    estimator: EstimatorSpec = Field(default_factory=EstimatorSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    metric: str | None = None
    min_rows: int = Field(default=5, ge=2)
    experiment: str | None = None
    description: str | None = None

    @field_validator("segment_by", mode="before")
    @classmethod
    def _one_column_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _metric_fits_task(self) -> ModelSpec:
        allowed = REGRESSION_METRICS if self.task == "regression" else BINARY_METRICS
        if self.metric is not None and self.metric not in allowed:
            raise ValueError(f"metric {self.metric!r} does not fit task {self.task}; use one of {', '.join(allowed)}")
        return self

    @property
    def primary_metric(self) -> str:
        """The metric that ranks segments: `metric`, or rmse / logloss by task."""
        return self.metric or ("rmse" if self.task == "regression" else "logloss")


class ScoreTaskSpec(Strict):
    """`score:` in a job task: predictions for a dataset, written as Parquet."""

    model: str
    dataset: str
    output: str
    run: str | None = None


class TaskSpec(Strict):
    """One task of a job: exactly one of `train` or `score`, plus its dependencies."""

    key: str = Field(min_length=1)
    depends_on: list[str] = Field(default_factory=list)
    train: str | None = None
    score: ScoreTaskSpec | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> TaskSpec:
        kinds = [k for k in ("train", "score") if getattr(self, k) is not None]
        if len(kinds) != 1:
            got = ", ".join(kinds) or "none"
            raise ValueError(f"a task needs exactly one of train, score; got {got}")
        return self

    @property
    def kind(self) -> str:
        """`train` or `score`."""
        return "train" if self.train is not None else "score"


class JobSpec(Strict):
    """`resources.jobs.<name>:` tasks run in dependency order."""

    description: str | None = None
    tasks: list[TaskSpec] = Field(min_length=1)


class Resources(Strict):
    """`resources:` what the bundle declares."""

    datasets: dict[str, DatasetSpec] = Field(default_factory=dict)
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    jobs: dict[str, JobSpec] = Field(default_factory=dict)


class TargetSpec(Strict):
    """`targets.<name>:` a place the bundle runs in; overrides any part of the bundle."""

    default: bool = False
    mode: Literal["development", "production"] | None = None
    tracking_uri: str | None = None
    engine: EngineSpec | None = None
    variables: dict[str, str | int | float | bool | None] = Field(default_factory=dict)
    resources: dict[str, Any] | None = None


class BundleDocument(Strict):
    """The whole of manymodels.yml (with its includes), before a target is applied."""

    bundle: BundleInfo
    include: list[str] = Field(default_factory=list)
    variables: dict[str, VariableSpec] = Field(default_factory=dict)
    targets: dict[str, TargetSpec] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)


class ResolvedBundle(Strict):
    """The bundle for one target: variables substituted, target overrides merged, validated."""

    bundle: BundleInfo
    target: str
    mode: Literal["development", "production"] | None = None
    tracking_uri: str | None = None
    engine: EngineSpec = Field(default_factory=EngineSpec)
    variables: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)


class _TargetFile(TargetSpec):
    """A target as written in manymodels.yml (its resources override the bundle's)."""


class _BundleFile(Strict):
    """manymodels.yml as an editor sees it."""

    bundle: BundleInfo
    include: list[str] = Field(default_factory=list)
    variables: dict[str, VariableSpec] = Field(default_factory=dict)
    targets: dict[str, _TargetFile] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)


def bundle_json_schema() -> dict[str, Any]:
    """The JSON schema of manymodels.yml, for editors (yaml-language-server) and tooling."""
    schema = _BundleFile.model_json_schema()
    schema["title"] = "manymodels bundle"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
