"""The bundle's model-selection sections: `validation`, `candidates`, `tuning`, `selection`."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from manymodels.bundle.messages import did_you_mean
from manymodels.bundle.strict import Strict

BASELINE_METHODS = ("mean", "median", "last", "seasonal", "naive", "seasonal_naive", "drift", "window_average")
REGRESSION_METRICS = ("rmse", "mae", "mape", "r2")
BINARY_METRICS = ("logloss", "auc", "accuracy")


class ValidationSpec(Strict):
    """`validation:` how each segment's training rows are cross-validated to choose its model.

    `kfold` (default): `folds` shuffled folds, `seed`ed. `time`: a rolling-origin backtest on the
    column `by` (default: `split.by`): `windows` windows, the latest testing on the segment's last
    `horizon` distinct times (default: as many as the segment's holdout holds, so a rule such as
    `last` is measured as far ahead as scoring uses it; 1 without a time split), each earlier one
    `step` times sooner; a window trains only on rows before its first test time. The holdout
    (`split`) is never part of it. A forecast's windows each forecast its `horizon`.
    """

    kind: Literal["kfold", "time"] = "kfold"
    folds: int = Field(default=5, ge=2)
    seed: int = 42
    by: str | None = Field(default=None, min_length=1)
    windows: int = Field(default=3, ge=1)
    horizon: int = Field(default=1, ge=1)
    step: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _fields_of_kind(self) -> ValidationSpec:
        given = self.model_fields_set
        if self.kind == "kfold":
            wrong = sorted(given & {"by", "windows", "horizon", "step"})
            if wrong:
                raise ValueError(f"{', '.join(wrong)} are for kind time; kfold takes folds and seed")
        elif "folds" in given:
            raise ValueError("folds is for kind kfold; kind time takes windows, horizon and step")
        return self

    @property
    def window_step(self) -> int:
        """How far each earlier window moves back: `step`, else `horizon` (windows that do not overlap)."""
        return self.step or self.horizon


class CandidateSpec(Strict):
    """One entry of `candidates:`: a model kind every segment tries.

    `type` lightgbm, sklearn or python take `params` (and `entry`, as `estimator:` does);
    `baseline` takes a `method`: `mean`, `median`, `last` (the latest training row's label) or
    `seasonal` (the label `period` steps earlier on the segment's time grid); a forecast's, defined at
    the forecast's origin: `naive` (the last value), `seasonal_naive` (the value `period` steps before
    each target), `drift` (the line through the first and last values), `window_average` (the mean of
    the last `window` values), `mean`, `median`.

    `scope: global` (forecasts; models, not baselines): one model fitted over every segment's series together,
    on the same features, windows and horizon; each segment chooses between its own models and it.

    `type: statsforecast` (forecasts; the `forecast` extra): statsforecast's `model` by class name (AutoETS,
    AutoARIMA, AutoTheta, CrostonOptimized, ...) with its constructor's `params`, fitted on each segment's label
    values (not the features or transforms: the model takes the series' level, trend and season itself).
    `intervals: model` gives its forecasts the model's own prediction intervals (statsforecast's, from its fitted
    errors) instead of the conformal ones every candidate gets (`conformal`, the default) from its windows.

    `type: ensemble` (forecasts): the weighted mean of other candidates' forecasts (`members`, by name), with
    `weights` `equal` or `cv` (each member's inverse mean error on the segment's windows). Its window forecasts
    are combined from its members' (no fit of its own), so selection judges it on the same windows.
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    type: Literal["lightgbm", "sklearn", "python", "baseline", "statsforecast", "ensemble"] = "lightgbm"
    entry: str | None = None
    model: str | None = Field(default=None, min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    method: Literal["mean", "median", "last", "seasonal", "naive", "seasonal_naive", "drift", "window_average"] | None \
        = None
    period: int | None = Field(default=None, ge=2)
    window: int | None = Field(default=None, ge=1)
    scope: Literal["segment", "global"] = "segment"
    members: list[str] | None = None
    weights: Literal["equal", "cv"] = "equal"
    intervals: Literal["conformal", "model"] = "conformal"

    @model_validator(mode="after")
    def _fields_of_type(self) -> CandidateSpec:
        if self.type == "ensemble":
            return self._an_ensemble()
        if self.members is not None or "weights" in self.model_fields_set:
            raise ValueError("members and weights are for type ensemble")
        if self.intervals == "model" and self.type != "statsforecast":
            raise ValueError("intervals: model (a model's own prediction intervals) is for type statsforecast; "
                             f"a {self.type} candidate's are conformal, from its validation windows")
        if self.type == "statsforecast":
            return self._a_statistical_model()
        if self.model is not None:
            raise ValueError("model is for type statsforecast (its model class, e.g. AutoETS); "
                             f"type {self.type} takes {'entry' if self.type in ('sklearn', 'python') else 'params'}")
        if self.type == "baseline" and self.scope == "global":
            raise ValueError("a baseline is a rule each segment applies to its own history: scope global is for "
                             "models (lightgbm, sklearn, python)")
        if self.type == "baseline":
            if self.method is None:
                raise ValueError(f"a baseline needs method: one of {', '.join(BASELINE_METHODS)}")
            if self.entry is not None or self.params:
                raise ValueError("a baseline takes method (and period), not entry or params")
            if self.method in ("seasonal", "seasonal_naive") and self.period is None:
                raise ValueError(f"baseline {self.method} needs period: the season's length in time steps (e.g. 52)")
            if self.method == "window_average" and self.window is None:
                raise ValueError("baseline window_average needs window: how many of the last steps to average")
        elif self.method is not None:
            raise ValueError("method is for type baseline")
        if self.period is not None and self.method not in ("seasonal", "seasonal_naive"):
            raise ValueError("period is for baselines seasonal and seasonal_naive")
        if self.window is not None and self.method != "window_average":
            raise ValueError("window is for baseline window_average")
        if self.type == "lightgbm" and self.entry is not None:
            raise ValueError("entry is only for type sklearn or python; lightgbm needs none")
        if self.type in ("sklearn", "python") and not self.entry:
            raise ValueError(f"type {self.type} needs entry, an import path such as 'pkg.module:Name'")
        return self

    def _a_statistical_model(self) -> CandidateSpec:
        if self.model is None:
            raise ValueError("type statsforecast needs model: a statsforecast model class, e.g. AutoETS, AutoARIMA, "
                             "AutoTheta or CrostonOptimized")
        given = sorted({"entry", "method", "period", "window"} & self.model_fields_set)
        if given:
            raise ValueError(f"type statsforecast takes model and params (its constructor's), not {', '.join(given)}")
        if self.scope == "global":
            raise ValueError("a statsforecast model is fitted on one series' values: scope global is for lightgbm, "
                             "sklearn and python")
        return self

    def _an_ensemble(self) -> CandidateSpec:
        if not self.members or len(set(self.members)) < 2:
            raise ValueError("an ensemble needs members: two or more other candidates' names, e.g. [lgbm, naive]")
        if len(set(self.members)) != len(self.members):
            raise ValueError("an ensemble's members are named once each")
        given = sorted({"entry", "model", "params", "method", "period", "window", "scope"} & self.model_fields_set)
        if given:
            raise ValueError(f"an ensemble combines its members' forecasts: it takes members and weights, not "
                             f"{', '.join(given)}")
        return self


def _dimension(name: str, value: Any) -> dict[str, Any]:
    """One tuning dimension, normalised: {"choices": [...]} or {"int"|"float": [low, high], "log": bool}."""
    if isinstance(value, list):
        if not value:
            raise ValueError(f"{name}: an empty list of choices")
        if any(isinstance(v, (dict, list)) for v in value):
            raise ValueError(f"{name}: choices must be plain values (numbers, text, true/false)")
        return {"choices": list(value)}
    if not isinstance(value, dict):
        raise ValueError(
            f"{name}: give a list of choices ([2, 5, 20]), {{int: [low, high]}} or {{float: [low, high], log: true}}; "
            f"got {value!r}"
        )
    kinds = [k for k in ("int", "float") if k in value]
    unknown = sorted(set(value) - {"int", "float", "log"})
    if len(kinds) != 1 or unknown:
        raise ValueError(
            f"{name}: a range is {{int: [low, high]}} or {{float: [low, high]}} (plus log: true); "
            f"got keys {', '.join(map(str, value))}"
        )
    kind = kinds[0]
    bounds = value[kind]
    number = int if kind == "int" else (int, float)
    if (
        not isinstance(bounds, list)
        or len(bounds) != 2
        or not all(isinstance(b, number) and not isinstance(b, bool) for b in bounds)
    ):
        raise ValueError(
            f"{name}: {kind} takes [low, high], two {'integers' if kind == 'int' else 'numbers'}; got {bounds!r}"
        )
    low, high = bounds
    if not low < high or (kind == "float" and not (math.isfinite(low) and math.isfinite(high))):
        raise ValueError(f"{name}: low {low} must be below high {high}")
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{name}: log is true or false")
    if log and low <= 0:
        raise ValueError(f"{name}: a log range needs low above 0; got {low}")
    return {kind: [low, high], "log": log}


class TuningSpec(Strict):
    """`tuning.<candidate>:` its parameters searched per segment (Optuna, in memory, seeded).

    `space`: parameter -> a list of choices, `{int: [low, high]}` or `{float: [low, high], log:
    true}`. `trials` parameter sets are tried (each cross-validated); `sampler` tpe (default),
    random, or grid (lists only; at most `trials` of the grid's points), seeded with
    `validation.seed`. `scope: segment` (default) tunes each segment on its own; `scope: global`
    runs one study for the fleet, each trial scored on the same `sample` segments (drawn with
    `validation.seed`), and fits every segment with the best parameters: for fleets where a study
    per segment costs too much.
    """

    space: dict[str, Any] = Field(min_length=1)
    trials: int = Field(default=20, ge=1)
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    scope: Literal["segment", "global"] = "segment"
    sample: int = Field(default=50, ge=1)

    @field_validator("space")
    @classmethod
    def _dimensions(cls, value: dict[str, Any]) -> dict[str, Any]:
        out, wrong = {}, []
        for name, dim in value.items():
            try:
                out[str(name)] = _dimension(str(name), dim)
            except ValueError as exc:
                wrong.append(str(exc))
        if wrong:
            raise ValueError("; ".join(wrong))
        return out

    @model_validator(mode="after")
    def _sample_is_global(self) -> TuningSpec:
        if "sample" in self.model_fields_set and self.scope != "global":
            raise ValueError("sample is for scope global: the segments one study for the fleet is scored on")
        return self

    @model_validator(mode="after")
    def _grid_needs_lists(self) -> TuningSpec:
        if self.sampler == "grid":
            ranges = [n for n, d in self.space.items() if "choices" not in d]
            if ranges:
                raise ValueError(f"sampler grid takes lists of choices; {', '.join(ranges)} is a range")
        return self


class SelectionSpec(Strict):
    """`selection:` how the winner is picked, on the cross-validated `metric` (default: the model's).

    `rule: best` (default): each segment takes the candidate with its best mean. `rule: fleet` (forecasts): every
    segment takes one candidate, the one whose mean window error, divided by each segment's best, has the lowest
    median over `sample` segments (default 200, drawn with `validation.seed`), judged before the fleet is fitted; a
    segment where it could not be scored takes its own best. For short series, whose few windows choose noisily.

    `regret: true` (forecasts): every candidate also forecasts each segment's holdout (one more fit per candidate),
    so the run reports the selection's regret: the winner's holdout error minus the best candidate's.
    """

    metric: str | None = None
    rule: Literal["best", "fleet"] = "best"
    sample: int = Field(default=200, ge=1)
    regret: bool = False

    @model_validator(mode="after")
    def _sample_is_fleet(self) -> SelectionSpec:
        if "sample" in self.model_fields_set and self.rule != "fleet":
            raise ValueError("sample is for rule fleet: the segments the fleet's choice is judged on")
        return self


def selection_problem(model: Any) -> str | None:
    """Why a model's selection sections do not fit together (and with its task, split and promotion), or None."""
    forecast = model.task == "forecast"  # validates on rolling-origin windows of its horizon, by default
    if model.promotion.basis == "cv" and model.validation is None and not forecast:
        return "promotion.basis cv compares cross-validated metrics: add validation"
    if model.promotion.basis == "cv" and model.promotion_metric != model.selection_metric:
        return (
            f"promotion.basis cv compares the folds' {model.selection_metric} (selection.metric): "
            f"promotion.metric {model.promotion_metric} cannot be read from them"
        )
    if (model.candidates or model.tuning) and model.validation is None and not forecast:
        return (
            "candidates and tuning are chosen among by cross-validation: add validation, "
            "e.g. validation: {kind: kfold, folds: 5}"
        )
    if model.candidates and "estimator" in model.model_fields_set:
        return "give estimator (one model kind) or candidates (several to choose from), not both"
    names = [c.name for c in model.candidate_specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        return f"candidate name(s) {', '.join(twice)} used twice: each needs its own name"
    for name in model.tuning:
        if name not in names:
            return f"tuning.{name}: no candidate {name!r}{did_you_mean(name, names)}"
        tuned = next(c for c in model.candidate_specs if c.name == name)
        if tuned.type == "baseline":
            return f"tuning.{name}: a baseline has no parameters to tune"
        if tuned.type == "ensemble":
            return f"tuning.{name}: an ensemble has no parameters to tune (it averages its members' forecasts)"
        if tuned.scope == "global":
            return f"tuning.{name}: tuning a candidate of scope global is not built; give its params"
    problem = _ensemble_problem(model, names)
    if problem:
        return problem
    if model.selection.regret and not forecast:
        return "selection.regret is for task forecast (every candidate forecasts the segment's holdout)"
    if model.selection.rule == "fleet":
        if not forecast:
            return "selection.rule fleet is for task forecast (each segment's rolling-origin windows, over the fleet)"
        if model.selection_metric in ("r2",):
            return (f"selection.rule fleet divides each candidate's error by the segment's best: metric "
                    f"{model.selection_metric} is not an error; use rmse, mae or mape")
    time = model.time_column
    if model.validation is not None and model.validation.kind == "time" and time is None:
        return "validation kind time needs by, the time column (or a split by time)"
    ordered = [c.name for c in model.candidate_specs if c.method in ("last", "seasonal")]
    if ordered and time is None:
        return f"baseline(s) {', '.join(ordered)} need the rows' time order: set validation.by (kind time) or split.by"
    allowed = BINARY_METRICS if model.task == "binary" else REGRESSION_METRICS
    if model.selection.metric is not None and model.selection.metric not in allowed:
        return (
            f"selection.metric {model.selection.metric!r} does not fit task {model.task}; use one "
            f"of {', '.join(allowed)}"
        )
    return None


def member_problems(model: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """An ensemble's members that are not candidates of its model: (key path within the model, why)."""
    names = [c.name for c in model.candidate_specs]
    out: list[tuple[tuple[str | int, ...], str]] = []
    for i, c in enumerate(model.candidates or []):
        for j, member in enumerate(c.members or [] if c.type == "ensemble" else []):
            if member not in names:
                others = [n for n in names if n != c.name]
                out.append((("candidates", i, "members", j),
                            f"member {member!r} of ensemble {c.name} is not a candidate{did_you_mean(member, others)}"))
    return out


def _ensemble_problem(model: Any, names: list[str]) -> str | None:
    """Why an ensemble's members do not fit (None when they do)."""
    specs = {c.name: c for c in model.candidate_specs}
    for c in model.candidate_specs:
        if c.type != "ensemble":
            continue
        for member in c.members or []:
            found = specs.get(member)
            if found is None:
                continue  # named at its own line by `validate` (checks.member_problems)
            if found.name == c.name or found.type == "ensemble":
                return f"candidate {c.name}: member {member} is an ensemble; members are models and baselines"
            if member in model.tuning and model.tuning[member].scope == "segment":
                return (f"candidate {c.name}: member {member} is tuned per segment; an ensemble combines members "
                        "with fixed params (give its params, or tune it with scope global)")
        if c.weights == "cv" and model.selection_metric in ("r2",):
            return (f"candidate {c.name}: weights cv weigh members by their inverse error; selection metric "
                    f"{model.selection_metric} is not an error: use weights equal")
    return None
