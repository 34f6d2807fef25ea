"""The columns a model reads (its features, as listed or found) and the names manymodels keeps for its own."""

from __future__ import annotations

import pyarrow as pa

from manymodels.bundle.forecast import ForecastFeaturesSpec
from manymodels.bundle.loader import BundleConfig
from manymodels.bundle.schema import ModelSpec
from manymodels.bundle.source import dotted
from manymodels.data import is_numeric

# Column names manymodels writes beside a model's segment columns (the manifest, the evaluation and monitoring
# tables) or beside its input columns (scores): a segment, feature or label column of the same name would clash
# (all-null predictions, duplicate columns, an input column overwritten). tests/unit/bundle keeps this list
# level with the names the other layers use.
RESERVED_COLUMNS = frozenset({
    # the manifest
    "segment_index", "status", "error", "rows", "n_train", "n_test", "shard", "checksum", "shard_checksum",
    "model_format", "fingerprint", "fit_seconds", "constant", "profile", "source_run", "carried", "stored_index",
    "attempt",
    "candidate", "params", "cv_folds", "cv_mean", "cv_std", "cv_baseline", "cv_scores", "cv_folds_won",
    "step_metric", "holdout_naive", "forecast_state", "interval_scores",
    # metrics
    "rmse", "mae", "mape", "r2", "logloss", "auc", "accuracy",
    # evaluation and promotion
    "challenger", "champion", "run_status", "train_rows", "has_champion", "same_model", "change", "decision",
    "reason", "over_quality_gate", "basis",
    # monitoring
    "psi_max", "worst_column", "drifted", "degraded", "metric_increase", "served_by", "model_index", "metric_new",
    "metric_p", "coverage_95", "coverage_p", "degraded_q", "drifted_q", "loss_p", "banded", "misses",
    "design_effect", "window_between", "window_within", "window_between_signed",
    "window_within_signed", "window_count", "window_steps",
    # scores
    "prediction", "model_source",
})
RESERVED_PREFIXES = ("psi.", "ks.", "p.")  # monitoring's per-column statistics


# What LightGBM refuses in a feature's name ("special JSON characters"; a line break splits the name in two):
# every segment's fit would fail on it, so validate says so first.
LIGHTGBM_REFUSES = frozenset('[]{}":,\n')


def reserved(column: str) -> bool:
    """Whether a column name clashes with one manymodels writes."""
    return column in RESERVED_COLUMNS or column.startswith(RESERVED_PREFIXES)


def reserved_problem(config: BundleConfig, key: tuple[str | int, ...], column: str) -> str:
    return (
        f"{config.where(key)}{dotted(key)}: column {column!r} has a name manymodels gives its own columns (the "
        "manifest, evaluation and monitoring tables, the scores); rename it in the data (a python task can)"
    )


def model_features(model: ModelSpec, schema: pa.Schema) -> list[str]:
    """The model's feature columns: as listed (a forecast's known and static ones), or every numeric column but
    label, segments and split time."""
    listed = model.feature_columns
    if listed is not None:
        return listed
    skip = {model.label, *model.segment_by, model.split.by, *pandas_index(schema)}
    return [f.name for f in schema if f.name not in skip and is_numeric(f.type)]


def pandas_index(schema: pa.Schema) -> list[str]:
    """The columns where pandas kept a frame's index (`__index_level_0__`: `to_parquet` of a frame whose index is not
    a plain range): reading the file makes them the index again, so they are no feature."""
    try:
        found = schema.pandas_metadata or {}
    except (ValueError, TypeError):  # metadata that is not pandas' JSON
        return []
    return [c for c in found.get("index_columns", []) if isinstance(c, str)]


def feature_keys(model: ModelSpec) -> list[tuple[tuple[str | int, ...], str]]:
    """Where each listed feature column is named in the model's section: (key path below the model, column)."""
    keys: list[tuple[tuple[str | int, ...], str]] = []
    if isinstance(model.features, ForecastFeaturesSpec):
        keys += [(("features", "known", i), c) for i, c in enumerate(model.features.known)]
        keys += [(("features", "static", i), c) for i, c in enumerate(model.features.static)]
    else:
        keys += [(("features", i), c) for i, c in enumerate(model.features or [])]
    return keys


def is_text(dtype: pa.DataType) -> bool:
    """Whether a column of this Arrow type holds text or categories (a categorical feature for LightGBM)."""
    return bool(pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_dictionary(dtype))
