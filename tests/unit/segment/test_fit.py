"""fit_segment: the pure per-segment work, its failure rows, splits, estimators and fingerprints."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from helpers import segment_frame
from manymodels.estimators import allow_pickle, load_model
from manymodels.segment import SegmentSpec, compute_metrics, fit_segment
from manymodels.segment.fit import data_fingerprint

SPEC = SegmentSpec(segment_by=("segment",), label="label", features=("f0", "f1", "f2"),
                   params={"num_boost_round": 50, "min_data_in_leaf": 5})


def one_segment(rows: int = 200, seed: int = 0) -> pd.DataFrame:
    frame = segment_frame(segments=1, rows=rows, seed=seed, noise=0.5)
    return frame.reset_index(drop=True)


def test_fit_returns_native_model_and_holdout_metrics() -> None:
    frame = one_segment()
    result = fit_segment(frame, SPEC)
    assert result.status == "ok", result.error
    assert (result.n_train, result.n_test) == (160, 40)
    assert result.model_format == "lightgbm-text" and result.model is not None
    assert result.model.startswith(b"tree\nversion=")  # LightGBM's own text format
    assert 0 < result.metrics["rmse"] < 3 and result.metrics["r2"] > 0.5
    predictor = load_model("lightgbm-text", result.model, "regression")
    assert predictor.predict(frame[list(SPEC.features)]).shape == (200,)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda f: f.head(1), "segment has 1 row(s); min_rows is 5"),
        (lambda f: f.assign(label=np.where(np.arange(len(f)) < 3, np.nan, f["label"])),
         "label 'label' has 3 missing or infinite value(s) of 200"),
        (lambda f: f.assign(label=np.where(np.arange(len(f)) == 0, np.inf, f["label"])),
         "label 'label' has 1 missing or infinite value(s) of 200"),
        (lambda f: f.assign(label=4.0), "label 'label' is constant (4 in all 200 rows): nothing to learn"),
    ],
)
def test_bad_segments_fail_with_their_error(change: object, error: str) -> None:
    result = fit_segment(change(one_segment()), SPEC)  # type: ignore[operator]
    assert result.status == "failed"
    assert result.error == error
    assert result.model is None


def test_text_is_a_lightgbm_category_and_missing_values_fail_an_estimator_without_them() -> None:
    words = one_segment().assign(f1=lambda f: np.where(f["f0"] > 0.5, "high", "low"))
    assert fit_segment(words, SPEC).status == "ok"
    ridge = dataclasses.replace(SPEC, estimator="sklearn", entry="sklearn.linear_model.Ridge")
    holes = one_segment().assign(f2=lambda f: np.where(np.arange(len(f)) < 4, np.nan, f["f2"]))
    result = fit_segment(holes, ridge)
    assert result.status == "failed" and result.error is not None
    assert result.error.startswith("missing values in feature(s) 'f2' (4 of 200), which sklearn.linear_model.Ridge")


def test_time_split_trains_before_cutoff() -> None:
    frame = one_segment(rows=100)
    frame["day"] = pd.date_range("2026-01-01", periods=100, freq="D")
    spec = dataclasses.replace(SPEC, split_by="day", cutoff="2026-03-22")
    result = fit_segment(frame, spec)
    assert result.status == "ok", result.error
    assert (result.n_train, result.n_test) == (80, 20)
    late = dataclasses.replace(spec, cutoff="2027-01-01")
    assert fit_segment(frame, late).error == "no rows at or after cutoff 2027-01-01: nothing to evaluate on"


def test_binary_task_and_its_metrics() -> None:
    frame = one_segment(rows=300)
    frame["label"] = (frame["f0"] + 0.1 * np.random.default_rng(0).normal(size=300) > 0.5).astype(int)
    spec = dataclasses.replace(SPEC, task="binary", metric="auc")
    result = fit_segment(frame, spec)
    assert result.status == "ok", result.error
    assert set(result.metrics) == {"logloss", "auc", "accuracy"}
    assert result.metrics["auc"] > 0.9
    bad = frame.assign(label=frame["label"] * 2)
    assert fit_segment(bad, spec).error == "label 'label' must be 0 or 1 for task binary"


def test_sklearn_estimator_by_import_path() -> None:
    spec = dataclasses.replace(SPEC, estimator="sklearn", entry="sklearn.linear_model.Ridge", params={"alpha": 0.1})
    result = fit_segment(one_segment(), spec)
    assert result.status == "ok", result.error
    assert result.model_format == "sklearn-skops"  # no pickle: loading builds only the types it trusts
    assert result.metrics["rmse"] < 1.0  # the data is linear: a linear model reaches the noise


def test_user_function_estimator() -> None:
    spec = dataclasses.replace(SPEC, estimator="python", entry="sklearn.dummy:DummyRegressor", params={})
    refused = fit_segment(one_segment(), spec)  # saved with pickle: only where the target trusts it
    assert refused.status == "failed" and "does not trust pickle" in str(refused.error), refused.error
    allow_pickle(True)
    result = fit_segment(one_segment(), spec)
    assert result.status == "ok" and result.model_format == "pickle", result.error
    missing = dataclasses.replace(SPEC, estimator="python", entry="no_such_module_xyz:fit")
    assert "cannot import module 'no_such_module_xyz'" in str(fit_segment(one_segment(), missing).error)


def test_fingerprint_ignores_row_order_but_not_content_or_spec() -> None:
    frame = one_segment()
    shuffled = frame.sample(frac=1.0, random_state=3)
    assert data_fingerprint(frame, SPEC) == data_fingerprint(shuffled, SPEC)
    changed = frame.copy()
    changed.loc[0, "label"] += 1
    assert data_fingerprint(changed, SPEC) != data_fingerprint(frame, SPEC)
    other = dataclasses.replace(SPEC, params={"num_boost_round": 51})
    assert data_fingerprint(frame, other) != data_fingerprint(frame, SPEC)


def test_metrics_match_their_definitions() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500).astype(float)
    p = np.clip(y * 0.3 + rng.random(500) * 0.7, 0, 1)
    p[:50] = 0.5  # ties
    m = compute_metrics("binary", y, p)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    r = compute_metrics("regression", np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0]))
    assert r["rmse"] == pytest.approx(np.sqrt(5 / 3))
    assert r["mae"] == pytest.approx(1.0)
    assert r["mape"] == pytest.approx((0 + 0.5 + 0.5) / 3)


def test_row_order_does_not_change_the_model() -> None:
    """Rows are put in a canonical order first: engines that shuffle data still agree exactly."""
    frame = one_segment()
    a = fit_segment(frame, SPEC)
    b = fit_segment(frame.sample(frac=1.0, random_state=11), SPEC)
    assert a.metrics == b.metrics
    assert a.model == b.model


@pytest.mark.parametrize(("task", "objective"), [("regression", "regression"), ("binary", "binary"),
                                                 ("regression", "poisson"), ("regression", "huber")])
def test_the_profile_reads_lightgbms_training_scores_which_equal_predicting_the_training_rows(
        task: str, objective: str) -> None:
    from manymodels.estimators import fit_model
    from manymodels.segment.fit import _profile
    from manymodels.segment.profile import make_profile

    frame = one_segment(rows=300, seed=3)
    X = frame[list(SPEC.features)]  # noqa: N806
    y = frame["label"].to_numpy()
    y = (y > np.median(y)).astype(float) if task == "binary" else (np.abs(y) if objective == "poisson" else y)
    predictor, fmt, blob = fit_model("lightgbm", None, {"num_boost_round": 30, "objective": objective}, task, X, y)
    fitted = predictor.fitted_values()  # type: ignore[attr-defined]
    assert fitted is not None and np.array_equal(fitted, predictor.predict(X))
    assert _profile(predictor, X, X) == make_profile(X, predictor.predict(X))
    loaded = load_model(fmt, blob, task)  # bytes hold no training rows: predicting them is the way
    assert loaded.fitted_values() is None  # type: ignore[attr-defined]


def test_a_model_of_single_leaves_is_constant_and_one_with_a_split_is_not() -> None:
    from manymodels.estimators import fit_model, is_constant

    frame = one_segment(rows=100)
    X, y = frame[list(SPEC.features)], frame["label"].to_numpy()  # noqa: N806
    _, fmt, split = fit_model("lightgbm", None, {"num_boost_round": 5, "min_data_in_leaf": 5}, "regression", X, y)
    _, _, stumps = fit_model("lightgbm", None, {"num_boost_round": 5, "min_data_in_leaf": 500}, "regression", X, y)
    assert not is_constant(fmt, split) and is_constant(fmt, stumps)
    assert not is_constant("pickle", stumps)
