"""A segment's forecast: features, transforms, strategies, baselines at the origin, and no look into the future."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from helpers import series_frame
from manymodels.data.timegrid import TimeGrid
from manymodels.estimators import FORMAT_SKOPS, load_model
from manymodels.segment.features import feature_rows
from manymodels.segment.fit import fit_segment
from manymodels.segment.forecast import forecast_many, origins_from_series, origins_from_states
from manymodels.segment.forecast_windows import forecast_one, forecast_windows, window_metric, with_naive
from manymodels.segment.forecaster import Forecaster, fit_forecaster, load_forecaster, tail_width
from manymodels.segment.series import Series, series_of
from manymodels.segment.spec import Candidate, ForecastPlan, Rolling, SegmentSpec, Validation
from manymodels.segment.transforms import forward, inverse

GRID = TimeGrid.of("W-MON", "date")
PLAN = ForecastPlan(time="week", horizon=4, freq="W-MON", lags=(1, 2, 4), rolling=(Rolling(3, ("mean", "std"), 1),),
                    calendar=("month",), known=("price",), static=("region",))
LGBM = Candidate("lgbm", "lightgbm", params={"num_boost_round": 20, "min_data_in_leaf": 3})
RIDGE = Candidate("ridge", "sklearn", "sklearn.linear_model.Ridge")


def spec(plan: ForecastPlan = PLAN, candidates: tuple[Candidate, ...] = (LGBM, RIDGE), windows: int = 2) -> SegmentSpec:
    made = SegmentSpec(segment_by=("segment",), label="units", features=("price", "region"), forecast=plan,
                       candidates=candidates, validation=Validation(kind="time", windows=windows, by="week",
                                                                    horizon=plan.horizon, step=plan.horizon))
    return with_naive(made)


def one(segment: str = "store_00", steps: int = 40, seed: int = 0) -> pd.DataFrame:
    frame = series_frame(segments=3, steps=steps, seed=seed)
    return frame[frame["segment"] == segment].reset_index(drop=True)


@pytest.mark.parametrize("chain", [
    (("diff", 1),), (("diff", 4),), (("log1p", 1),), (("scale", 1),),
    (("log1p", 1), ("diff", 1), ("scale", 1)), (("diff", 1), ("diff", 4)),
])
def test_transforms_invert_exactly_for_many_series_of_other_lengths(chain: tuple[tuple[str, int], ...]) -> None:
    rng = np.random.default_rng(0)
    y = 10 + np.cumsum(rng.random((3, 30)), axis=1)
    y[1, :7] = np.nan  # a shorter series, right-aligned
    history, future = y[:, :26], y[:, 26:]
    levels, scales = forward(history, chain)
    ahead, _ = forward(y, chain, scales)  # the last level of the whole series, with the history's scales
    back = inverse(levels, chain, scales, ahead[-1][:, 26:])
    np.testing.assert_allclose(back, future, rtol=1e-12)


def test_features_read_lags_rolling_windows_calendar_known_and_static_at_each_position() -> None:
    z = np.arange(20, dtype=float)[None, :] * 10  # z[p] = 10 p
    at = np.array([5, 9])
    calendar, known, static = np.array([[1.0], [2.0]]), np.array([[0.5], [0.7]]), np.array([[3.0]])
    rows = feature_rows(PLAN, z, np.zeros(2, dtype=np.int64), at, calendar, known, static)
    assert PLAN.feature_names == ["lag_1", "lag_2", "lag_4", "rolling_mean_3_lag1", "rolling_std_3_lag1", "month",
                                  "price", "region"]
    np.testing.assert_allclose(rows[0], [40, 30, 10, 30, 10, 1, 0.5, 3])  # window of p 2..4: 20, 30, 40
    np.testing.assert_allclose(rows[1], [80, 70, 50, 70, 10, 2, 0.7, 3])
    early = feature_rows(PLAN, z, np.zeros(1, dtype=np.int64), np.array([1]), calendar[:1], known[:1], static)
    assert np.isnan(early[0, 1]) and np.isnan(early[0, 3])  # before the series began: missing, never wrapped
    direct = feature_rows(PLAN, z, np.zeros(1, dtype=np.int64), np.array([9]), calendar[:1], known[:1], static,
                          shift=2)  # step 3 of a direct model reads from its origin, 2 steps earlier
    assert direct[0, 0] == 60 and direct[0, 2] == 30


def test_a_label_changed_after_the_origin_never_changes_a_forecast() -> None:
    """The leak test: the holdout's first actual is changed; every later step's forecast (and so its error) stays,
    the validation windows and the fitted models stay, for both strategies."""
    for strategy in ("recursive", "direct"):
        made = spec(replace(PLAN, strategy=strategy))
        frame = one()
        first_holdout = frame["week"].sort_values().iloc[-PLAN.horizon]
        changed = frame.assign(units=np.where(frame["week"] == first_holdout, frame["units"] + 500.0,
                                              frame["units"]))
        base, other = fit_segment(frame, made), fit_segment(changed, made)
        assert base.status == other.status == "ok", (base.error, other.error)
        steps = json.loads(str(base.step_metric)), json.loads(str(other.step_metric))
        assert steps[0][0] != pytest.approx(steps[1][0])  # the changed step's own error moved...
        assert steps[0][1:] == pytest.approx(steps[1][1:], abs=1e-12), strategy  # ...no later forecast did
        assert base.cv_scores == other.cv_scores and base.candidate == other.candidate
        models = load_forecaster(bytes(base.model or b"")), load_forecaster(bytes(other.model or b""))
        # fitted on the steps before the holdout only: the same models (skops' bytes differ run to run: compared as
        # the objects they load)
        assert models[0].formats == models[1].formats
        assert [_state(f, b) for f, b in zip(models[0].formats, models[0].blobs, strict=True)] == \
            [_state(f, b) for f, b in zip(models[1].formats, models[1].blobs, strict=True)]


def _state(fmt: str, blob: bytes) -> bytes:
    """A model's bytes, or a skops model's state as pickle writes the object it loads (its zip differs each write)."""
    if fmt != FORMAT_SKOPS:
        return blob
    model = load_model(fmt, blob, "regression")
    return pickle.dumps(getattr(model, "model", model))


@pytest.mark.parametrize(("series", "methods"), [
    ("periodic", ["naive", "seasonal_naive", "window_average", "mean", "median"]),
    ("linear", ["naive", "seasonal_naive", "window_average", "drift"]),
])
def test_every_baseline_scores_the_same_in_validation_and_on_the_holdout(series: str, methods: list[str]) -> None:
    """What selection measured is what the holdout (and forecast) does: on series where a rule's error does not
    depend on where its origin is, each validation window's metric equals the holdout's."""
    steps = 36
    t = np.arange(steps)
    units = np.tile([5.0, 1.0, 9.0, 3.0], steps // 4) if series == "periodic" else 2.0 + 0.5 * t
    frame = pd.DataFrame({"segment": "s", "week": pd.date_range("2024-01-01", periods=steps, freq="W-MON"),
                          "units": units})
    plan = ForecastPlan(time="week", horizon=4, freq="W-MON", lags=(1,), transforms=())
    candidates = tuple(Candidate(m, "baseline", method=m, period=4 if m == "seasonal_naive" else None,
                                 window=3 if m == "window_average" else None) for m in methods)
    made = replace(spec(plan, candidates, windows=3), features=())
    result = fit_segment(frame, made)
    assert result.status == "ok", result.error
    scores = json.loads(str(result.cv_scores))
    for method in methods:
        chosen = replace(made, candidates=tuple(c for c in candidates if c.name == method))
        holdout = fit_segment(frame, chosen).metrics["rmse"]
        assert scores[method]["folds"] == pytest.approx([holdout] * 3, abs=1e-9), method
    if series == "linear":
        assert scores["drift"]["mean"] == pytest.approx(0.0, abs=1e-9)  # the line through first and last
        assert scores["naive"]["folds"][0] == pytest.approx(0.5 * np.sqrt(np.mean(np.arange(1, 5) ** 2)))


def test_many_segments_at_once_forecast_as_each_one_alone() -> None:
    """Vectorised across segments (other lengths, other winners): the same as one segment at a time."""
    frame = series_frame(segments=4, steps=40, seed=3)
    frame = frame[~((frame["segment"] == "store_01") & (frame["week"] < "2026-03-01"))]  # a shorter one
    histories = [series_of(g, PLAN, "units", GRID) for _, g in frame.groupby("segment")]
    fitted = [fit_forecaster(c, dict(c.params), PLAN, h, serialize=True)
              for c, h in zip([LGBM, RIDGE, LGBM, Candidate("n", "baseline", method="naive")], histories,
                              strict=True)]
    known = np.full((4, 4, 1), 1.05)
    width = max(tail_width(PLAN, f) for f in fitted)
    together = forecast_many(PLAN, GRID, fitted, origins_from_series(histories, PLAN, width), 4, known)
    for i, (f, h) in enumerate(zip(fitted, histories, strict=True)):
        alone = forecast_many(PLAN, GRID, [f], origins_from_series([h], PLAN, tail_width(PLAN, f)), 4, known[:1])
        np.testing.assert_allclose(together[i], alone[0], atol=1e-12)
    kept = [load_forecaster(f.with_state(h, PLAN, GRID).to_bytes()) for f, h in zip(fitted, histories, strict=True)]
    from_state = forecast_many(PLAN, GRID, kept, origins_from_states(kept, PLAN, GRID), 4, known)
    np.testing.assert_allclose(from_state, together, atol=1e-12)  # what a pack keeps is what it needs


def test_direct_keeps_a_model_per_step_and_recursive_one() -> None:
    history = series_of(one(), PLAN, "units", GRID)
    assert len(fit_forecaster(LGBM, dict(LGBM.params), PLAN, history).models) == 1
    direct = replace(PLAN, strategy="direct")
    assert len(fit_forecaster(LGBM, dict(LGBM.params), direct, history).models) == 4


def test_holes_in_the_grid_are_an_error_zeros_or_missing_as_the_bundle_says() -> None:
    frame = one()
    holed = frame[frame["week"] != frame["week"].sort_values().iloc[10]]
    with pytest.raises(ValueError, match=r"time 2026-\d\d-\d\dT00:00:00 has no row .*set gaps: zero"):
        series_of(holed, PLAN, "units", GRID)
    assert series_of(holed, replace(PLAN, gaps="zero"), "units", GRID).y[10] == 0.0
    missing = series_of(holed, replace(PLAN, gaps="missing"), "units", GRID)
    assert np.isnan(missing.y[10]) and len(missing) == 40
    result = fit_segment(holed, spec(replace(PLAN, gaps="missing")))
    assert result.status == "ok", result.error  # LightGBM and the rules take the hole as unknown


def test_a_segment_fails_with_its_reason_and_the_run_goes_on() -> None:
    made = spec()
    twice = pd.concat([one(), one().iloc[:1]])
    assert "appears twice in the segment" in str(fit_segment(twice, made).error)
    thin = fit_segment(one(steps=40).sort_values("week").tail(9), made)
    assert thin.status == "failed" and str(thin.error).startswith("thin: 9 step(s) of history")
    off = one().assign(week=lambda f: f["week"] + pd.Timedelta(days=1))
    assert "not on the grid W-MON" in str(fit_segment(off, made).error)


def test_a_forecaster_keeps_its_state_and_reads_back_its_plan() -> None:
    history = series_of(one(), PLAN, "units", GRID)
    fitted = fit_forecaster(RIDGE, {}, PLAN, history, serialize=True).with_state(history, PLAN, GRID)
    back = load_forecaster(fitted.to_bytes())
    assert back.plan == PLAN and back.state["last"] == "2026-11-30T00:00:00" and back.state["count"] == 40
    assert len(back.state["tail"]) == tail_width(PLAN, back) == 5  # reach 4 (lag 4, rolling 3 lag 1) + one diff
    assert back.state["tail"] == pytest.approx(history.y[-5:].tolist())


def test_series_keep_their_known_and_static_values() -> None:
    history = series_of(one(), PLAN, "units", GRID)
    assert isinstance(history, Series) and history.known.shape == (40, 1) and history.static.shape == (1,)
    assert np.isfinite(history.static).all()  # text 'r0' as a stable number


def test_step_metrics_of_one_forecast_or_of_many_series() -> None:
    from manymodels.segment.forecast_windows import step_metrics

    assert step_metrics("mae", np.array([1.0, 2.0]), np.array([2.0, 2.5])) == [1.0, 0.5]
    many = step_metrics("rmse", np.array([[1.0, np.nan], [3.0, np.nan]]), np.array([[2.0, 1.0], [3.0, 1.0]]))
    assert many[0] == pytest.approx(np.sqrt(0.5)) and many[1] is None  # no actual value at step 2: null, not NaN
    assert step_metrics("r2", np.array([1.0]), np.array([1.0])) == [None]


def test_an_ensemble_is_judged_and_forecasts_as_the_weighted_mean_of_its_members() -> None:
    """An ensemble fits nothing of its own: each window's forecast is the weighted mean of its members' forecasts of
    that window (equal weights, or `cv`: inverse mean window error), and the pack's forecast is the same mean of its
    members' forecasts from the segment's history."""
    naive = Candidate("naive", "baseline", method="naive")
    equal = Candidate("equal", "ensemble", members=("lgbm", "ridge", "naive"))
    by_cv = Candidate("by_cv", "ensemble", members=("lgbm", "ridge", "naive"), weights="cv")
    made = spec(candidates=(LGBM, RIDGE, naive, equal, by_cv), windows=3)
    result = fit_segment(one(), made)
    assert result.status == "ok", result.error
    scores = json.loads(str(result.cv_scores))
    history = series_of(one(), PLAN, "units", GRID)
    train = history.upto(len(history) - PLAN.horizon - 1)
    origins = forecast_windows(len(train), made)
    alone = {c.name: [] for c in (LGBM, RIDGE, naive)}
    for origin in origins:
        before, ahead = train.upto(origin), slice(origin + 1, origin + 1 + PLAN.horizon)
        for c in (LGBM, RIDGE, naive):
            fitted = fit_forecaster(c, dict(c.params), PLAN, before)
            alone[c.name].append(forecast_one(fitted, before, PLAN, GRID, PLAN.horizon, train.known[ahead]))
    def inverse_error(windows: list[int]) -> dict[str, float]:
        inverse = {n: 1 / np.mean([scores[n]["folds"][k] for k in windows]) for n in alone}
        return {n: v / sum(inverse.values()) for n, v in inverse.items()}

    # `cv` judges each window with weights from the other windows' errors: its own would flatter it
    every = range(len(origins))
    for name, weights in (("equal", [dict.fromkeys(alone, 1 / 3)] * len(origins)),
                          ("by_cv", [inverse_error([j for j in every if j != k]) for k in every])):
        want = [window_metric("rmse", train.y[o + 1 : o + 1 + PLAN.horizon],
                              sum(weights[k][n] * alone[n][k] for n in alone)) for k, o in enumerate(origins)]
        assert scores[name]["folds"] == pytest.approx(want, abs=1e-9), name
        assert scores[name]["folds"] != pytest.approx(scores["ridge"]["folds"])  # a mean, not one member
    # the weights it keeps to forecast with are from every window
    chosen = fit_segment(one(), replace(made, chosen="by_cv"))
    assert chosen.candidate == "by_cv", chosen.error
    assert load_forecaster(bytes(chosen.model)).weights == pytest.approx(list(inverse_error(list(every)).values()))

    members = [fit_forecaster(c, dict(c.params), PLAN, history, serialize=True) for c in (LGBM, RIDGE, naive)]
    made_one = Forecaster("mix", "ensemble", plan=PLAN, members=members, weights=[0.5, 0.3, 0.2])
    kept = load_forecaster(made_one.with_state(history, PLAN, GRID).to_bytes())  # as a pack keeps it
    assert kept.is_ensemble and [m.candidate for m in kept.members] == ["lgbm", "ridge", "naive"]
    assert kept.weights == [0.5, 0.3, 0.2] and len(kept.state["tail"]) == tail_width(PLAN, kept)
    known = np.full((1, 4, 1), 1.05)
    together = forecast_many(PLAN, GRID, [kept], origins_from_states([kept], PLAN, GRID), 4, known)
    each = forecast_many(PLAN, GRID, kept.members, origins_from_states([kept] * 3, PLAN, GRID), 4,
                         np.repeat(known, 3, axis=0))
    np.testing.assert_allclose(together[0], np.asarray(kept.weights) @ each, atol=1e-12)


def test_refit_keeps_the_measured_model_and_forecasts_from_one_that_saw_every_step() -> None:
    """`refit`: the holdout's metrics and the winner are what they were without it (measured by the same model);
    the model kept to forecast is fitted again on every step and carries the measured one, which a pack reads back."""
    made = spec(windows=2)
    plain, again = fit_segment(one(), made), fit_segment(one(), replace(made, refit=True))
    assert plain.status == again.status == "ok", (plain.error, again.error)
    assert again.candidate == plain.candidate and again.metrics == plain.metrics and again.cv_scores == plain.cv_scores
    kept, before = load_forecaster(bytes(again.model)), load_forecaster(bytes(plain.model))
    assert kept.measured is not None and before.measured is None
    assert kept.measured.blobs == before.blobs  # the measured model is the one a run without refit keeps
    assert kept.blobs != before.blobs and kept.state == before.state  # fitted again; the same history to start from
    for errors in ("residuals", "model_residuals"):  # the windows' errors it carries are the measured one's
        mine, theirs = getattr(kept, errors), getattr(before, errors)
        assert (mine is None and theirs is None) or np.array_equal(mine, theirs, equal_nan=True), errors
    known = np.full((1, 4, 1), 1.05)
    ahead = forecast_many(PLAN, GRID, [kept], origins_from_states([kept], PLAN, GRID), 4, known)
    measured = forecast_many(PLAN, GRID, [kept.measured], origins_from_states([kept], PLAN, GRID), 4, known)
    np.testing.assert_allclose(measured, forecast_many(PLAN, GRID, [before], origins_from_states([before], PLAN, GRID),
                                                       4, known), atol=1e-12)
    assert not np.allclose(ahead, measured)


def test_with_regret_every_candidate_forecasts_the_holdout_as_the_winner_does() -> None:
    """`regret`: each candidate's holdout error is what it gets fitted on the winner's steps and forecasting the
    holdout (the winner's is training's metric, naive's the manifest's holdout_naive, an ensemble's its members'
    weighed); the models kept are the same as without it."""
    naive = Candidate("naive", "baseline", method="naive")
    mix = Candidate("mix", "ensemble", members=("lgbm", "ridge"))
    made = spec(candidates=(LGBM, RIDGE, naive, mix), windows=2)
    plain, measured = fit_segment(one(), made), fit_segment(one(), replace(made, regret=True))
    assert plain.status == measured.status == "ok", (plain.error, measured.error)
    assert measured.model == plain.model and measured.candidate == plain.candidate
    assert "holdout" not in str(plain.cv_scores)
    scores = json.loads(str(measured.cv_scores))
    assert scores[measured.candidate]["holdout"] == pytest.approx(measured.metrics["rmse"], abs=1e-12)
    assert scores["naive"]["holdout"] == pytest.approx(measured.holdout_naive, abs=1e-12)
    history = series_of(one(), PLAN, "units", GRID)
    cut = len(history) - PLAN.horizon
    train = history.upto(cut - 1)
    alone = {c.name: forecast_one(fit_forecaster(c, dict(c.params), PLAN, train), train, PLAN, GRID, PLAN.horizon,
                                  history.known[cut:]) for c in (LGBM, RIDGE)}
    for name in ("lgbm", "ridge"):
        assert scores[name]["holdout"] == pytest.approx(window_metric("rmse", history.y[cut:], alone[name]), abs=1e-9)
    weights = scores["mix"]
    assert weights["holdout"] == pytest.approx(window_metric("rmse", history.y[cut:],
                                                             0.5 * alone["lgbm"] + 0.5 * alone["ridge"]), abs=1e-9)
    best = min(v["holdout"] for v in scores.values())
    from manymodels.segment.forecast_fit import selection_regret

    assert selection_regret(scores, str(measured.candidate)) == pytest.approx(
        scores[measured.candidate]["holdout"] - best)


def test_the_winner_keeps_the_selections_window_errors_and_training_judges_its_intervals_on_the_holdout() -> None:
    """The kept forecaster carries the selection's validation-window errors (the intervals' source), through its
    bytes: each window's error is that of the candidate the other windows choose (actual minus its forecast of
    that window), not the winner's own, which are the smallest by construction. The manifest's interval_scores
    are those intervals on the holdout."""
    from manymodels.segment.intervals import HOLDOUT_LEVELS, half_widths, interval_scores
    from manymodels.segment.select import validation_of

    made = spec(candidates=(RIDGE,), windows=3)  # ridge and the naive forecast, always measured
    result = fit_segment(one(), made)
    assert result.status == "ok", result.error
    kept = load_forecaster(bytes(result.model))
    history = series_of(one(), PLAN, "units", GRID)
    cut = len(history) - PLAN.horizon
    train = history.upto(cut - 1)
    origins = forecast_windows(len(train), made)
    metric = validation_of(made).metric
    errors: dict[str, list[np.ndarray]] = {}
    folds: dict[str, list[float]] = {}
    for candidate in made.choices():
        errors[candidate.name], folds[candidate.name] = [], []
        for origin in origins:
            before, ahead = train.upto(origin), slice(origin + 1, origin + 1 + PLAN.horizon)
            fitted = fit_forecaster(candidate, dict(candidate.params), PLAN, before)
            predicted = forecast_one(fitted, before, PLAN, GRID, PLAN.horizon, train.known[ahead])
            errors[candidate.name].append(train.y[ahead] - predicted)
            folds[candidate.name].append(window_metric(metric, train.y[ahead], predicted))
    want = []
    for k in range(len(origins)):
        elsewhere = {name: np.mean([v for j, v in enumerate(f) if j != k]) for name, f in folds.items()}
        want.append(errors[min(elsewhere, key=elsewhere.__getitem__)][k])
    assert kept.residuals is not None and kept.residuals.shape == (3, PLAN.horizon)
    np.testing.assert_allclose(kept.residuals, np.array(want), atol=1e-9)
    # ridge won on the mean, but the first two windows choose naive for the third: its error is naive's there
    assert np.allclose(kept.residuals[:2], errors["ridge"][:2])
    assert not np.allclose(kept.residuals[2], errors["ridge"][2])
    # and its own beside them, for monitoring's design effect (how one model's errors hang together)
    assert kept.model_residuals is not None and kept.own_errors is kept.model_residuals
    np.testing.assert_allclose(kept.model_residuals, np.array(errors["ridge"]), atol=1e-9)
    fitted = fit_forecaster(RIDGE, {}, PLAN, train)
    predicted = forecast_one(fitted, train, PLAN, GRID, PLAN.horizon, history.known[cut:])
    expected = interval_scores(history.y[cut:], predicted, half_widths(kept.residuals, HOLDOUT_LEVELS, PLAN.horizon),
                               HOLDOUT_LEVELS)
    found = json.loads(str(result.interval_scores))
    assert found["95"] == expected["95"] == {"coverage": None, "winkler": None}  # 12 errors: too few for 95%
    assert found["80"] == pytest.approx(expected["80"]) and expected["80"]["coverage"] is not None


def test_each_window_error_is_the_one_of_the_candidate_the_other_windows_choose() -> None:
    """The intervals' errors: window k is forecast by the best mean over the other windows (ties: the first
    listed), among candidates that forecast window k; a failed candidate is never taken; one window gives none."""
    from manymodels.segment.forecast_fit import chosen_elsewhere
    from manymodels.segment.select import Scored

    def forecasts(name: str) -> list[np.ndarray]:
        return [np.array([float(ord(name[0])), float(k)]) for k in range(3)]

    lucky = Scored("lucky", folds=[1.0, 5.0, 1.0])  # a mean of 2.33: one bad window
    steady = Scored("steady", folds=[2.0, 2.0, 2.0])  # 2.0: the winner on all three
    gappy = Scored("gappy", folds=[0.5, float("nan"), 0.5])  # no forecast of window 1
    broken = Scored("broken", folds=[0.1, 0.1, 0.1], error="fit failed")
    entries = [lucky, steady, gappy, broken]
    windows = {(s.name, "{}"): forecasts(s.name) for s in entries}
    picked = chosen_elsewhere(entries, windows, 3, maximize=False)
    assert picked is not None
    # window 0: gappy's other finite window (0.5) is best; window 1: gappy did not forecast it, and without it
    # lucky's other two (1.0) beat steady; window 2: gappy again
    assert [int(p[0]) for p in picked] == [ord("g"), ord("l"), ord("g")]
    assert [int(p[1]) for p in picked] == [0, 1, 2]
    picked = chosen_elsewhere([lucky, steady], windows, 3, maximize=False)
    assert picked is not None and [chr(int(p[0])) for p in picked] == ["s", "l", "s"]
    high = chosen_elsewhere([lucky, steady], windows, 3, maximize=True)  # a metric to maximize: the largest mean
    assert high is not None and [chr(int(p[0])) for p in high] == ["l", "s", "l"]
    assert chosen_elsewhere([lucky, steady], {k: v[:1] for k, v in windows.items()}, 1, maximize=False) is None
