"""The bundle's typed form: strict, frozen pydantic models, one per section of manymodels.yml."""

from __future__ import annotations

import datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from manymodels.bundle.forecast import (
    DEFAULT_LAGS,
    Features,
    ForecastFeaturesSpec,
    TransformSpec,
    forecast_problem,
)
from manymodels.bundle.selection import (
    BINARY_METRICS,
    REGRESSION_METRICS,
    CandidateSpec,
    SelectionSpec,
    TuningSpec,
    ValidationSpec,
    selection_problem,
)
from manymodels.bundle.settings import BundleInfo, EngineSpec, SigningKeySpec, TrackingSpec, VariableSpec
from manymodels.bundle.strict import Strict
from manymodels.bundle.tasks import TaskSpec

# Metrics where a larger value is better; all others are errors to minimise.
HIGHER_IS_BETTER = frozenset({"r2", "auc", "accuracy"})


class DatasetSpec(Strict):
    """`resources.datasets.<name>:` a table on disk."""

    format: Literal["parquet", "csv", "delta"] = "parquet"
    path: str = Field(min_length=1)
    # Values that mean "missing" (as well as a CSV reader's own: "", "NA", "N/A", "NaN", "null", ...): read as
    # missing in every column, so a number column that marks a gap with "-" stays numbers.
    na_values: list[str] = Field(default_factory=list)


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

    @field_validator("cutoff", mode="before")
    @classmethod
    def _cutoff_as_text(cls, value: Any) -> Any:
        # YAML reads `cutoff: 2005` as a number and `cutoff: 2025-10-01` as a date: both are fine cutoffs.
        if isinstance(value, bool):
            return value  # true/false is no cutoff: the string check rejects it
        if isinstance(value, (int, float)):
            return str(value)
        if isinstance(value, (datetime.date, datetime.datetime)):
            return value.isoformat()
        return value

    @model_validator(mode="after")
    def _cutoff_with_by(self) -> SplitSpec:
        if (self.by is None) != (self.cutoff is None):
            raise ValueError("a time split needs both by (the time column) and cutoff")
        return self


class PromotionSpec(Strict):
    """`promotion:` when a segment's challenger replaces its champion.

    A segment's challenger wins when its `metric` on the same evaluation rows beats the
    champion's by more than `min_improvement` (relative: 0.02 is 2%); with fewer than
    `min_eval_rows` evaluation rows it is `insufficient` (neither won nor lost: the champion
    stays). It is promoted when it won (or the segment has no champion) and it passes the quality
    gate: at least `min_rows` training rows, metric at most `max_metric` / at least `min_metric`.
    `evaluate` fails (exit 1) when more than `max_failed_fraction` of the evaluated segments
    regress (challenger lost or failed) or break the quality gate's metric bounds; nothing to
    promote is not a failure.

    With model selection (`validation`), a segment's challenger must also beat the champion's
    configuration on most folds of its cross-validation, when the run scored that configuration
    (see `cv_folds_won` in the table); `basis: cv` compares their mean fold metrics instead of
    the holdout (more rows than a thin holdout; the table's `basis` says which was used).
    """

    metric: str | None = None
    basis: Literal["holdout", "cv"] = "holdout"
    min_improvement: float = Field(default=0.0, ge=0.0)
    max_metric: float | None = None
    min_metric: float | None = None
    min_rows: int = Field(default=0, ge=0)
    min_eval_rows: int = Field(default=5, ge=1)
    max_failed_fraction: float = Field(default=0.5, ge=0.0, le=1.0)


class MonitoringSpec(Strict):
    """`monitoring:` when `manymodels monitor` says a segment, and the fleet, need attention.

    A segment with at least `min_rows` new rows is judged: it drifted when a feature's or the
    predictions' population stability index against its training profile exceeds `psi_max` and a
    PSI that large is unlikely without drift (few rows give large PSIs by chance alone: about
    10 / rows with 10 bins); it degraded when the new rows carry the label, the metric got worse
    than the holdout metric by more than `metric_increase_max` (relative: 0.25 is 25%) and the
    errors grew beyond chance (a rank test against the holdout's; a forecast: also its actuals
    outside its 95% interval beyond chance). Both flags hold the fleet's false discovery rate at
    `significance` (`segment.significance`). The fleet breaches (exit 1) when more than
    `max_drifted_fraction` of the judged segments drifted or degraded.
    """

    psi_max: float = Field(default=0.2, gt=0.0)
    significance: float = Field(default=0.01, gt=0.0, le=1.0)
    metric_increase_max: float = Field(default=0.25, ge=0.0)
    max_drifted_fraction: float = Field(default=0.1, ge=0.0, le=1.0)
    min_rows: int = Field(default=20, ge=1)


class FallbackSpec(Strict):
    """`fallback: {segment_by: [region]}`: one fallback model per parent group."""

    segment_by: list[str] = Field(min_length=1)

    @field_validator("segment_by", mode="before")
    @classmethod
    def _one_column_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class ModelSpec(Strict):
    """`resources.models.<name>:` a family of models, one per segment.

    `registered_model` names its MLflow registered model (default: `<bundle>.<target>.<model>`).
    `fallback: global` also trains one model on all rows (`{segment_by: [region]}`: one per
    parent group); it predicts the rows of segments without a model of their own (fewer than
    `min_rows` rows, failed, or seen only at scoring time). `impute: median | zero` fills missing
    feature values for `sklearn` and `python` estimators (each segment's own training medians,
    kept with its model, so scoring fills the same); LightGBM takes missing values as they are.

    Model selection (see `manymodels.bundle.selection`): with `validation`, each segment's
    `candidates` (default: the one `estimator`), each tuned as `tuning` says, are cross-validated
    and the best by `selection.metric` is the segment's model.

    `task: forecast` (see `manymodels.bundle.forecast`): each segment forecasts `horizon` steps of
    its `label` along the `time` column's grid (`freq`, else inferred from the fleet), from the
    features `features` names (a mapping: lags, rolling, calendar, known, static), the label
    transformed by `target_transform` (default: `[{diff: 1}]`), one model fed its own forecasts
    (`strategy: recursive`, the default) or one per step (`direct`); `gaps` says what a hole in a
    segment's grid is. `hierarchy` (segment_by's columns from the top) forecasts every level above
    the segments too and reconciles them (`reconcile`, default `min_trace_shrink`). Its candidates
    are chosen on rolling-origin windows that each forecast the horizon (`validation`:
    `{kind: time, windows: 3}` by default); `naive` is always among them.
    """

    dataset: str
    segment_by: list[str] = Field(min_length=1)
    label: str
    features: Features | None = None
    impute: Literal["median", "zero"] | None = None
    task: Literal["regression", "binary", "forecast"] = "regression"
    time: str | None = Field(default=None, min_length=1)
    freq: str | int | float | None = None
    horizon: int | None = Field(default=None, ge=1, le=10_000)
    target_transform: list[TransformSpec] | None = None
    strategy: Literal["recursive", "direct"] = "recursive"
    gaps: Literal["error", "zero", "missing"] = "error"
    # Forecasts: after the holdout is measured, fit the chosen candidate again on every step (kept beside the model
    # the holdout measured, which `evaluate` judges), so forecasts start from a model that saw the latest steps.
    refit: bool = False
    # Forecasts: segment_by's columns from the top level down; every level above the segments (and a total) is
    # forecast too, from the rows summed, and the forecasts are reconciled so that they add up.
    hierarchy: list[str] | None = Field(default=None, min_length=1)
    reconcile: Literal["bottom_up", "top_down", "min_trace_ols", "min_trace_shrink"] | None = None
    estimator: EstimatorSpec = Field(default_factory=EstimatorSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    metric: str | None = None
    min_rows: int = Field(default=5, ge=2)
    # Rows with a null in a segment column: `drop` them (counted, and said, at every training), fit them as a
    # segment of their `own`, or `fail` the training.
    null_segments: Literal["drop", "own", "fail"] = "drop"
    experiment: str | None = None
    registered_model: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    fallback: Literal["global"] | FallbackSpec | None = None
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    validation: ValidationSpec | None = None
    candidates: list[CandidateSpec] | None = Field(default=None, min_length=1)
    tuning: dict[str, TuningSpec] = Field(default_factory=dict)
    selection: SelectionSpec = Field(default_factory=SelectionSpec)
    description: str | None = None

    @field_validator("segment_by", "hierarchy", mode="before")
    @classmethod
    def _one_column_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _impute_only_where_needed(self) -> ModelSpec:
        if self.impute is not None and not {"sklearn", "python"} & set(self.estimator_types):
            raise ValueError(
                "impute is for sklearn and python estimators; LightGBM takes missing values as they are: remove it"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _forecast_validates_in_time(cls, value: Any) -> Any:
        # A forecast's validation is rolling-origin windows: `validation: {windows: 3}` needs no `kind: time`.
        if isinstance(value, dict) and value.get("task") == "forecast" and isinstance(value.get("validation"), dict):
            if "kind" not in value["validation"]:
                value = {**value, "validation": {"kind": "time", **value["validation"]}}
        return value

    @model_validator(mode="after")
    def _forecast_fits_together(self) -> ModelSpec:
        why = forecast_problem(self)
        if why:
            raise ValueError(why)
        return self

    @model_validator(mode="after")
    def _selection_fits_together(self) -> ModelSpec:
        why = selection_problem(self)
        if why:
            raise ValueError(why)
        return self

    @property
    def forecast_features(self) -> ForecastFeaturesSpec:
        """A forecast's features as given, or the defaults (lags 1, 2, 3)."""
        return self.features if isinstance(self.features, ForecastFeaturesSpec) else ForecastFeaturesSpec()

    @property
    def feature_columns(self) -> list[str] | None:
        """The columns listed as features (a forecast's: its known and static ones); None when not listed."""
        if isinstance(self.features, ForecastFeaturesSpec):
            return [*self.features.known, *self.features.static]
        if self.task == "forecast":
            return []
        return None if self.features is None else list(self.features)

    @property
    def lags(self) -> list[int]:
        """A forecast's lags, as given or the default."""
        lags = self.forecast_features.lags
        return list(DEFAULT_LAGS) if lags is None else list(lags)

    @property
    def transforms(self) -> list[tuple[str, int]]:
        """A forecast's target transforms, as the segment layer takes them (default: one difference)."""
        given = self.target_transform
        return [("diff", 1)] if given is None else [t.step for t in given]

    @property
    def candidate_specs(self) -> list[CandidateSpec]:
        """The candidates: as listed, or the one estimator under its type's name."""
        if self.candidates:
            return list(self.candidates)
        est = self.estimator
        return [CandidateSpec(name=est.type, type=est.type, entry=est.entry, params=dict(est.params))]

    @property
    def estimator_types(self) -> list[str]:
        """The estimator types the model fits: its estimator's, or each candidate's."""
        return [c.type for c in self.candidate_specs]

    @property
    def time_column(self) -> str | None:
        """The column ordering a segment's rows in time: a forecast's `time`, `validation.by`, else `split.by`."""
        if self.task == "forecast":
            return self.time
        return (self.validation.by if self.validation is not None else None) or self.split.by

    @property
    def selection_metric(self) -> str:
        """The metric candidates are cross-validated on: `selection.metric`, else the primary metric."""
        return self.selection.metric or self.primary_metric

    @model_validator(mode="after")
    def _metric_fits_task(self) -> ModelSpec:
        allowed = BINARY_METRICS if self.task == "binary" else REGRESSION_METRICS
        for name, metric in (("metric", self.metric), ("promotion.metric", self.promotion.metric)):
            if metric is not None and metric not in allowed:
                raise ValueError(f"{name} {metric!r} does not fit task {self.task}; use one of {', '.join(allowed)}")
        return self

    @property
    def primary_metric(self) -> str:
        """The metric that ranks segments: `metric`, or rmse / logloss by task."""
        return self.metric or ("logloss" if self.task == "binary" else "rmse")

    @property
    def fallback_by(self) -> list[str] | None:
        """The fallback's grouping columns ([] for one global model); None without a fallback."""
        if self.fallback is None:
            return None
        return [] if self.fallback == "global" else list(self.fallback.segment_by)

    @property
    def promotion_metric(self) -> str:
        """The metric champion and challenger are compared on: `promotion.metric`, else the primary metric."""
        return self.promotion.metric or self.primary_metric


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
    tracking: TrackingSpec | None = None
    engine: EngineSpec | None = None
    signing_key: SigningKeySpec | None = None
    trust: Literal["pickle"] | None = None
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
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    signing_key: SigningKeySpec | None = None
    trust: Literal["pickle"] | None = None
    variables: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)

    @field_validator("tracking_uri")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        # An empty URI would silently mean the embedded store: CI with an unset secret, say.
        if value is not None and not value.strip():
            raise ValueError("is empty (a variable set to ''?): name the MLflow server, or leave it out for the "
                             "embedded store")
        return value


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
