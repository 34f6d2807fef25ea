"""The bundle's forecast sections: `features` as a mapping, `target_transform`, what a forecast may not set."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from manymodels.bundle.messages import did_you_mean
from manymodels.bundle.strict import Strict

# A forecast's baselines: those defined at the forecast's origin (a forecast's only), then those both tasks have.
ORIGIN_BASELINES = ("naive", "seasonal_naive", "drift", "window_average")
FORECAST_BASELINES = (*ORIGIN_BASELINES, "mean", "median")
DEFAULT_LAGS = (1, 2, 3)
# Fields only a forecast model takes (besides features as a mapping).
FORECAST_ONLY = ("time", "freq", "horizon", "target_transform", "strategy", "gaps", "refit", "hierarchy", "reconcile")
# The calendar feature a grid's offset suggests (the default when none are given).
DEFAULT_CALENDAR = {"MS": "month", "ME": "month", "W": "week_of_year", "D": "day_of_week", "B": "day_of_week",
                    "QS": "quarter", "QE": "quarter"}


class RollingSpec(Strict):
    """One entry of `features.rolling:` statistics of the label over `window` steps ending `lag` steps back."""

    window: int = Field(ge=1)
    stats: list[Literal["mean", "std", "min", "max", "sum"]] = Field(default=["mean"], min_length=1)
    lag: int = Field(default=1, ge=1)


class ForecastFeaturesSpec(Strict):
    """`features:` of a forecast model: what each step's model reads.

    `lags`: the label `k` steps before the target (default [1, 2, 3]); `rolling`: statistics of the
    label over a window ending `lag` steps before the target; `calendar`: parts of the target's time
    (default: the grid's season: month for monthly grids, week_of_year for weekly, day_of_week for
    daily, quarter for quarterly); `known`: columns whose future values are known (prices,
    promotions), read at the target's time; `static`: columns constant per segment.
    """

    lags: list[Annotated[int, Field(ge=1)]] | None = None
    rolling: list[RollingSpec] = Field(default_factory=list)
    calendar: list[Literal["week_of_year", "month", "day_of_week", "day_of_month", "quarter", "year"]] | None = None
    known: list[str] = Field(default_factory=list)
    static: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_twice(self) -> ForecastFeaturesSpec:
        for name, values in (("lags", self.lags or []), ("known", self.known), ("static", self.static),
                             ("calendar", self.calendar or [])):
            twice = sorted({str(v) for v in values if list(values).count(v) > 1})
            if twice:
                raise ValueError(f"{name} lists {', '.join(twice)} twice")
        both = sorted(set(self.known) & set(self.static))
        if both:
            raise ValueError(f"{', '.join(both)} cannot be both known and static")
        return self


class TransformSpec(Strict):
    """One entry of `target_transform:`: `{diff: 1}` (or a seasonal period, `{diff: 52}`), `{log1p: true}` or
    `{scale: standard}`. Fitted per segment on its training rows, undone on every forecast."""

    diff: int | None = Field(default=None, ge=1)
    log1p: Literal[True] | None = None
    scale: Literal["standard"] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> TransformSpec:
        given = [k for k in ("diff", "log1p", "scale") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("each transform is one of {diff: N}, {log1p: true} or {scale: standard}")
        return self

    @property
    def step(self) -> tuple[str, int]:
        """As the segment layer takes it: ("diff", period), ("log1p", 1) or ("scale", 1)."""
        if self.diff is not None:
            return ("diff", int(self.diff))
        return ("log1p", 1) if self.log1p else ("scale", 1)


def _features_kind(value: Any) -> str:
    return "(mapping)" if isinstance(value, dict | ForecastFeaturesSpec) else "(list)"


# `features:` is a list of columns, or, for a forecast, a mapping (the tags name the arms in pydantic's errors;
# bundle.messages leaves them out of the key it shows).
Features = Annotated[
    Annotated[list[str], Tag("(list)")] | Annotated[ForecastFeaturesSpec, Tag("(mapping)")],
    Discriminator(_features_kind),
]


def default_calendar(freq: str | None, dates: bool) -> list[str]:
    """The calendar features a grid suggests when none are given: its season's part of the date."""
    if not dates or not freq:
        return []
    base = freq.split("-")[0].lstrip("0123456789")
    return [DEFAULT_CALENDAR[base]] if base in DEFAULT_CALENDAR else []


def forecast_problem(model: Any) -> str | None:
    """Why a model's forecast settings do not fit together (None when they do, or it is no forecast)."""
    given = model.model_fields_set
    if model.task != "forecast":
        wrong = [f for f in FORECAST_ONLY if f in given]
        if wrong:
            return f"{', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} for task forecast"
        if isinstance(model.features, ForecastFeaturesSpec):
            return "features as a mapping (lags, rolling, calendar, known, static) are for task forecast; list columns"
        ensembles = [c.name for c in model.candidate_specs if c.type == "ensemble"]
        if ensembles:
            return (f"candidate(s) {', '.join(ensembles)}: type ensemble (a mean of members' forecasts) is for task "
                    "forecast")
        statistical = [c.name for c in model.candidate_specs if c.type == "statsforecast"]
        if statistical:
            return (f"candidate(s) {', '.join(statistical)}: type statsforecast (a statistical forecast model) is for "
                    "task forecast")
        pooled = [c.name for c in model.candidate_specs if c.scope == "global"]
        if pooled:
            return (f"candidate(s) {', '.join(pooled)}: scope global (one model over every segment's series) is for "
                    "task forecast")
        forecast_only = [c.name for c in model.candidate_specs if c.method in ORIGIN_BASELINES]
        if forecast_only:
            return (f"baseline(s) {', '.join(forecast_only)} forecast from an origin: they are for task forecast "
                    "(regression tasks have mean, median, last and seasonal)")
        return None
    missing = [f for f in ("time", "horizon") if getattr(model, f) is None]
    if missing:
        return f"task forecast needs {' and '.join(missing)} (the time column; the steps a forecast covers)"
    if isinstance(model.features, list):
        return ("features of a forecast are a mapping: {lags: [1, 2, 3], rolling: [...], calendar: [...], "
                "known: [...], static: [...]}")
    if "split" in given:
        return (f"a forecast holds out each segment's last horizon ({model.horizon}) steps: a split (random ones "
                "train on the future) does not apply; remove split")
    if model.validation is not None:
        if model.validation.kind != "time":
            return ("validation kind kfold trains on the future of the rows it tests: a forecast validates on "
                    "rolling-origin windows; use validation: {kind: time, windows: 3}")
        if "horizon" in model.validation.model_fields_set:
            return "each validation window forecasts the model's horizon: remove validation.horizon"
        if model.validation.by is not None and model.validation.by != model.time:
            return f"validation.by is the forecast's time column {model.time!r}: remove it"
    for c in model.candidate_specs:
        if c.type == "baseline" and c.method not in FORECAST_BASELINES:
            named = {"last": "naive", "seasonal": "seasonal_naive"}.get(str(c.method))
            hint = f" (did you mean {named!r}?)" if named else did_you_mean(str(c.method), FORECAST_BASELINES)
            return f"baseline {c.name}: method {c.method} is for regression tasks; a forecast's baselines are " \
                   f"{', '.join(FORECAST_BASELINES)}{hint}"
    why = _hierarchy_problem(model)
    if why:
        return why
    if model.fallback is not None and model.fallback != "global":
        return ("a forecast's fallback is global (one model over every segment's history): fallback by parent "
                "groups is not built for forecasts yet")
    return None


def _hierarchy_problem(model: Any) -> str | None:
    """Why a forecast's `hierarchy` and `reconcile` do not fit its segments (None when they do)."""
    if model.hierarchy is None:
        return "reconcile is for a hierarchy: add hierarchy: [<top column>, ..., <segment column>]" \
            if model.reconcile is not None else None
    levels, by = list(model.hierarchy), list(model.segment_by)
    twice = sorted({c for c in levels if levels.count(c) > 1})
    if twice:
        return f"hierarchy lists {', '.join(twice)} twice"
    if set(levels) != set(by):
        extra = [c for c in levels if c not in by]
        if extra:
            return (f"hierarchy names {', '.join(extra)}, not in segment_by {by}: a hierarchy orders segment_by's "
                    f"columns from the top level down (add {', '.join(extra)} to segment_by)")
        missing = [c for c in by if c not in levels]
        return f"hierarchy leaves out segment_by's {', '.join(missing)}: list every segment column, top level first"
    if model.null_segments == "own":
        return ("null_segments own: a hierarchy marks its aggregated series with a null in the columns below their "
                "level, so a null segment value cannot be a segment of its own; use drop or fail")
    return None
