"""What the segment layer is given from a bundle's model: its selection (validation and candidates) and a
forecast's plan."""

from __future__ import annotations

from manymodels.bundle import ModelSpec
from manymodels.bundle.forecast import default_calendar
from manymodels.bundle.schema import HIGHER_IS_BETTER
from manymodels.bundle.selection import ValidationSpec
from manymodels.segment.spec import Candidate, ForecastPlan, Rolling, Validation


def selection_spec(spec: ModelSpec) -> tuple[Validation, tuple[Candidate, ...]]:
    """A model's validation and candidates (with their tuning) as the segment layer takes them.

    A forecast validates on rolling-origin windows that each forecast its horizon (3, each `horizon` steps
    before the next, unless `validation` says otherwise).
    """
    forecast = spec.task == "forecast"
    v = spec.validation or ValidationSpec(kind="time" if forecast else "kfold")
    # Without a horizon of its own, a time window tests as far ahead as the segment's holdout does (0: the holdout's).
    given = "horizon" in v.model_fields_set
    horizon = int(spec.horizon or 1) if forecast else (v.horizon if given or v.kind != "time" else 0)
    validation = Validation(
        kind=v.kind,
        folds=v.folds,
        seed=v.seed,
        by=spec.time_column,
        windows=v.windows,
        horizon=horizon,
        step=v.step or horizon,  # 0 with a horizon of 0: the holdout's too
        metric=spec.selection_metric,
        maximize=spec.selection_metric in HIGHER_IS_BETTER,
    )
    candidates = []
    for c in spec.candidate_specs:
        tuning = spec.tuning.get(c.name)
        candidates.append(
            Candidate(
                name=c.name,
                estimator=c.type,
                entry=c.model if c.type == "statsforecast" else c.entry,
                params=dict(c.params),
                method=c.method,
                period=c.period,
                space=dict(tuning.space) if tuning else {},
                trials=tuning.trials if tuning else 0,
                sampler=tuning.sampler if tuning else "tpe",
                scope=tuning.scope if tuning else "segment",
                sample=tuning.sample if tuning else 50,
                window=c.window,
                pooled=c.scope == "global",
                members=tuple(c.members or ()),
                weights=c.weights,
                own_intervals=c.intervals == "model",
            )
        )
    return validation, tuple(candidates)


def forecast_plan(spec: ModelSpec, time_kind: str, freq: str | None) -> ForecastPlan:
    """A forecast model's plan as the segment layer takes it: its features, transforms, strategy and grid."""
    features = spec.forecast_features
    calendar = features.calendar if features.calendar is not None else default_calendar(freq, time_kind == "date")
    return ForecastPlan(
        time=str(spec.time),
        horizon=int(spec.horizon or 1),
        freq=freq,
        time_kind=time_kind,
        lags=tuple(spec.lags),
        rolling=tuple(Rolling(r.window, tuple(r.stats), r.lag) for r in features.rolling),
        calendar=tuple(calendar),
        known=tuple(features.known),
        static=tuple(features.static),
        transforms=tuple(spec.transforms),
        strategy=spec.strategy,
        gaps=spec.gaps,
        hierarchy=tuple(spec.hierarchy or ()),
        reconcile=(spec.reconcile or "min_trace_shrink") if spec.hierarchy else None,
    )
