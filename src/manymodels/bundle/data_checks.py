"""Checks of a bundle against its data: the columns each model and score task names, the rows `train` would stop on,
and warnings of columns likely read wrong."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from manymodels.bundle.columns import (
    LIGHTGBM_REFUSES,
    feature_keys,
    is_text,
    model_features,
    pandas_index,
    reserved,
    reserved_problem,
)
from manymodels.bundle.forecast import ForecastFeaturesSpec
from manymodels.bundle.forecast_checks import (
    forecast_data_problems,
    forecast_schema_problems,
    time_kind_of,
)
from manymodels.bundle.loader import BundleConfig
from manymodels.bundle.messages import did_you_mean
from manymodels.bundle.schema import FallbackSpec, ModelSpec
from manymodels.bundle.source import dotted
from manymodels.data import is_numeric, read_frame, read_sample, read_schema
from manymodels.errors import DataError


def check_data(config: BundleConfig) -> list[str]:
    """Each dataset's schema read, then the columns every model and score task names and the rows `train` would
    stop on checked against it, one line per problem."""
    problems: list[str] = []
    res = config.resolved.resources
    schemas: dict[str, pa.Schema] = {}
    for name, ds in res.datasets.items():
        try:
            schemas[name] = read_schema(config.resolve_path(ds.path), ds.format, ds.na_values)
        except DataError as exc:
            problems.append(f"{config.where(('resources', 'datasets', name, 'path'))}resources.datasets.{name}: {exc}")
    for name, model in res.models.items():
        schema = schemas.get(model.dataset)
        if schema is None:
            continue
        found = model_problems(config, name, schema)
        problems += found
        if not found:
            problems += _rows_problems(config, name, model, schema)
    for job_name, job in res.jobs.items():
        for i, task in enumerate(job.tasks):
            if task.score is None or task.score.model not in res.models:
                continue
            schema = schemas.get(task.score.dataset)
            if schema is None:
                continue
            base = ("resources", "jobs", job_name, "tasks", i, "score")
            problems += _columns_problems(
                config, base, res.models[task.score.model], task.score.dataset, schema, with_label=False
            )
    return problems


def model_problems(config: BundleConfig, name: str, schema: pa.Schema) -> list[str]:
    """Problems of one model family's columns against its dataset's schema."""
    model = config.resolved.resources.models[name]
    return _columns_problems(config, ("resources", "models", name), model, model.dataset, schema, with_label=True)


def cutoff_problem(cutoff: str, column: str, dtype: pa.DataType, where: str) -> str | None:
    """Why a time split's cutoff cannot be compared with its column's values (None when it can).

    Training compares numbers with numbers and dates with dates (a text column is read as dates).
    """
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        try:
            float(cutoff)
        except ValueError:
            return (
                f"cutoff {cutoff!r} cannot be compared with column {column!r}, which is {dtype} (numbers) in "
                f"{where}: give a number, e.g. cutoff: 2020"
            )
        return None
    try:
        pd.Timestamp(cutoff)
    except (ValueError, TypeError):
        kind = "dates" if pa.types.is_temporal(dtype) else f"{dtype}, read as dates"
        return (
            f"cutoff {cutoff!r} cannot be compared with column {column!r}, which is {kind} in {where}: give a date, "
            'e.g. cutoff: "2025-10-01"'
        )
    return None


# How much of a Parquet or Delta dataset the scan for text columns holding numbers reads (a CSV is read whole: its
# types come from every row), and how many distinct other values such a column may hold to be reported.
SCAN_ROWS = 50_000
FEW_OTHERS = 5


def data_warnings(config: BundleConfig) -> list[str]:
    """What a dataset holds that fits the bundle but is likely not meant: a column a model reads as numbers (its
    label, a feature, or with features unlisted any column) that is text because, beside numbers, it holds a few
    other values ("N/A", "-", "?"). One line per dataset and column, naming the values, what each model makes of the
    column, and the fix (`na_values`). Unreadable datasets are left to `check_bundle`."""
    res = config.resolved.resources
    effects: dict[str, dict[str, list[str]]] = {}  # dataset -> column -> what each model makes of it
    schemas: dict[str, pa.Schema] = {}
    for name, model in res.models.items():
        ds = res.datasets.get(model.dataset)
        if ds is None:
            continue
        try:
            schema = schemas.get(model.dataset) or read_schema(config.resolve_path(ds.path), ds.format, ds.na_values)
        except DataError:
            continue
        schemas[model.dataset] = schema
        for column, effect in _read_as_numbers(name, model, schema).items():
            effects.setdefault(model.dataset, {}).setdefault(column, []).append(effect)
    lines: list[str] = []
    for name, columns in effects.items():
        ds = res.datasets[name]
        try:
            frame = read_sample(config.resolve_path(ds.path), ds.format, list(columns), SCAN_ROWS, ds.na_values)
        except DataError:
            continue
        for column, said in columns.items():
            found = numbers_and_others(frame[column])
            if found is None:
                continue
            others, rows, read = found
            shown = ", ".join(_short(v) for v in others)
            markers = ", ".join(_short(v, quote='"') for v in others)
            key = ("resources", "datasets", name)
            lines.append(
                f"{config.where(key)}{dotted(key)}: column {column!r} is text: it holds numbers and {len(others)} "
                f"other value{'s' if len(others) > 1 else ''} ({shown}) in {rows:,} of {read:,} rows read, so "
                f"{'; '.join(said)}; if they mark missing values, add na_values: [{markers}] to {dotted(key)}"
            )
    return lines


def _read_as_numbers(name: str, model: ModelSpec, schema: pa.Schema) -> dict[str, str]:
    """The text columns of a model's dataset it would read as numbers (its label, its features listed, or any
    column but segments, time and split), each with what the model makes of it as text."""
    skip = {*model.segment_by, str(model.time), model.split.by, *pandas_index(schema)}
    if isinstance(model.fallback, FallbackSpec):
        skip |= set(model.fallback.segment_by)
    if model.validation is not None and model.validation.by is not None:
        skip.add(model.validation.by)
    if isinstance(model.features, ForecastFeaturesSpec):
        skip |= set(model.features.static)  # constant per segment: text is taken as it is
    listed = model.feature_columns
    others = sorted({t for t in model.estimator_types if t not in ("lightgbm", "baseline", "ensemble")})
    if others:
        as_feature = f"model {name!r} cannot fit it (type {' and '.join(others)} takes numbers)"
    else:
        as_feature = f"model {name!r} takes it as categories (LightGBM), not numbers"
    found: dict[str, str] = {}
    for column in [model.label, *(listed if listed is not None else schema.names)]:
        if column in found or column in skip or column not in schema.names or not is_text(schema.field(column).type):
            continue
        if column == model.label:
            found[column] = f"model {name!r} cannot train on it (a label must be numbers)"
        elif listed is None:
            found[column] = f"model {name!r} leaves it out of its features (they are its number columns)"
        else:
            found[column] = as_feature
    return found


def numbers_and_others(column: pd.Series) -> tuple[list[str], int, int] | None:
    """A text column's few values that are not numbers (sorted), the rows holding them and the rows read — when
    most of its values are numbers and at most `FEW_OTHERS` distinct ones are not; else None."""
    values = column.dropna().astype(str)
    if values.empty:
        return None
    numeric = pd.to_numeric(values.str.strip(), errors="coerce").notna()
    others = values[~numeric]
    distinct = sorted(others.unique())
    if not distinct or len(distinct) > FEW_OTHERS or numeric.sum() < len(others):
        return None
    return distinct, len(others), len(column)


def _short(value: str, quote: str = "'") -> str:
    text = value if len(value) <= 12 else value[:11] + "…"
    return quote + text.replace(quote, "\\" + quote) + quote


def _rows_problems(config: BundleConfig, name: str, model: ModelSpec, schema: pa.Schema) -> list[str]:
    """A model's rows checked, from its segment columns (and a forecast's time) read once: what `train` would stop
    on, and a forecast's time, grid and history."""
    base = ("resources", "models", name)
    dataset = config.resolved.resources.datasets[model.dataset]
    columns = [*model.segment_by, *([str(model.time)] if model.task == "forecast" else [])]
    try:
        frame = read_frame(config.resolve_path(dataset.path), dataset.format, columns, dataset.na_values)
    except DataError as exc:
        return [f"{config.where((*base, 'dataset'))}{dotted(base)}.dataset: {exc}"]
    found = _segment_problems(config, name, model, frame[list(model.segment_by)])
    if model.task == "forecast":
        kind = time_kind_of(schema.field(str(model.time)).type)
        found += [f"{config.where((*base, *key))}{dotted((*base, *key))}: {why}"
                 for key, why in forecast_data_problems(model, frame, kind or "date")]
    return found


def _segment_problems(config: BundleConfig, name: str, model: ModelSpec, keys: pd.DataFrame) -> list[str]:
    """What `train` would stop on, from the segment columns alone: no rows, a null key where `null_segments` is
    fail, a `min_rows` above every segment's rows."""
    base = ("resources", "models", name)
    if keys.empty:
        return [f"{config.where((*base, 'dataset'))}{dotted(base)}.dataset: dataset {model.dataset!r} has no rows"]
    null = keys.isna().any(axis=1) if model.segment_by and not model.hierarchy else pd.Series(False, keys.index)
    if null.any() and model.null_segments == "fail":
        key = (*base, "null_segments")
        return [f"{config.where(key)}{int(null.sum()):,} rows of {model.dataset!r} have a null in segment column(s) "
                f"{', '.join(model.segment_by)} and {dotted(key)} is fail: fill or drop them first, or set it to drop "
                "or own"]
    kept = keys[~null] if model.null_segments == "drop" else keys
    if kept.empty or not model.segment_by:
        largest = len(kept)
    else:
        largest = int(kept.groupby(list(model.segment_by), dropna=False, observed=True, sort=False).size().max())
    if model.min_rows > largest and not model.hierarchy:  # a hierarchy's levels above are series too
        key = (*base, "min_rows")
        return [f"{config.where(key)}{dotted(key)} is {model.min_rows}, but the largest segment of "
                f"{model.dataset!r} has {largest:,} rows: every segment would fail; lower min_rows"]
    return []


def _columns_problems(
    config: BundleConfig,
    base: tuple[str | int, ...],
    model: ModelSpec,
    dataset: str,
    schema: pa.Schema,
    with_label: bool,
) -> list[str]:
    names = schema.names
    where = f"dataset {dataset!r}"
    problems: list[str] = []

    def missing(key: tuple[str | int, ...], column: str) -> None:
        problems.append(
            f"{config.where(key)}{dotted(key)}: column {column!r} is not in {where}{did_you_mean(column, names)}"
        )

    model_base = base if base[1] == "models" else None
    key_of = (lambda *k: (*model_base, *k)) if model_base else (lambda *k: base)
    for i, col in enumerate(model.segment_by):
        if col not in names:
            missing(key_of("segment_by", i), col)
    if isinstance(model.fallback, FallbackSpec):
        for i, col in enumerate(model.fallback.segment_by):
            if col not in names:
                missing(key_of("fallback", "segment_by", i), col)
    if with_label:
        if model.label not in names:
            missing(key_of("label"), model.label)
        elif not is_numeric(schema.field(model.label).type):
            problems.append(
                f"{config.where(key_of('label'))}{dotted(key_of('label'))}: label {model.label!r} must "
                f"be numeric; {where} has it as {schema.field(model.label).type}"
            )
        if model.validation is not None and model.validation.by is not None and model.validation.by not in names:
            missing(key_of("validation", "by"), model.validation.by)
        if model.split.by is not None and model.split.by not in names:
            missing(key_of("split", "by"), model.split.by)
        elif model.split.by is not None and model.split.cutoff is not None:
            why = cutoff_problem(model.split.cutoff, model.split.by, schema.field(model.split.by).type, where)
            if why:
                problems.append(f"{config.where(key_of('split', 'cutoff'))}{dotted(key_of('split', 'cutoff'))}: {why}")
    if model.task == "forecast":
        problems += [f"{config.where(key_of(*k))}{dotted(key_of(*k))}: {why}"
                     for k, why in forecast_schema_problems(model, schema, where)]
    features = model_features(model, schema)
    if not features and model.task != "forecast":  # a forecast's lags are features enough
        problems.append(
            f"{config.where(key_of('features'))}{dotted(key_of('features'))}: no numeric feature columns in {where}"
        )
    listed = dict((c, k) for k, c in reversed(feature_keys(model)))
    static = set(model.forecast_features.static) if model.task == "forecast" else set()
    for col in features:
        key = key_of(*listed[col]) if col in listed else key_of("features")
        if col not in listed and reserved(col):  # listed ones are reported without the data
            problems.append(reserved_problem(config, key, col) + " or list the features")
            continue
        if col not in names:
            missing(key, col)
        elif "lightgbm" in model.estimator_types and not LIGHTGBM_REFUSES.isdisjoint(col):
            problems.append(f"{config.where(key)}{dotted(key)}: LightGBM refuses feature names holding "
                            f'[ ] {{ }} " : , or a line break; rename column {col!r} of {where}'
                            f"{'' if col in listed else ' or list the features without it'}")
        elif col in static:
            continue  # constant per segment: text is taken as it is
        elif not is_numeric(schema.field(col).type) and model.task == "forecast":
            problems.append(f"{config.where(key)}{dotted(key)}: known feature {col!r} must be numeric; {where} has it "
                            f"as {schema.field(col).type}")
        elif not is_numeric(schema.field(col).type):
            dtype = schema.field(col).type
            others = sorted({t for t in model.estimator_types if t not in ("lightgbm", "baseline", "ensemble")})
            if not others and is_text(dtype):
                continue  # a categorical feature: LightGBM's own categorical handling
            takes_text = " (type lightgbm takes text as categories)" if is_text(dtype) else ""
            problems.append(
                f"{config.where(key)}{dotted(key)}: feature {col!r} must be numeric for estimator type "
                f"{' and '.join(others)}{takes_text}; {where} has it as {dtype}"
            )
    return problems
