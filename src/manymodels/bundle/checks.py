"""Checks beyond the schema, one line per problem: references between resources, estimators and their parameters,
reserved column names; the jobs' and the data's checks are in `job_checks` and `data_checks`."""

from __future__ import annotations

from typing import Any

from manymodels.bundle.columns import feature_keys, reserved, reserved_problem
from manymodels.bundle.data_checks import check_data
from manymodels.bundle.forecast_checks import (
    FORECAST_RESERVED,
    HIERARCHY_RESERVED,
)
from manymodels.bundle.job_checks import check_job
from manymodels.bundle.loader import BundleConfig
from manymodels.bundle.messages import did_you_mean
from manymodels.bundle.schema import FallbackSpec, ModelSpec
from manymodels.bundle.selection import member_problems
from manymodels.bundle.source import dotted
from manymodels.bundle.trust import pickle_problems
from manymodels.errors import BundleError
from manymodels.estimators import (
    MissingExtra,
    accepted_params,
    add_import_roots,
    model_names,
    model_params,
    resolve_entry,
)
from manymodels.estimators.reconcile import require as require_reconciler


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
        problems += [reserved_problem(config, key, column) for key, column in named
                     if reserved(column) or (model.task == "forecast" and column in FORECAST_RESERVED)
                     or (model.hierarchy and column in HIERARCHY_RESERVED)]
    for name, job in res.jobs.items():
        problems += check_job(config, name, job)
    if data:
        problems += check_data(config)
    return problems


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
