"""One segment of a forecast family: candidates chosen on rolling-origin windows, the winner measured on the holdout.

Every window forecasts the whole horizon from its origin, exactly as `forecast` will (the same
features, transforms and strategy, `forecast_many` with one segment), so the metric that chooses
a candidate is the metric it will have in use. The holdout is the segment's last `horizon` steps:
the winner, fitted on everything before them, forecasts them from the same origin. The `naive`
forecast is measured on it too, so a fleet that loses to it is told.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any, cast

import numpy as np
import pandas as pd

from manymodels.data.timegrid import TimeGrid
from manymodels.estimators import Predictor, uses_exog, window_forecast
from manymodels.segment.forecast_pooled import fit_pooled, fit_shared
from manymodels.segment.forecast_windows import (
    NAIVE,
    ThinSegment,
    forecast_one,
    forecast_windows,
    grid_of,
    imputer_of,
    own_widths,
    plan_of,
    plot_record,
    series_scales,
    step_metrics,
    thin_limit,
    window_metric,
)
from manymodels.segment.forecaster import (
    ENSEMBLE,
    FORMAT_FORECAST,
    STATISTICAL,
    Forecaster,
    fit_forecaster,
    statistical_known,
    statistical_values,
)
from manymodels.segment.intervals import HOLDOUT_LEVELS, half_widths, interval_scores, window_residuals
from manymodels.segment.metrics import compute_metrics
from manymodels.segment.profile import WIDTH, column_profile, with_losses
from manymodels.segment.select import (
    Scored,
    Selection,
    SelectionError,
    best_scored,
    describe,
    tune,
    validation_of,
    winner_of,
)
from manymodels.segment.series import ForecastDataError, Series, series_of
from manymodels.segment.significance import row_losses
from manymodels.segment.spec import Candidate, ForecastPlan, SegmentSpec, SharedFit, series_key


def select_forecast(train: Series, spec: SegmentSpec, grid: TimeGrid, key: str = "") -> Selection:
    """Choose a segment's forecaster among the spec's candidates on rolling-origin windows; refit the winner.

    A pooled candidate (fitted once over the fleet) is not fitted here: its window metrics for this segment (`key`)
    come from its fit, and a segment that chooses it keeps a reference to its one model.

    Raises:
        SelectionError: no window fits the history, or every candidate failed.
    """
    plan, validation = plan_of(spec), validation_of(spec)
    origins = forecast_windows(len(train), spec)
    horizon = plan.horizon
    # every candidate's forecast of each window, by its name and params: ensembles and intervals read them
    windows: dict[tuple[str, str], list[np.ndarray]] = {}

    def fold_scores(candidate: Candidate, params: dict[str, Any]) -> list[float]:
        if candidate.pooled:
            found = {int(w[0]): w for w in _shared_scores(spec, candidate.name, key)[0]}
            lacking = [o for o in origins if o not in found]
            if lacking:
                raise SelectionError(f"the pooled fit of {candidate.name} has no window at step {lacking[0]}")
            windows[(candidate.name, _params_key(params))] = [_floats_of(found[o][2]) for o in origins]
            return [math.nan if found[o][1] is None else float(found[o][1]) for o in origins]
        out, forecasts = [], []
        for origin in origins:
            history = train.upto(origin)
            future = slice(origin + 1, origin + 1 + horizon)
            if candidate.estimator == STATISTICAL:  # fitted and forecast in one call: the window keeps nothing
                name = str(candidate.entry)
                regressors = statistical_known(history) if uses_exog(name) else None
                predicted = window_forecast(name, params, statistical_values(history.y), horizon, regressors,
                                            train.known[future])
            else:
                fitted = fit_forecaster(candidate, params, plan, history, impute=imputer_of(spec, candidate))
                predicted = forecast_one(fitted, history, plan, grid, horizon, train.known[future])
            out.append(window_metric(validation.metric, train.y[future], predicted))
            forecasts.append(predicted)
        windows[(candidate.name, _params_key(params))] = forecasts
        return out

    scored = []
    for candidate in spec.choices():
        if candidate.estimator == ENSEMBLE:
            continue  # scored below, from its members' window forecasts
        entry = Scored(candidate.name, dict(candidate.params), baseline=candidate.estimator == "baseline")
        try:
            if candidate.trials and candidate.space and candidate.scope == "segment":
                entry = tune(candidate, spec, lambda params, c=candidate: fold_scores(c, params))  # type: ignore[misc]
            else:
                entry.folds = fold_scores(candidate, entry.params)
        except Exception as exc:  # noqa: BLE001 - one candidate failing leaves the others to win
            entry.error = describe(exc)
        scored.append(entry)
    for candidate in (c for c in spec.choices() if c.estimator == ENSEMBLE):
        scored.append(_ensemble_scores(candidate, spec, scored, train, origins, horizon, windows))
    winner, candidate = winner_of(scored, spec, "window")
    forced = next((s for s in scored if s.name == spec.chosen and math.isfinite(s.mean)), None)
    if forced is not None:  # the fleet's choice, where it could be scored
        winner, candidate = forced, next(c for c in spec.choices() if c.name == forced.name)
    fitted = _fit_chosen(candidate, winner.params, spec, train)
    chosen = windows.get(_window_key(winner))
    if chosen is not None and len(chosen) == len(origins):  # the windows' errors: its prediction intervals
        actual = [train.y[o + 1 : o + 1 + horizon] for o in origins]
        fitted.residuals = window_residuals(actual, chosen)
        picked = None if forced is not None else chosen_elsewhere(scored, windows, len(origins), validation.maximize)
        if picked is not None:  # chosen here: the errors of the choice, each window's made without that window
            selection = window_residuals(actual, picked)
            if not np.array_equal(selection, fitted.residuals, equal_nan=True):
                fitted.residuals, fitted.model_residuals = selection, fitted.residuals
    # A forecaster stands where selection keeps a predictor: fit_forecast takes it back out.
    return Selection(winner, scored, len(origins), cast(Predictor, fitted), FORMAT_FORECAST, b"", validation.maximize)


def chosen_elsewhere(scored: list[Scored], windows: dict[tuple[str, str], list[np.ndarray]], count: int,
                     maximize: bool) -> list[np.ndarray] | None:
    """Each window's forecast by the candidate the other windows choose (the best mean over them, among those
    that forecast this window): the selection's errors as it will make them. The winner's own window errors are
    the smallest of several candidates' by construction, so intervals from them are too narrow (on make_series'
    30 weekly series, 72% of held-out values fell inside its 80% intervals; from these, 81%). None with fewer
    than two windows, or a window no candidate forecast.
    """
    if count < 2:
        return None
    complete = [s for s in scored if len(s.folds) == count and len(windows.get(_window_key(s), ())) == count]
    out = []
    for k in range(count):
        # each candidate that forecast window k, judged by the selection's own rule on the other windows
        judged = [replace(s, folds=[v for j, v in enumerate(s.folds) if j != k and math.isfinite(v)])
                  for s in complete if math.isfinite(s.folds[k])]
        best = best_scored(judged, maximize)
        if best is None:
            return None
        out.append(windows[_window_key(best)][k])
    return out


def _window_key(entry: Scored) -> tuple[str, str]:
    """Where `windows` keeps a scored candidate's window forecasts."""
    return entry.name, _params_key(entry.params)


def _params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _ensemble_scores(candidate: Candidate, spec: SegmentSpec, scored: list[Scored], train: Series, origins: list[int],
                     horizon: int, windows: dict[tuple[str, str], list[np.ndarray]]) -> Scored:
    """An ensemble's window metrics, from its members' window forecasts (no fit of its own: `windows`, where it
    adds its own); its `params` hold the weight of each member on this segment."""
    by_name = {s.name: s for s in scored}
    entry = Scored(candidate.name, {}, baseline=candidate.name in spec.rules())
    try:
        kept = {m: windows.get((m, _params_key(by_name[m].params))) for m in candidate.members}  # fixed params
        failed = [m for m in candidate.members if by_name[m].error is not None or kept[m] is None]
        if failed:
            raise SelectionError(f"member {failed[0]} could not be scored: {by_name[failed[0]].error or 'no window'}")
        ready = {m: w for m, w in kept.items() if w is not None}
        parts = [by_name[m] for m in candidate.members]
        maximize = validation_of(spec).maximize
        weights = ensemble_weights(candidate, parts, maximize)
        entry.params = {"weights": dict(zip(candidate.members, weights, strict=True))}
        metric = validation_of(spec).metric
        forecasts = []
        for k, origin in enumerate(origins):
            # a window is judged with weights its own errors did not set: `cv` weights from the other windows
            # (equal where there is none), or the ensemble would look better than it will forecast
            honest = ensemble_weights(candidate, parts, maximize, leave_out=k) if candidate.weights == "cv" else weights
            combined = np.asarray(sum(w * ready[m][k] for m, w in zip(candidate.members, honest, strict=True)),
                                  dtype=np.float64)
            entry.folds.append(window_metric(metric, train.y[origin + 1 : origin + 1 + horizon], combined))
            forecasts.append(combined)
        windows[(candidate.name, _params_key(entry.params))] = forecasts
    except Exception as exc:  # noqa: BLE001 - an ensemble that cannot be scored leaves the others to win
        entry.error = describe(exc)
    return entry


def ensemble_weights(candidate: Candidate, members: list[Scored], maximize: bool,
                     leave_out: int | None = None) -> list[float]:
    """Each member's weight in an ensemble's mean (summing to 1): equal, or `cv`: the inverse of its mean window
    error, so a member twice as wrong weighs half as much. `leave_out`: the mean over every window but that one
    (equal weights where a member has no other window).

    Raises:
        SelectionError: `cv` with a member whose windows gave no error to weigh it by.
    """
    equal = [1.0 / len(members)] * len(members)
    if candidate.weights != "cv":
        return equal
    if leave_out is None:
        means = [m.mean for m in members]
    else:
        others = [[v for k, v in enumerate(m.folds) if k != leave_out and math.isfinite(v)] for m in members]
        if not all(others):
            return equal
        means = [float(np.mean(v)) for v in others]
    if maximize or any(not math.isfinite(v) or v < 0 for v in means):
        raise SelectionError(f"weights cv need each member's mean window error; got {means}")
    inverse = [1.0 / max(v, 1e-12) for v in means]
    return [v / sum(inverse) for v in inverse]


def _fit_chosen(candidate: Candidate, params: dict[str, Any], spec: SegmentSpec, series: Series) -> Forecaster:
    """A chosen candidate fitted on `series`, ready to keep: a pooled one as a reference to its one model, an
    ensemble as each member so fitted and weighed as its `params` say (what its windows gave), any other as its own
    model."""
    plan = plan_of(spec)
    if candidate.estimator == ENSEMBLE:
        specs = {c.name: c for c in spec.choices()}
        members = [_fit_chosen(specs[m], dict(specs[m].params), spec, series) for m in candidate.members]
        return Forecaster(candidate.name, ENSEMBLE, plan.strategy, plan=plan, members=members,
                          weights=[float(params["weights"][m]) for m in candidate.members])
    if candidate.pooled:
        return _reference(spec, candidate, series)
    return fit_forecaster(candidate, params, plan, series, impute=imputer_of(spec, candidate), serialize=True)


def _reference(spec: SegmentSpec, candidate: Candidate, train: Series) -> Forecaster:
    """A segment's forecaster of a pooled candidate: its own scales, and a reference to the one model (`shared`)."""
    plan = plan_of(spec)
    return Forecaster(candidate.name, candidate.estimator, plan.strategy, scales=series_scales(plan, train),
                      plan=plan, shared=_shared_of(spec, candidate.name).digest)


def _floats_of(values: list[Any]) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def _holdout_forecast(forecaster: Forecaster, spec: SegmentSpec, key: str, train: Series, grid: TimeGrid,
                      known: np.ndarray) -> np.ndarray:
    """A segment's forecast of its holdout: a pooled model's (alone, or an ensemble's member) as its fit made it
    (the one model is not in this process), any other fitted here."""
    plan = plan_of(spec)
    if forecaster.shared is not None:
        return _floats_of(_shared_scores(spec, forecaster.candidate, key)[1])
    if forecaster.is_ensemble and any(m.shared is not None for m in forecaster.members):
        parts = [_holdout_forecast(m, spec, key, train, grid, known) for m in forecaster.members]
        return np.asarray(sum(w * p for w, p in zip(forecaster.weights, parts, strict=True)), dtype=np.float64)
    return forecast_one(forecaster, train, plan, grid, plan.horizon, known)


def _shared_of(spec: SegmentSpec, name: str) -> SharedFit:
    found = next((s for s in spec.shared if s.candidate == name), None)
    if found is None:
        raise SelectionError(f"candidate {name} is pooled, but its fit over the fleet is not given")
    return found


def _shared_scores(spec: SegmentSpec, name: str, key: str) -> tuple[list[Any], list[Any]]:
    found = _shared_of(spec, name).scores.get(key)
    if found is None:
        raise SelectionError(f"the pooled fit of {name} left this series out (off the grid, or too short)")
    return found


def fit_forecast(frame: pd.DataFrame, spec: SegmentSpec) -> tuple[Forecaster, Selection | None, dict[str, Any]]:
    """Fit one segment of a forecast family: select on windows, measure on the holdout, keep the state.

    Returns:
        The winner (with its state, ready to serialize), the selection (None without validation), and what
        the manifest keeps: `metrics`, `step_metric` (JSON), `holdout_naive`, `n_train`, `n_test`, `profile`.

    Raises:
        ForecastDataError: the rows are off the grid, hold a time twice, have a hole with `gaps: error`, or the
            segment is thin (fewer steps than the holdout and its candidates need).
        SelectionError: no candidate could be scored.
    """
    if spec.pool_by:
        forecaster, kept = fit_shared(frame, spec) if spec.pooled_fit else fit_pooled(frame, spec)
        return forecaster, None, kept
    plan = plan_of(spec)
    grid = grid_of(plan, frame)
    series = series_of(frame, plan, spec.label, grid)
    need = thin_limit(spec)
    if len(series) < need:
        state = Forecaster("", "", plan=plan).with_state(series, plan, grid).state
        raise ThinSegment(
            f"thin: {len(series)} step(s) of history; forecasting {plan.horizon} step(s) ahead needs at least {need} "
            f"({'the holdout, a validation window' if spec.selecting else 'the holdout'}, the largest lag and "
            "differencing, and two rows to train on)",
            state,
        )
    horizon = plan.horizon
    cut = len(series) - horizon
    train = series.upto(cut - 1)
    selection = None
    key = series_key(frame[list(spec.segment_by)].iloc[0]) if spec.shared and len(frame) else ""
    if spec.selecting:
        selection = select_forecast(train, spec, grid, key)
        forecaster = cast(Forecaster, selection.predictor)
        chosen, params = next(c for c in spec.choices() if c.name == selection.winner.name), selection.winner.params
    else:
        chosen = spec.choices()[0]
        params = dict(chosen.params)
        forecaster = _fit_chosen(chosen, params, spec, train)
    actual = series.y[cut:]
    predicted = _holdout_forecast(forecaster, spec, key, train, grid, series.known[cut:])
    naive = forecast_one(fit_forecaster(NAIVE, {}, plan, train), train, plan, grid, horizon, series.known[cut:])
    known = np.isfinite(actual)
    if not known.any():
        raise ForecastDataError("the holdout's steps have no label value to measure the forecast on")
    if not np.isfinite(predicted[known]).all():
        raise ForecastDataError(f"the {forecaster.candidate} forecast of the holdout is not a number")
    if spec.regret and selection is not None:
        _holdout_errors(selection, spec, key, train, grid, series.known[cut:], actual, predicted)
    kept = {
        "metrics": compute_metrics("regression", actual[known], predicted[known]),
        "step_metric": json.dumps(step_metrics(spec.metric, actual, predicted)),
        "holdout_naive": window_metric(spec.metric, actual, naive),
        "n_train": cut,
        "n_test": horizon,
        "profile": with_losses(_profile(train, plan), row_losses(spec.metric, actual[known], predicted[known])),
    }
    widths = np.full((len(HOLDOUT_LEVELS), horizon), np.nan)
    if forecaster.residuals is not None or forecaster.own_intervals:  # its intervals, judged on the holdout
        widths = half_widths(forecaster.residuals, HOLDOUT_LEVELS, horizon)
        if forecaster.own_intervals:  # the model's own, where it gives them
            own = own_widths(forecaster, train, plan, horizon, series.known[cut:], HOLDOUT_LEVELS)
            widths = np.where(np.isfinite(own), own, widths)
        kept["intervals"] = json.dumps(interval_scores(actual, predicted, widths, HOLDOUT_LEVELS), sort_keys=True)
    kept["plot"] = plot_record(train, grid, actual, predicted, widths)
    if spec.refit:  # measured: now fitted again on every step (a pooled model's such fit is in the pack beside its
        # measured one), the measured one kept inside it for evaluate
        forecaster = replace(_fit_chosen(chosen, params, spec, series), measured=forecaster,
                             residuals=forecaster.residuals, model_residuals=forecaster.model_residuals)
    return forecaster.with_state(series, plan, grid), selection, kept


def _holdout_errors(selection: Selection, spec: SegmentSpec, key: str, train: Series, grid: TimeGrid,
                    known: np.ndarray, actual: np.ndarray, predicted: np.ndarray) -> None:
    """Every scored candidate's error on the holdout (`Scored.holdout`), fitted on the same steps as the winner: the
    winner's is the measured forecast; an ensemble's is its members' holdout forecasts, weighed as on its windows.
    A candidate that cannot forecast it gets none (it does not count)."""
    specs = {c.name: c for c in spec.choices()}
    forecasts: dict[str, np.ndarray] = {selection.winner.name: predicted}
    scored = [s for s in selection.scored if s.error is None and math.isfinite(s.mean)]
    for entry in sorted(scored, key=lambda s: specs[s.name].estimator == ENSEMBLE):  # members before ensembles
        candidate = specs[entry.name]
        if entry.name not in forecasts:
            try:
                if candidate.estimator == ENSEMBLE:
                    weights = entry.params["weights"]
                    combined = sum(float(weights[m]) * forecasts[m] for m in candidate.members)
                    forecasts[entry.name] = np.asarray(combined, dtype=np.float64)
                else:
                    fitted = _fit_chosen(candidate, entry.params, spec, train)
                    forecasts[entry.name] = _holdout_forecast(fitted, spec, key, train, grid, known)
            except Exception:  # noqa: BLE001, S112 - a candidate that cannot forecast the holdout has no regret
                continue
        entry.holdout = window_metric(spec.metric, actual, forecasts[entry.name])


def selection_regret(scores: dict[str, Any], winner: str, maximize: bool = False) -> float | None:
    """The selection's regret on a segment's holdout: the winner's error minus the best candidate's (0: it chose the
    best), from its `cv_scores` (None where the holdout errors were not measured)."""
    errors = {n: v.get("holdout") for n, v in scores.items() if isinstance(v, dict)}
    finite = {n: float(v) for n, v in errors.items() if v is not None and math.isfinite(v)}
    if winner not in finite:
        return None
    best = max(finite.values()) if maximize else min(finite.values())
    return (best - finite[winner]) if maximize else (finite[winner] - best)


def _profile(train: Series, plan: ForecastPlan) -> bytes | None:
    """The reference profile monitoring compares new rows with: the known features over the training steps. A
    forecast's own values get no reference (left empty, so never judged): a few steps ahead they sit in a narrow
    band of a history that trends and cycles, which a distance between distributions would call drift every time;
    its error, judged per step, says how it fares."""
    try:
        rows = [column_profile(pd.Series(train.known[:, j])) for j in range(len(plan.known))]
        rows.append(np.full(WIDTH, np.nan))
        return np.asarray(rows, dtype=np.float32).tobytes()
    except Exception:  # noqa: BLE001 - a profile never costs a segment its model
        return None
