"""Reference profiles and drift: PSI as the textbook formula gives it, per segment, without mixing segments up."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from manymodels.segment.metrics import compute_metrics, grouped_metric
from manymodels.segment.profile import (
    BINS,
    EDGES,
    MISSING,
    WIDTH,
    column_profile,
    drift,
    make_profile,
    read_profiles,
    text_buckets,
)

rng = np.random.default_rng(0)


def _one(reference: pd.Series, new: pd.Series) -> tuple[float, float, float]:
    profiles = column_profile(reference)[None, None, :].astype(np.float32)
    psi, ks, chance, rows = drift(np.zeros(len(new), dtype=np.int64), [new], profiles, 1, np.array([len(reference)]))
    assert rows[0] == len(new)
    return float(psi[0, 0]), float(ks[0, 0]), float(chance[0, 0])


def test_psi_is_the_smoothed_textbook_formula() -> None:
    reference = pd.Series(rng.normal(size=400))
    new = pd.Series(rng.normal(loc=1.5, size=120))
    psi, ks, _ = _one(reference, new)
    edges = np.quantile(reference, np.linspace(0, 1, BINS + 1)[1:-1])

    def counts(values: pd.Series) -> np.ndarray:  # deciles of training, then "above training's largest", missing
        bins = np.searchsorted(edges, values, side="right")
        bins[values.to_numpy() > reference.max()] = BINS
        return np.bincount(bins, minlength=BINS + 2)

    ref_counts, new_counts = counts(reference), counts(new)
    assert new_counts[BINS] > 0  # the shifted rows reach past training's largest value
    p = (ref_counts + 0.5) / (len(reference) + 0.5 * (BINS + 2))
    q = (new_counts + 0.5) / (len(new) + 0.5 * (BINS + 2))
    assert psi == pytest.approx(float(np.sum((q - p) * np.log(q / p))), rel=1e-5)
    cdf = np.cumsum(new_counts / len(new) - ref_counts / len(reference))
    assert ks == pytest.approx(float(np.abs(cdf).max()), rel=1e-5)


def test_no_drift_is_not_significant_and_a_shift_is() -> None:
    calm = [_one(pd.Series(rng.normal(size=300)), pd.Series(rng.normal(size=40)))[2] for _ in range(200)]
    assert np.mean(np.array(calm) < 0.01) < 0.05  # few false alarms at 1%, though the PSI of 40 rows is ~0.25
    psi, _, chance = _one(pd.Series(rng.normal(size=300)), pd.Series(rng.normal(loc=2.0, size=40)))
    assert psi > 1.0 and chance < 1e-6


def test_constant_missing_and_text_columns_are_defined() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division by zero, no log of zero
        same, _, _ = _one(pd.Series(np.full(50, 3.0)), pd.Series(np.full(30, 3.0)))
        moved, _, _ = _one(pd.Series(np.full(50, 3.0)), pd.Series(np.full(30, 5.0)))
        gone, _, _ = _one(pd.Series(rng.normal(size=50)), pd.Series([np.nan] * 30))
        never, _, _ = _one(pd.Series([np.nan] * 50), pd.Series([np.nan] * 30))
        words = pd.Series(rng.choice(["a", "b", "c"], 200))
        text_same, _, _ = _one(words, pd.Series(rng.choice(["a", "b", "c"], 60)))
        text_new, _, _ = _one(words, pd.Series(rng.choice(["x", "y"], 60)))
    assert same < 0.05 and never < 0.05 and text_same < 0.2
    assert moved > 1.0 and gone > 1.0 and text_new > 1.0
    assert text_buckets(pd.Series(["a", None, "a"])).tolist()[1] == MISSING  # missing has its own bin
    up, _, _ = _one(pd.Series(np.zeros(60)), pd.Series(np.ones(30)))  # a 0/1 flag that was always 0 turns on
    assert up > 1.0


def test_many_segments_at_once_equal_one_at_a_time() -> None:
    segments = 30
    references = [pd.DataFrame({"x": rng.normal(loc=s, size=80), "w": rng.choice(["u", "v"], 80)})
                  for s in range(segments)]
    blobs = [make_profile(r, r["x"].to_numpy() * 2) for r in references]
    profiles, have = read_profiles(blobs, 3)
    assert have.all() and profiles.shape == (segments, 3, WIDTH) and WIDTH == 1 + EDGES + 1 + BINS + 2
    sizes = rng.integers(1, 40, segments)
    positions = np.repeat(np.arange(segments), sizes)
    shuffled = rng.permutation(len(positions))  # rows in any order
    positions = positions[shuffled]
    x = pd.Series(rng.normal(size=len(positions)) + positions * 1.0)
    w = pd.Series(rng.choice(["u", "v", "z"], len(positions)))
    pred = pd.Series(x.to_numpy() * 2)
    psi, ks, chance, rows = drift(positions, [x, w, pred], profiles, segments, np.full(segments, 80))
    for s in [0, 7, 29]:
        mine = positions == s
        alone, *_ = drift(np.zeros(int(mine.sum()), dtype=np.int64), [x[mine], w[mine], pred[mine]],
                          profiles[s : s + 1], 1, np.array([80]))
        np.testing.assert_allclose(psi[s], alone[0], rtol=1e-12)
    assert (rows == sizes).all()
    wrong_size, have = read_profiles([blobs[0], None, b"short"], 3)
    assert have.tolist() == [True, False, False] and np.isnan(wrong_size[1]).all()


@pytest.mark.parametrize(("task", "metric"), [("regression", m) for m in ("rmse", "mae", "mape", "r2")]
                         + [("binary", m) for m in ("logloss", "auc", "accuracy")])
def test_grouped_metric_is_compute_metrics_per_group(task: str, metric: str) -> None:
    groups = rng.integers(0, 6, 300)
    y = rng.normal(size=300) if task == "regression" else (rng.random(300) < 0.4) * 1.0
    predicted = y + rng.normal(size=300) if task == "regression" else rng.random(300)
    got = grouped_metric(task, metric, groups, 7, y, predicted)
    want = [compute_metrics(task, y[groups == g], predicted[groups == g])[metric] for g in range(6)]
    np.testing.assert_allclose(got[:6], want, rtol=1e-9)
    assert np.isnan(got[6])  # a group without rows
    y[groups == 2] = np.nan
    assert np.isnan(grouped_metric(task, metric, groups, 7, y, predicted)[2])  # a missing label: not judged
