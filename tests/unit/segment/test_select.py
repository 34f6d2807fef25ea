"""Model selection inside one segment: folds that never leak, tuning that repeats, candidates that fail alone."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import segment_frame
from manymodels.estimators import Baseline, allow_pickle, fit_baseline, load_model
from manymodels.segment import SegmentSpec, fit_segment
from manymodels.segment.select import SelectionError, time_folds
from manymodels.segment.spec import Candidate, Validation

BASE = SegmentSpec(segment_by=("segment",), label="label", features=("f0", "f1", "f2"), min_rows=5,
                   validation=Validation(kind="kfold", folds=4, seed=3))
LGBM = Candidate("lgbm", params={"num_boost_round": 10, "min_data_in_leaf": 3})
RIDGE = Candidate("ridge", "sklearn", "sklearn.linear_model.Ridge")
MEAN = Candidate("mean", "baseline", method="mean")


def series(weeks: int = 30, seed: int = 0) -> pd.DataFrame:
    """One segment, one row per week: a trend, a 4-week season and noise."""
    rng = np.random.default_rng(seed)
    week = np.arange(weeks)
    frame = pd.DataFrame({"segment": "s", "week": week, "f0": rng.random(weeks), "f1": rng.random(weeks),
                          "f2": rng.random(weeks)})
    frame["label"] = 0.5 * week + np.array([3.0, -1.0, 0.0, 5.0])[week % 4] + rng.normal(scale=0.1, size=weeks)
    return frame.sample(frac=1.0, random_state=2).reset_index(drop=True)


def test_time_folds_train_only_before_each_window() -> None:
    times = np.array([5, 1, 2, 2, 3, 4, 6, 7, 7, 8], dtype=float)
    folds = time_folds(times, Validation(kind="time", by="t", windows=3, horizon=2, step=2))
    assert len(folds) == 3
    for train, test in folds:
        assert times[train].max() < times[test].min()  # nothing at or after the cut trains
        assert len(np.intersect1d(train, test)) == 0
    # Latest window: the last two distinct times (7, 8); each earlier one two times sooner.
    assert [sorted(set(times[te])) for _, te in folds] == [[3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]
    with pytest.raises(SelectionError, match="needs at least 7 distinct .t. values in the training rows; the segment"):
        time_folds(times[:5], Validation(kind="time", by="t", windows=3, horizon=2, step=2))


class LeakDetector:
    """An estimator that remembers the latest week it trained on and refuses to predict a week not after it."""

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> LeakDetector:
        self.seen = float(X["week"].max())
        self.value = float(np.mean(y))
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if float(X["week"].min()) <= self.seen:
            raise AssertionError(f"leak: trained up to week {self.seen}, asked for week {X['week'].min()}")
        return np.full(len(X), self.value)


def test_time_validation_never_trains_on_the_future() -> None:
    spec = replace(
        BASE, features=("week", "f0"), split_by="week", cutoff="25", import_roots=(str(Path(__file__).parent),),
        validation=Validation(kind="time", by="week", windows=4, horizon=2, step=2),
        candidates=(Candidate("detector", "python", "test_select:LeakDetector"),),
    )
    allow_pickle(True)  # a `python` candidate is pickled: what its target would trust
    result = fit_segment(series(), spec)
    scores = json.loads(str(result.cv_scores))
    assert result.status == "ok", result.error
    assert "error" not in scores["detector"] and len(scores["detector"]["folds"]) == 4


def test_kfold_selection_picks_the_better_model_and_beats_the_baseline() -> None:
    frame = segment_frame(names=["a"], rows=80, seed=2)
    result = fit_segment(frame, replace(BASE, candidates=(LGBM, RIDGE, MEAN)))
    assert result.status == "ok", result.error
    scores = json.loads(str(result.cv_scores))
    assert set(scores) == {"lgbm", "ridge", "mean"} and all(len(s["folds"]) == 4 for s in scores.values())
    assert result.candidate == "ridge"  # the truth is linear
    best = min(s["mean"] for s in scores.values())
    assert result.cv_mean == pytest.approx(scores["ridge"]["mean"]) == pytest.approx(best)
    assert result.cv_baseline == pytest.approx(scores["mean"]["mean"]) and result.cv_baseline > result.cv_mean
    assert result.model_format == "sklearn-skops" and result.cv_folds == 4


def test_tuning_repeats_itself_and_stays_in_its_space() -> None:
    frame = segment_frame(names=["a"], rows=60, seed=5)
    tuned = replace(LGBM, space={"num_leaves": {"int": [2, 12], "log": False},
                                 "learning_rate": {"float": [0.05, 0.5], "log": True},
                                 "min_data_in_leaf": {"choices": [2, 4, 8]}}, trials=5)
    spec = replace(BASE, candidates=(tuned,))
    first, again = fit_segment(frame, spec), fit_segment(frame, spec)
    assert first.status == "ok", first.error
    assert first.params == again.params and first.cv_scores == again.cv_scores
    params = json.loads(str(first.params))
    assert 2 <= params["num_leaves"] <= 12 and 0.05 <= params["learning_rate"] <= 0.5
    assert params["min_data_in_leaf"] in (2, 4, 8) and params["num_boost_round"] == 10
    assert json.loads(str(first.cv_scores))["lgbm"]["trials"] == 5


def test_a_candidate_failing_leaves_the_segment_to_another() -> None:
    frame = segment_frame(names=["a"], rows=40, seed=1)
    broken = Candidate("broken", "sklearn", "sklearn.linear_model.Ridge", {"alpha": "not a number"})
    result = fit_segment(frame, replace(BASE, candidates=(broken, MEAN)))
    assert result.status == "ok" and result.candidate == "mean"
    assert "error" in json.loads(str(result.cv_scores))["broken"]


def test_every_candidate_failing_fails_the_segment_with_each_reason() -> None:
    frame = segment_frame(names=["a"], rows=40, seed=1)
    broken = Candidate("broken", "sklearn", "sklearn.linear_model.Ridge", {"alpha": "not a number"})
    result = fit_segment(frame, replace(BASE, candidates=(broken,)))
    assert result.status == "failed" and result.error is not None
    assert result.error.startswith("every candidate failed: broken:")


def test_more_folds_than_rows_is_a_failed_segment() -> None:
    frame = segment_frame(names=["a"], rows=6, seed=1)  # 4 training rows after the holdout
    result = fit_segment(frame, replace(BASE, validation=Validation(folds=5), candidates=(MEAN,)))
    assert result.status == "failed"
    assert result.error == "5-fold validation needs at least 5 training rows; the segment has 4"


def test_baselines_last_and_seasonal_follow_time() -> None:
    frame = series(weeks=20)
    ordered = frame.sort_values("week")
    y, weeks = ordered["label"].to_numpy(), ordered["week"].to_numpy(dtype=float)
    assert fit_baseline("last", y, weeks).predict(np.zeros((3, 1))).tolist() == [y[-1]] * 3
    seasonal = fit_baseline("seasonal", y, weeks, period=4, time="week")
    ahead = pd.DataFrame({"week": [20, 21, 22, 23, 24]})
    assert seasonal.predict(ahead) == pytest.approx([y[-4], y[-3], y[-2], y[-1], y[-4]])
    back = load_model("baseline-json", seasonal.to_bytes(), "regression")  # JSON round trip
    assert isinstance(back, Baseline) and back.predict(ahead) == pytest.approx(seasonal.predict(ahead))
    with pytest.raises(ValueError, match="needs column 'week'"):
        seasonal.predict(pd.DataFrame({"f0": [1.0]}))


def test_seasonal_baseline_wins_a_seasonal_series_and_is_served() -> None:
    spec = replace(BASE, features=("f0",), split_by="week", cutoff="24",
                   validation=Validation(kind="time", by="week", windows=3, horizon=4, step=4),
                   candidates=(Candidate("season", "baseline", method="seasonal", period=4), MEAN))
    noseason = series(weeks=28).assign(label=lambda f: np.array([3.0, -1.0, 0.0, 5.0])[f["week"] % 4])
    result = fit_segment(noseason, spec)
    assert result.status == "ok", result.error
    assert result.candidate == "season" and result.cv_mean == pytest.approx(0.0, abs=1e-12)
    assert result.metrics["rmse"] == pytest.approx(0.0, abs=1e-12)  # the holdout, predicted from its weeks


def test_unset_selection_leaves_old_fingerprints_alone() -> None:
    plain = SegmentSpec(segment_by=("segment",), label="label", features=("f0",))
    assert plain.fingerprint == replace(plain, candidates=(), validation=None).fingerprint
    assert plain.fingerprint != replace(plain, validation=Validation()).fingerprint
    assert replace(plain, validation=Validation()).fingerprint != replace(
        plain, validation=Validation(), candidates=(MEAN,)).fingerprint
    # what a spec with candidates hashed to before ensembles (and their fields) existed: carried models stay carried
    chosen = replace(plain, features=("a",), segment_by=("s",), label="y", validation=Validation(),
                     candidates=(Candidate("lgbm"), Candidate("n", "baseline", method="naive")))
    assert chosen.fingerprint == "c6ab4b1281ae99ff"
    mixed = replace(chosen, candidates=(*chosen.choices(), Candidate("mix", "ensemble", members=("lgbm", "n"))))
    assert mixed.fingerprint != chosen.fingerprint
    assert replace(mixed, candidates=(*chosen.choices(), Candidate("mix", "ensemble", members=("lgbm", "n"),
                                                                   weights="cv"))).fingerprint != mixed.fingerprint
    own = replace(chosen, candidates=(*chosen.choices(), Candidate("ets", "statsforecast", entry="AutoETS")))
    assert replace(own, candidates=(*chosen.choices(), Candidate("ets", "statsforecast", entry="AutoETS",
                                                                 own_intervals=True))).fingerprint != own.fingerprint


def test_a_last_baseline_is_measured_as_far_ahead_as_the_holdout_uses_it() -> None:
    """Regression tasks: without a horizon of its own, each time window tests on as many distinct times as the
    holdout holds, so `last` (the latest training label, for every later row) scores in validation what it
    scores on the holdout: on a line, the same error in every window."""
    weeks = np.arange(52)
    frame = pd.DataFrame({"segment": "s", "week": weeks, "f0": np.sin(weeks), "label": 2.0 + 0.5 * weeks})
    spec = SegmentSpec(segment_by=("segment",), label="label", features=("f0",), split_by="week", cutoff="40",
                       validation=Validation(kind="time", windows=3, by="week", horizon=0, step=0),
                       candidates=(Candidate("last", "baseline", method="last"),
                                   Candidate("lgbm", params={"num_boost_round": 5, "min_data_in_leaf": 3})))
    result = fit_segment(frame, spec)
    assert result.status == "ok", result.error
    folds = json.loads(str(result.cv_scores))["last"]["folds"]
    holdout_if_last = float(np.sqrt(np.mean((0.5 * np.arange(1, 13)) ** 2)))  # 12 weeks after the last label
    assert folds == pytest.approx([holdout_if_last] * 3, abs=1e-9)
    only_last = fit_segment(frame, replace(spec, candidates=spec.candidates[:1]))
    assert only_last.metrics["rmse"] == pytest.approx(holdout_if_last, abs=1e-9)
