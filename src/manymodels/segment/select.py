"""Model selection inside one segment: folds, candidates, tuning, the winner.

Every candidate (and every tuning trial of it) is fitted on each fold's training rows and
scored on its test rows with the selection metric; the candidate with the best mean wins and is
refitted on all the segment's training rows. The holdout never enters: `fit_segment` passes only
the training rows here.

Tuning is an Optuna study per segment and candidate, kept in memory, its sampler seeded, so the
same rows give the same trials on every engine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from manymodels.estimators import FORMAT_BASELINE, Predictor, fit_baseline, fit_model, time_values
from manymodels.segment.metrics import compute_metrics
from manymodels.segment.spec import Candidate, SegmentSpec, Validation


class SelectionError(ValueError):
    """No candidate can be scored on a segment's folds (too few rows or times, every candidate failed)."""


Folds = list[tuple[np.ndarray, np.ndarray]]


@dataclass
class Scored:
    """One candidate's cross-validation on one segment: its (best) parameters and per-fold metric."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    folds: list[float] = field(default_factory=list)
    trials: int = 0
    error: str | None = None
    baseline: bool = False
    holdout: float | None = None  # its error on the segment's holdout (selection's regret), when measured

    @property
    def mean(self) -> float:
        """The mean fold metric (NaN when it failed)."""
        values = [v for v in self.folds if not math.isnan(v)]
        return float(np.mean(values)) if values and self.error is None else math.nan

    @property
    def std(self) -> float:
        """The fold metric's standard deviation (population)."""
        values = [v for v in self.folds if not math.isnan(v)]
        return float(np.std(values)) if values and self.error is None else math.nan

    def summary(self) -> dict[str, Any]:
        """What the manifest keeps of it."""
        out: dict[str, Any] = {"mean": _finite(self.mean), "std": _finite(self.std)}
        out["folds"] = [_finite(v) for v in self.folds]
        if self.trials:
            out["trials"], out["params"] = self.trials, self.params
        if self.error:
            out["error"] = self.error
        if self.holdout is not None:
            out["holdout"] = _finite(self.holdout)
        return out


@dataclass
class Selection:
    """A segment's selection: the winner, fitted on all training rows, and every candidate's scores."""

    winner: Scored
    scored: list[Scored]
    n_folds: int
    predictor: Predictor
    model_format: str
    model: bytes
    maximize: bool = False

    @property
    def best_baseline(self) -> float:
        """The best baseline's mean CV metric (NaN without a scored baseline)."""
        means = [s.mean for s in self.scored if s.baseline and not math.isnan(s.mean)]
        return _best(means, self.maximize) if means else math.nan

    def scores_json(self) -> str:
        """Every candidate's CV summary, as the manifest's `cv_scores` text."""
        return json.dumps({s.name: s.summary() for s in self.scored}, sort_keys=True)


def validation_of(spec: SegmentSpec) -> Validation:
    """The spec's validation (a spec without one does not select)."""
    if spec.validation is None:
        raise SelectionError("the model has no validation to choose its candidates by")
    return spec.validation


def make_folds(frame: pd.DataFrame, spec: SegmentSpec, holdout_steps: int = 0) -> Folds:
    """Positions (in `frame`, one segment's training rows in canonical order) of each fold's train and test rows.

    `holdout_steps`: the distinct times of the segment's holdout, which time windows test on unless the validation
    says how many (so a rule such as `last` is measured as far ahead as it is used).

    Raises:
        SelectionError: fewer rows than folds, or too few distinct times for the windows.
    """
    validation = validation_of(spec)
    n = len(frame)
    if validation.kind == "kfold":
        if n < validation.folds:
            raise SelectionError(
                f"{validation.folds}-fold validation needs at least {validation.folds} training rows; "
                f"the segment has {n}"
            )
        from sklearn.model_selection import KFold

        splitter = KFold(validation.folds, shuffle=True, random_state=validation.seed)
        return [(np.asarray(tr), np.asarray(te)) for tr, te in splitter.split(np.arange(n))]
    return time_folds(time_values(frame[validation.by or spec.split_by]), validation, holdout_steps)


def time_folds(times: np.ndarray, validation: Validation, holdout_steps: int = 0) -> Folds:
    """Rolling-origin folds: each window tests on `horizon` distinct times and trains only on rows before them.

    A horizon of 0 is the holdout's (`holdout_steps`, else 1); a step of 0 is the horizon.

    The latest window ends at the last time; each earlier one starts `step` distinct times sooner.
    A row at or after a window's first test time never trains in that window.

    Raises:
        SelectionError: too few distinct times for the windows, or a window with no row before it.
    """
    distinct = np.unique(times[~np.isnan(times)])
    validation = resolved(validation, holdout_steps)
    need = validation.horizon + (validation.windows - 1) * validation.step + 1
    if len(distinct) < need:
        raise SelectionError(
            f"time validation ({validation.windows} window(s) of {validation.horizon}, step {validation.step}) needs "
            f"at least {need} distinct {validation.by!r} values in the training rows; the segment has {len(distinct)}"
        )
    folds: Folds = []
    for w in range(validation.windows - 1, -1, -1):  # oldest window first
        first = len(distinct) - validation.horizon - w * validation.step
        cut, end = distinct[first], distinct[min(first + validation.horizon, len(distinct)) - 1]
        train = np.flatnonzero(times < cut)
        test = np.flatnonzero((times >= cut) & (times <= end))
        if len(train) < 2:
            raise SelectionError(f"{len(train)} training row(s) before a window's first time: too few to train")
        folds.append((train, test))
    return folds


def resolved(validation: Validation, holdout_steps: int = 0) -> Validation:
    """A time validation with its horizon and step set: a horizon of 0 is the holdout's steps (else 1), a step of 0
    the horizon."""
    from dataclasses import replace

    horizon = validation.horizon or holdout_steps or 1
    return replace(validation, horizon=horizon, step=validation.step or horizon)


def select(frame: pd.DataFrame, X: pd.DataFrame, y: np.ndarray, spec: SegmentSpec,
           holdout_steps: int = 0) -> Selection:
    """Choose a segment's model among the spec's candidates by cross-validation; refit the winner on every row.

    Args:
        frame: the segment's training rows (for the time column).
        X: their features.
        y: their labels.
        spec: the recipe, with `validation` set.

    Raises:
        SelectionError: no fold could be made, or every candidate failed.
    """
    validation = validation_of(spec)
    folds = make_folds(frame, spec, holdout_steps)
    time = spec.time_column
    times = time_values(frame[time]) if time is not None else None
    scored = [_cross_validate(c, X, y, times, folds, spec) for c in spec.choices()]
    winner, candidate = winner_of(scored, spec, "fold")
    predictor, fmt, blob = fit_candidate(candidate, winner.params, X, y, times, spec, serialize=True)
    return Selection(winner, scored, len(folds), predictor, fmt, blob, validation.maximize)


def winner_of(scored: list[Scored], spec: SegmentSpec, unit: str) -> tuple[Scored, Candidate]:
    """The candidate with the best mean metric (ties: the first listed), and its spec.

    Raises:
        SelectionError: every candidate failed (each one's reason named; `unit`: what could not be scored).
    """
    winner = best_scored(scored, validation_of(spec).maximize)
    if winner is None:
        reasons = "; ".join(f"{s.name}: {s.error or f'no {unit} could be scored'}" for s in scored)
        raise SelectionError(f"every candidate failed: {reasons}")
    return winner, next(c for c in spec.choices() if c.name == winner.name)


def best_scored(scored: list[Scored], maximize: bool) -> Scored | None:
    """The entry with the best mean metric (ties: the first listed); None when none has one. The selection's rule:
    `winner_of` chooses by it, and the intervals' errors (`forecast_fit.chosen_elsewhere`) follow it."""
    usable = [s for s in scored if not math.isnan(s.mean)]
    if not usable:
        return None
    means = [s.mean for s in usable]
    return usable[means.index(_best(means, maximize))]


def fit_candidate(
    candidate: Candidate,
    params: dict[str, Any],
    X: pd.DataFrame,
    y: np.ndarray,
    times: np.ndarray | None,
    spec: SegmentSpec,
    serialize: bool = False,
) -> tuple[Predictor, str, bytes]:
    """Fit one candidate with the given parameters (a baseline takes none)."""
    if candidate.estimator == "baseline":
        model = fit_baseline(str(candidate.method), y, times, candidate.period, spec.time_column)
        return model, FORMAT_BASELINE, model.to_bytes() if serialize else b""
    impute = spec.impute if candidate.estimator != "lightgbm" else None
    return fit_model(candidate.estimator, candidate.entry, params, spec.task, X, y, impute=impute, serialize=serialize)


def _cross_validate(
    candidate: Candidate, X: pd.DataFrame, y: np.ndarray, times: np.ndarray | None, folds: Folds, spec: SegmentSpec
) -> Scored:
    scored = Scored(candidate.name, dict(candidate.params), baseline=candidate.estimator == "baseline")
    try:
        if candidate.estimator not in ("lightgbm", "baseline") and spec.impute is None:
            _no_missing(X, candidate)  # once for the segment, not per fold and trial
        if candidate.trials and candidate.space and candidate.scope == "segment":
            return tune(candidate, spec, lambda params: _fold_scores(candidate, params, X, y, times, folds, spec))
        scored.folds = _fold_scores(candidate, scored.params, X, y, times, folds, spec)
    except Exception as exc:  # noqa: BLE001 - one candidate failing leaves the others to win
        scored.error = describe(exc)
    return scored


def _fold_scores(
    candidate: Candidate,
    params: dict[str, Any],
    X: pd.DataFrame,
    y: np.ndarray,
    times: np.ndarray | None,
    folds: Folds,
    spec: SegmentSpec,
) -> list[float]:
    metric = validation_of(spec).metric
    out = []
    for train, test in folds:
        predictor, _, _ = fit_candidate(
            candidate, params, X.iloc[train], y[train], None if times is None else times[train], spec
        )
        if candidate.estimator == "baseline" and candidate.method == "seasonal":
            predicted = predictor.predict_at(times[test])  # type: ignore[attr-defined, index]
        else:
            predicted = predictor.predict(X.iloc[test])
        out.append(float(compute_metrics(spec.task, y[test], predicted)[metric]))
    return out


def tune(candidate: Candidate, spec: SegmentSpec, fold_scores: Callable[[dict[str, Any]], list[float]]) -> Scored:
    """A candidate tuned on one segment: an Optuna study whose trials each score one parameter set on every fold
    (`fold_scores(params)`); the best trial's parameters and fold metrics."""
    validation = validation_of(spec)
    study = new_study(candidate, validation.seed, validation.maximize)
    by_trial: dict[int, list[float]] = {}
    errors: list[str] = []

    def objective(trial: Any) -> float:
        params = {**candidate.params, **suggest(trial, candidate.space)}
        try:
            scores = fold_scores(params)
        except Exception as exc:
            errors.append(describe(exc))
            raise
        by_trial[trial.number] = scores
        value = float(np.nanmean(scores)) if not all(math.isnan(s) for s in scores) else math.nan
        if math.isnan(value):
            raise SelectionError("no fold could be scored")
        return value

    study.optimize(objective, n_trials=candidate.trials, catch=(Exception,))
    scored = Scored(candidate.name, trials=len(study.trials))
    complete = [t for t in study.trials if t.value is not None]
    if not complete:
        scored.error = f"all {len(study.trials)} trial(s) failed" + (f": {errors[0]}" if errors else "")
        return scored
    values = [float(t.value) for t in complete]
    best = complete[values.index(_best(values, validation.maximize))]  # ties: the earliest trial
    scored.params = {**candidate.params, **best.params}
    scored.folds = by_trial[best.number]
    return scored


def new_study(candidate: Candidate, seed: int, maximize: bool) -> Any:
    """An in-memory Optuna study with the candidate's sampler, seeded."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is reported in the manifest
    sampler: Any
    if candidate.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    elif candidate.sampler == "grid":
        grid = {name: list(spec["choices"]) for name, spec in candidate.space.items()}
        sampler = optuna.samplers.GridSampler(grid, seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed)
    return optuna.create_study(direction="maximize" if maximize else "minimize", sampler=sampler)


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One parameter set drawn from a tuning space by an Optuna trial."""
    params: dict[str, Any] = {}
    for name, dist in space.items():
        if "choices" in dist:
            params[name] = trial.suggest_categorical(name, list(dist["choices"]))
        elif "int" in dist:
            low, high = dist["int"]
            params[name] = trial.suggest_int(name, int(low), int(high), log=bool(dist.get("log")))
        else:
            low, high = dist["float"]
            params[name] = trial.suggest_float(name, float(low), float(high), log=bool(dist.get("log")))
    return params


def _no_missing(X: pd.DataFrame, candidate: Candidate) -> None:
    missing = X.isna().sum()
    missing = missing[missing > 0]
    if len(missing):
        named = ", ".join(f"{col!r} ({int(n)})" for col, n in missing.items())
        raise ValueError(f"missing values in feature(s) {named}, which {candidate.entry} may not take (set impute)")


def _best(values: list[float], maximize: bool) -> float:
    return max(values) if maximize else min(values)


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def describe(exc: BaseException) -> str:
    """An error in one line: the message of ours, the type and first line of anything else."""
    if isinstance(exc, SelectionError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
