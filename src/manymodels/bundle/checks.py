"""Checks beyond the schema: references between resources, job graphs, import paths, data columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from manymodels.bundle.forecast import ForecastFeaturesSpec
from manymodels.bundle.forecast_checks import (
    FORECAST_RESERVED,
    HIERARCHY_RESERVED,
    forecast_data_problems,
    forecast_schema_problems,
    time_kind_of,
)
from manymodels.bundle.loader import BundleConfig
from manymodels.bundle.messages import did_you_mean
from manymodels.bundle.schema import FallbackSpec, JobSpec, ModelSpec
from manymodels.bundle.selection import member_problems
from manymodels.bundle.source import dotted
from manymodels.bundle.trust import pickle_problems
from manymodels.data import is_numeric, output_format, read_frame, read_sample, read_schema
from manymodels.errors import BundleError, DataError
from manymodels.estimators import (
    MissingExtra,
    accepted_params,
    add_import_roots,
    model_names,
    model_params,
    resolve_entry,
)
from manymodels.estimators.reconcile import require as require_reconciler

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


def _reserved_problem(config: BundleConfig, key: tuple[str | int, ...], column: str) -> str:
    return (
        f"{config.where(key)}{dotted(key)}: column {column!r} has a name manymodels gives its own columns (the "
        "manifest, evaluation and monitoring tables, the scores); rename it in the data (a python task can)"
    )


def check_bundle(config: BundleConfig, data: bool = True, params: bool = True) -> list[str]:
    """Every problem of a resolved bundle, one line each (empty when it is sound).

    Args:
        config: the bundle resolved for a target.
        data: also open each dataset's schema and check the columns the models use.
        params: also check estimator and tuning parameters against what each estimator takes (which
            imports LightGBM, seconds of a command that fits nothing).
    """
    problems: list[str] = []
    res = config.resolved.resources
    add_import_roots([str(config.root / "src"), str(config.root)])
    for name, model in res.models.items():
        base = ("resources", "models", name)
        if model.dataset not in res.datasets:
            problems.append(
                f"{config.where((*base, 'dataset'))}{dotted(base)}.dataset: no dataset {model.dataset!r} "
                f"in resources.datasets{did_you_mean(model.dataset, res.datasets)}"
            )
        if model.estimator.entry:
            try:
                resolve_entry(model.estimator.entry)
            except BundleError as exc:
                problems.append(f"{config.where((*base, 'estimator', 'entry'))}{dotted(base)}.estimator.entry: {exc}")
        if params:
            problems += estimator_problems(config, name, model)
        problems += pickle_problems(config, name, model)
        problems += [f"{config.where((*base, *key))}{dotted((*base, *key))}: {why}"
                     for key, why in member_problems(model)]
        named: list[tuple[tuple[str | int, ...], str]] = [((*base, "segment_by", i), c) for i, c in
                                                          enumerate(model.segment_by)]
        named.append(((*base, "label"), model.label))
        named += [((*base, *suffix), c) for suffix, c in feature_keys(model)]
        if model.task == "forecast" and model.time:
            named.append(((*base, "time"), model.time))
        if isinstance(model.fallback, FallbackSpec):
            named += [((*base, "fallback", "segment_by", i), c) for i, c in enumerate(model.fallback.segment_by)]
        problems += [_reserved_problem(config, key, column) for key, column in named
                     if reserved(column) or (model.task == "forecast" and column in FORECAST_RESERVED)
                     or (model.hierarchy and column in HIERARCHY_RESERVED)]
    for name, job in res.jobs.items():
        problems += _check_job(config, name, job)
    if data:
        problems += _check_data(config)
    return problems


def model_features(model: ModelSpec, schema: pa.Schema) -> list[str]:
    """The model's feature columns: as listed (a forecast's known and static ones), or every numeric column but
    label, segments and split time."""
    listed = model.feature_columns
    if listed is not None:
        return listed
    skip = {model.label, *model.segment_by, model.split.by, *_pandas_index(schema)}
    return [f.name for f in schema if f.name not in skip and is_numeric(f.type)]


def _pandas_index(schema: pa.Schema) -> list[str]:
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


def estimator_problems(config: BundleConfig, name: str, model: ModelSpec) -> list[str]:
    """Parameters an estimator does not take (LightGBM's own names and aliases; a class's constructor or
    `get_params()`; a function's keyword arguments), each with "did you mean": the estimator's, each
    candidate's, and each tuning space's."""
    base: tuple[str | int, ...] = ("resources", "models", name)
    fitted: list[tuple[tuple[str | int, ...], str, str | None, dict[str, Any], str]]
    if model.candidates:
        fitted = [((*base, "candidates", i), c.type, c.entry, c.params, c.name)
                  for i, c in enumerate(model.candidates) if c.type not in ("baseline", "ensemble", "statsforecast")]
    else:
        est = model.estimator
        fitted = [((*base, "estimator"), est.type, est.entry, est.params, est.type)]
    problems: list[str] = []
    for key, kind, entry, params, candidate in fitted:
        tuning = model.tuning.get(candidate)
        if not params and tuning is None:
            continue
        try:
            known = accepted_params(kind, entry)
        except BundleError:
            continue  # an entry that does not import is reported on its own line
        if known is None:
            continue
        what = "LightGBM" if kind == "lightgbm" else entry
        named: list[tuple[tuple[str | int, ...], str]] = [((*key, "params", p), p) for p in params]
        if tuning is not None:
            named += [((*base, "tuning", candidate, "space", p), p) for p in tuning.space]
        problems += [
            f"{config.where(at)}{dotted(at)}: {what} has no parameter {param!r}{did_you_mean(param, known)}"
            for at, param in named
            if param not in known
        ]
    problems += _statistical_problems(config, base, model)
    if model.hierarchy:
        try:
            require_reconciler()
        except BundleError as exc:
            problems.append(f"{config.where((*base, 'hierarchy'))}{dotted((*base, 'hierarchy'))}: {exc}")
    for i, c in enumerate(model.candidates or []):
        if c.entry:
            try:
                resolve_entry(c.entry)
            except BundleError as exc:
                at = (*base, "candidates", i, "entry")
                problems.append(f"{config.where(at)}{dotted(at)}: {exc}")
    return problems


def _statistical_problems(config: BundleConfig, base: tuple[str | int, ...], model: ModelSpec) -> list[str]:
    """statsforecast candidates whose model class or params statsforecast does not have (or no statsforecast)."""
    problems: list[str] = []
    for i, c in enumerate(model.candidates or []):
        if c.type != "statsforecast" or c.model is None:
            continue
        key = (*base, "candidates", i)
        try:
            known = model_params(c.model)
        except BundleError as exc:
            missing = isinstance(exc, MissingExtra)
            at = (*key, "type") if missing else (*key, "model")
            hint = "" if missing else did_you_mean(c.model, model_names())
            problems.append(f"{config.where(at)}{dotted(at)}: {exc}{hint}")
            continue
        named: list[tuple[tuple[str | int, ...], str]] = [((*key, "params", p), p) for p in c.params]
        tuning = model.tuning.get(c.name)
        if tuning is not None:
            named += [((*base, "tuning", c.name, "space", p), p) for p in tuning.space]
        problems += [f"{config.where(at)}{dotted(at)}: statsforecast's {c.model} has no parameter {param!r}"
                     f"{did_you_mean(param, known)}" for at, param in named if param not in known]
    return problems


def _check_job(config: BundleConfig, name: str, job: JobSpec) -> list[str]:
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
    cycle = _find_cycle({t.key: list(t.depends_on) for t in job.tasks})
    if cycle:
        problems.append(
            f"{config.where(('resources', 'jobs', name))}resources.jobs.{name}: tasks depend on each "
            f"other in a cycle: {' -> '.join(cycle)}"
        )
    return problems


def _find_cycle(graph: dict[str, list[str]]) -> list[str]:
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


def _check_data(config: BundleConfig) -> list[str]:
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
    skip = {*model.segment_by, str(model.time), model.split.by, *_pandas_index(schema)}
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
            problems.append(_reserved_problem(config, key, col) + " or list the features")
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


def is_text(dtype: pa.DataType) -> bool:
    """Whether a column of this Arrow type holds text or categories (a categorical feature for LightGBM)."""
    return bool(pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_dictionary(dtype))
