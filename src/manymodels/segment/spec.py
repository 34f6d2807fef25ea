"""What every segment of a model family is fitted with: plain, picklable, no client handles."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class Candidate:
    """One model kind selection tries for every segment, with its tuning.

    Attributes:
        name: how the manifest and reports call it.
        estimator: `lightgbm`, `sklearn`, `python`, `baseline` or `ensemble`.
        entry: the import path (sklearn, python).
        params: fixed parameters (tuned ones are drawn on top of them).
        method: a baseline's method (`mean`, `median`, `last`, `seasonal`; forecasts: `naive`, `seasonal_naive`,
            `drift`, `window_average`).
        period: a seasonal baseline's season length, in steps of the segment's time grid.
        space: parameters to tune: name -> {"choices": [...]} or {"int"|"float": [low, high], "log": bool}.
        trials: parameter sets tried per segment (0: no tuning).
        sampler: `tpe`, `random` or `grid`.
        scope: `segment` (a study per segment) or `global` (one study for the fleet, on `sample` segments,
            run before the fleet is fitted, which then fits with the parameters it found).
        sample: how many segments a global study scores each trial on.
        window: a `window_average` baseline's window, in steps.
        pooled: a forecast candidate fitted once over every segment's series together (the bundle's `scope:
            global`), whose window forecasts each segment's selection reads (`SegmentSpec.shared`).
        members: an ensemble's (estimator `ensemble`) candidates, by name, whose forecasts it averages.
        weights: an ensemble's weights: `equal`, or `cv` (each member's inverse mean window error).
        own_intervals: a statistical model's forecasts get the model's own prediction intervals, not conformal ones.
    """

    name: str
    estimator: str = "lightgbm"
    entry: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    method: str | None = None
    period: int | None = None
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    trials: int = 0
    sampler: str = "tpe"
    scope: str = "segment"
    sample: int = 50
    window: int | None = None
    pooled: bool = False
    members: tuple[str, ...] = ()
    weights: str = "equal"
    own_intervals: bool = False

    @property
    def tuned_globally(self) -> bool:
        """Whether this candidate is tuned once for the fleet, before the fit."""
        return bool(self.trials and self.space and self.scope == "global")


@dataclass(frozen=True)
class Validation:
    """How each segment's training rows are cross-validated to choose its candidate.

    Attributes:
        kind: `kfold` (seeded, shuffled folds) or `time` (rolling origin).
        folds: the number of folds of `kfold`.
        seed: `kfold`'s shuffle and the tuning samplers' seed.
        by: the time column of `time` (and the order of the `last` and `seasonal` baselines).
        windows: the number of rolling-origin windows, latest first.
        horizon: how many of the segment's distinct times each window tests on (0: as many as its holdout holds,
            so a rule such as `last` is measured as far ahead as scoring uses it; 1 without a time split).
        step: how many distinct times each window moves back (0: the horizon).
        metric: the metric candidates are compared on (mean over folds).
        maximize: whether a larger `metric` is better.
    """

    kind: str = "kfold"
    folds: int = 5
    seed: int = 42
    by: str | None = None
    windows: int = 3
    horizon: int = 1
    step: int = 1
    metric: str = "rmse"
    maximize: bool = False


@dataclass(frozen=True)
class Rolling:
    """A rolling statistic of the label: `stats` over `window` steps ending `lag` steps before the target."""

    window: int
    stats: tuple[str, ...] = ("mean",)
    lag: int = 1


@dataclass(frozen=True)
class ForecastPlan:
    """What a forecast model family forecasts and from what (segment.features builds its features).

    Attributes:
        time: the time column.
        horizon: how many steps ahead a forecast covers.
        freq: the grid (a pandas offset for dates, the step for numbers); None until the fleet's is inferred.
        time_kind: `date` or `number`.
        lags: lags of the (transformed) label, in steps.
        rolling: rolling statistics of the (transformed) label.
        calendar: calendar features of the target time (dates only).
        known: columns whose future values are known, read at the target time.
        static: columns constant per segment.
        transforms: the label's transforms, in order: ("diff", period), ("log1p", 1), ("scale", 1).
        strategy: `recursive` (one model, its predictions fed back) or `direct` (one model per step).
        gaps: what a hole in a segment's grid means: `error`, `zero` (no sale) or `missing`.
        hierarchy: the segment columns from the top level down (empty: no hierarchy); every level above the segments
            is a set of segments too, keyed by null in the columns below it (the total: null in all).
        reconcile: how a hierarchy's forecasts are made to add up (`bottom_up`, `top_down`, `min_trace_ols`,
            `min_trace_shrink`); None without a hierarchy.
    """

    time: str
    horizon: int
    freq: str | None = None
    time_kind: str = "date"
    lags: tuple[int, ...] = (1, 2, 3)
    rolling: tuple[Rolling, ...] = ()
    calendar: tuple[str, ...] = ()
    known: tuple[str, ...] = ()
    static: tuple[str, ...] = ()
    transforms: tuple[tuple[str, int], ...] = (("diff", 1),)
    strategy: str = "recursive"
    gaps: str = "error"
    hierarchy: tuple[str, ...] = ()
    reconcile: str | None = None

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> ForecastPlan:
        """A plan read back from `dataclasses.asdict` (JSON: lists for tuples, mappings for rolling windows)."""
        given = dict(fields)
        given["rolling"] = tuple(Rolling(r["window"], tuple(r["stats"]), r["lag"]) for r in given.get("rolling", ()))
        for name in ("lags", "calendar", "known", "static", "hierarchy"):
            given[name] = tuple(given.get(name, ()))
        given["transforms"] = tuple((str(k), int(v)) for k, v in given.get("transforms", ()))
        return cls(**given)

    @property
    def grid_key(self) -> tuple[str, str | None, str]:
        """What places a plan's times on a grid: forecasts on other grids cannot share a pack."""
        return (self.time, self.freq, self.time_kind)

    @property
    def reach(self) -> int:
        """How many steps of the transformed label the features of one step read back (at least 1)."""
        rolled = [r.lag + r.window - 1 for r in self.rolling]
        return max([1, *self.lags, *rolled])

    @property
    def differencing(self) -> int:
        """Steps of history the transforms consume (the sum of their diff periods)."""
        return sum(period for kind, period in self.transforms if kind == "diff")

    @property
    def feature_names(self) -> list[str]:
        """The model's feature columns, in order."""
        names = [f"lag_{lag}" for lag in self.lags]
        names += [f"rolling_{stat}_{r.window}_lag{r.lag}" for r in self.rolling for stat in r.stats]
        return [*names, *self.calendar, *self.known, *self.static]


@dataclass(frozen=True)
class SharedFit:
    """What a pooled candidate's one fit over the fleet gives each segment's selection.

    Attributes:
        candidate: the candidate's name.
        digest: the checksum of its model's bytes (a pack keeps them once, under it).
        scores: per series key (`series_key`): its window metrics (oldest first, as `forecast_windows` places
            them) and its holdout forecast (the model fitted on every series' steps before their holdout).
    """

    candidate: str
    digest: str
    scores: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict, repr=False)


def series_key(values: Any) -> str:
    """One series' key from its segment values, the same whatever reader made their dtypes (int32 or int64, Arrow
    or object text)."""
    return json.dumps([str(v) for v in values])


@dataclass(frozen=True)
class SegmentSpec:
    """The per-segment recipe of one model family.

    Attributes:
        segment_by: the columns whose values name a segment.
        label: the column to predict.
        features: the model's input columns, in order.
        task: `regression` or `binary`.
        estimator: `lightgbm`, `sklearn` or `python`.
        entry: the estimator's import path (sklearn, python).
        params: the estimator's parameters, as given in the bundle.
        test_size: holdout fraction of a random split.
        seed: the random split's seed.
        split_by: the time column of a time split, or None for a random split.
        cutoff: rows with `split_by` before it train, the rest are the holdout.
        min_rows: segments with fewer rows fail (the fallback model serves them, once it exists).
        metric: the primary metric.
        import_roots: folders put on sys.path so a project's own estimators import.
        impute: fill missing feature values (`median`, `zero`) before a sklearn or python estimator.
        candidates: the models selection chooses among (empty: the one estimator above, no selection).
        validation: how selection scores candidates (None: no cross-validation).
        forecast: the forecast plan of a `task: forecast` family (None: a regression or binary one).
        pool_by: a pooled forecast fit's (a fallback's, or with validation a pooled candidate's): the columns that
            split its one segment (every row) into the series its one model is fitted on together.
        shared: the pooled candidates' fits, read by each segment's selection (the fingerprint keeps their digests).
        chosen: the candidate every segment takes where it could be scored (selection rule fleet), else None.
        refit: forecasts: the winner fitted again on every step once the holdout has measured it (the measured model
            kept beside it, for `evaluate`).
        regret: forecasts: every candidate also forecasts the holdout (one more fit each), so the selection's
            regret (the winner's holdout error minus the best candidate's) is known per segment.
    """

    segment_by: tuple[str, ...]
    label: str
    features: tuple[str, ...]
    task: str = "regression"
    estimator: str = "lightgbm"
    entry: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    test_size: float = 0.2
    seed: int = 42
    split_by: str | None = None
    cutoff: str | None = None
    min_rows: int = 5
    metric: str = "rmse"
    import_roots: tuple[str, ...] = ()
    impute: str | None = None
    candidates: tuple[Candidate, ...] = ()
    validation: Validation | None = None
    forecast: ForecastPlan | None = None
    pool_by: tuple[str, ...] = ()
    shared: tuple[SharedFit, ...] = ()
    chosen: str | None = None
    refit: bool = False
    regret: bool = False

    @cached_property
    def fingerprint(self) -> str:
        """A hash of everything that changes what a segment's model would be, given the same rows (once per spec:
        every segment's fingerprint starts with it)."""
        # field by field: a pooled fit's scores (a row per series) are not copied into it, only their digests
        spec = {f.name: _plain(getattr(self, f.name)) for f in fields(self)
                if f.name not in ("import_roots", "shared")}
        if self.shared:
            spec["shared"] = [[s.candidate, s.digest] for s in self.shared]
        # unset, newer fields change no older fingerprint
        for newer in ("impute", "candidates", "validation", "forecast", "pool_by", "chosen", "refit", "regret"):
            if not spec[newer]:
                spec.pop(newer)
        if spec.get("forecast"):  # how the levels add up changes no segment's model given its rows
            spec["forecast"].pop("hierarchy", None)
            spec["forecast"].pop("reconcile", None)
        for candidate in spec.get("candidates", ()):
            if candidate.get("window") is None:  # newer than most fingerprints: unset changes none
                candidate.pop("window")
            if not candidate.get("pooled"):
                candidate.pop("pooled", None)
            if not candidate.get("own_intervals"):  # conformal intervals, as before `intervals: model` existed
                candidate.pop("own_intervals", None)
            if not candidate.get("members"):  # not an ensemble: as before ensembles were
                candidate.pop("members", None)
                candidate.pop("weights", None)
        text = json.dumps(spec, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def columns(self) -> list[str]:
        """The columns training reads: segments, features, label and the split's time column."""
        cols = [*self.segment_by, *self.pool_by, *self.features, self.label]
        if self.forecast is not None:
            cols.append(self.forecast.time)
        if self.split_by:
            cols.append(self.split_by)
        if self.validation is not None and self.validation.by:
            cols.append(self.validation.by)
        return list(dict.fromkeys(cols))

    @property
    def time_column(self) -> str | None:
        """The column that orders a segment's rows in time: the forecast's, the validation's, else the split's."""
        if self.forecast is not None:
            return self.forecast.time
        return (self.validation.by if self.validation is not None else None) or self.split_by

    @property
    def pooled_fit(self) -> bool:
        """Whether this is a pooled candidate's fit over the fleet (one segment of every row, scored per series)."""
        return bool(self.pool_by) and self.validation is not None

    @property
    def selecting(self) -> bool:
        """Whether segments are cross-validated (and their candidates chosen), not just fitted."""
        return self.validation is not None

    @property
    def heavy(self) -> bool:
        """Whether a segment's fit costs far more than its rows say: a statistical model (a search over model
        forms per window) or tuning per segment (trials x windows); engines then spread even a small fleet."""
        return any(c.estimator == "statsforecast" or (c.trials and c.scope == "segment") for c in self.choices())

    def choices(self) -> tuple[Candidate, ...]:
        """The candidates: as given, or the one estimator under its type's name."""
        if self.candidates:
            return self.candidates
        return (Candidate(self.estimator, self.estimator, self.entry, dict(self.params)),)

    def rules(self) -> list[str]:
        """The candidates that are baselines: rules, and ensembles of rules alone."""
        kinds = {c.name: c.estimator for c in self.choices()}
        return [c.name for c in self.choices() if c.estimator == "baseline"
                or (c.members and all(kinds.get(m) == "baseline" for m in c.members))]


def _plain(value: Any) -> Any:
    """A field's value as `dataclasses.asdict` gives it (dataclasses as mappings, tuples of them as lists)."""
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
