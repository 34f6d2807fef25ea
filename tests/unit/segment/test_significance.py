"""Monitoring's tests of chance: the errors' rank test, interval coverage, the fleet's false discovery rate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, mannwhitneyu, norm

from manymodels.jobs.drift import _drift_p
from manymodels.segment.intervals import window_sums
from manymodels.segment.profile import (
    TOP,
    column_profile,
    make_profile,
    numeric_bins,
    read_losses,
    read_profiles,
    with_losses,
)
from manymodels.segment.significance import (
    coverage_p,
    deflated,
    design_effect,
    false_discovery,
    intra_correlation,
    loss_rank_p,
    row_losses,
)


def _holdout_rows(losses: list[np.ndarray]) -> np.ndarray:
    return np.array([column_profile(pd.Series(x)) for x in losses], dtype=np.float32)


def test_the_rank_test_is_mann_whitney_on_the_binned_losses() -> None:
    """Binned alike (the holdout as its profile keeps it), ties within a bin: the same p-value as scipy's
    Mann-Whitney (asymptotic, tie-corrected, continuity-corrected, one-sided) on the bin numbers."""
    rng = np.random.default_rng(4)
    holdout = [rng.chisquare(1, 40), rng.chisquare(1, 25) * 2, rng.exponential(size=60)]
    new = [rng.chisquare(1, 30) * 1.5, rng.chisquare(1, 12), rng.exponential(size=9) * 3]
    rows = _holdout_rows(holdout)
    positions = np.repeat(np.arange(3), [len(x) for x in new])
    got = loss_rank_p(positions, 3, np.concatenate(new), rows, np.array([40, 25, 60]))
    for s in range(3):
        edges = np.broadcast_to(rows[s, 1:TOP], (len(new[s]), TOP - 1)).astype(float)
        ours = numeric_bins(new[s], edges, float(rows[s, TOP]))
        counts = np.rint(rows[s, TOP + 1 :] * len(holdout[s])).astype(int)  # the holdout's rows per bin, as kept
        theirs = np.repeat(np.arange(len(counts)), counts)
        want = mannwhitneyu(ours, theirs, alternative="greater", method="asymptotic", use_continuity=True).pvalue
        assert got[s] == pytest.approx(want, rel=1e-9)


def test_unchanged_errors_are_flagged_at_about_the_level_and_changed_ones_are_found() -> None:
    rng = np.random.default_rng(5)
    segments, rows = 4000, 40
    for scale, low, high in [(1.0, 0.005, 0.02), (2.0, 0.75, 1.0)]:
        holdout = row_losses("rmse", np.zeros((segments, rows)), rng.normal(size=(segments, rows)))
        new = row_losses("rmse", np.zeros(segments * rows), rng.normal(size=segments * rows) * scale)
        p = loss_rank_p(np.repeat(np.arange(segments), rows), segments, new, _holdout_rows(list(holdout)),
                        np.full(segments, rows))
        assert low <= (p < 0.01).mean() <= high, (scale, (p < 0.01).mean())


def test_a_segment_without_holdout_losses_or_new_rows_has_no_p_value() -> None:
    rows = _holdout_rows([np.arange(10.0), np.arange(10.0)])
    rows[1] = np.nan  # trained before holdout losses were kept
    p = loss_rank_p(np.array([0, 0, 1]), 3, np.array([1.0, 2.0, 3.0]), np.vstack([rows, rows[:1]]),
                    np.array([10, 10, 10]))
    assert np.isfinite(p[0]) and np.isnan(p[1]) and np.isnan(p[2])  # 2: no new row
    tied = loss_rank_p(np.array([0, 0]), 1, np.zeros(2), _holdout_rows([np.zeros(5)]), np.array([5]))
    assert tied[0] == 1.0  # every loss 0 on both sides: nothing changed


def test_row_losses_average_to_the_metric() -> None:
    y, guess = np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.0, 3.0])
    assert np.sqrt(row_losses("rmse", y, guess).mean()) == pytest.approx(np.sqrt((0.25 + 1) / 3))
    assert row_losses("mae", y, guess).mean() == pytest.approx(0.5)
    assert row_losses("mape", np.array([0.0, 2.0]), np.array([1.0, 1.0]))[1] == 0.5
    labels, prob = np.array([1.0, 0.0, 1.0]), np.array([0.9, 0.2, 0.4])
    assert row_losses("accuracy", labels, prob).tolist() == [0.0, 0.0, 1.0]
    assert row_losses("auc", labels, prob) == pytest.approx(row_losses("logloss", labels, prob))
    with pytest.raises(ValueError, match="no per-row loss"):
        row_losses("nonsense", y, guess)


def test_coverage_is_judged_against_the_binomial_law() -> None:
    p = coverage_p(np.array([0, 2, 7, 0]), np.array([40, 40, 40, 0]), 95)  # 7 of 40: 17.5% outside a 95% band
    assert p[0] == 1.0 and p[1] == pytest.approx(binom.sf(1, 40, 0.05)) and p[2] < 0.01 and np.isnan(p[3])


def test_false_discovery_adjusts_the_finite_p_values_only() -> None:
    q = false_discovery(np.array([0.01, np.nan, 0.04, 0.03]))
    assert np.isnan(q[1]) and q[[0, 2, 3]] == pytest.approx([0.03, 0.04, 0.04])


def test_a_segment_drifts_on_its_smallest_p_value_times_its_columns() -> None:
    chance = np.array([[0.001, 0.5, np.nan], [0.2, 0.3, 0.4], [np.nan, np.nan, np.nan]])
    shifted = np.array([[False, True, False], [False, False, False], [False, False, False]])
    p = _drift_p(chance, shifted)
    assert p[0] == pytest.approx(1.0)  # the one column over the PSI bar: 0.5 x 2 columns tested
    assert p[1] == pytest.approx(0.6) and np.isnan(p[2])  # no column over the bar: the smallest, x 3


def test_a_profile_keeps_its_holdout_losses_apart_from_its_columns() -> None:
    features = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) % 3})
    plain = make_profile(features, np.arange(20.0))
    kept = with_losses(plain, np.array([0.5, 1.0, np.nan, 2.0]))
    assert with_losses(None, np.ones(3)) is None
    columns, have = read_profiles([plain, kept, b"x"], 3)
    assert have.tolist() == [True, True, False]
    np.testing.assert_array_equal(columns[0], columns[1])  # the columns read alike with or without losses
    losses = read_losses([plain, kept, None], 3)
    assert np.isnan(losses[0]).all() and np.isnan(losses[2]).all()
    assert losses[1, TOP] == 2.0  # the largest holdout loss (the NaN left out)


def test_the_correlation_within_a_forecast_is_found_from_its_windows_over_the_fleet() -> None:
    """Errors sharing a level per forecast (variance 0.25 against 1 for the rest): the signed errors' intra-window
    correlation is 0.25 / 1.25 = 0.2, found from 3 windows of each of 2,000 segments; the design effect of 12 rows
    follows, and a normal test's p-value is deflated by it (unchanged at D = 1)."""
    rng = np.random.default_rng(6)
    steps = np.sqrt(np.arange(1, 13))
    errors = (rng.normal(scale=0.5, size=(2000, 3, 1)) + rng.normal(size=(2000, 3, 12))) * steps
    sums = np.array([window_sums(e) for e in errors])
    signed = intra_correlation(sums[:, 2], sums[:, 3], sums[:, 4], sums[:, 5])
    sizes = intra_correlation(sums[:, 0], sums[:, 1], sums[:, 4], sums[:, 5])
    assert signed == pytest.approx(0.2, abs=0.03) and 0 <= sizes < signed
    assert design_effect(np.array([12, 1]), signed).tolist() == pytest.approx([1 + 11 * signed, 1.0])
    assert intra_correlation(np.array([np.nan]), np.array([np.nan]), np.array([0]), np.array([0])) == 0.0
    assert np.isnan(window_sums(np.ones((1, 12)))[0]) and window_sums(None)[4] == 0
    p = np.array([1e-6, 0.3, np.nan])
    np.testing.assert_allclose(deflated(p, 1.0), p, rtol=1e-9)
    assert deflated(p, 4.0)[0] == pytest.approx(norm.sf(norm.isf(1e-6) / 2)) and np.isnan(deflated(p, 4.0)[2])
    # misses of rows that count as fewer: 6 of 12 at D = 3 is as likely as 2 of 4
    assert coverage_p(np.array([6]), np.array([12]), 95, 3.0)[0] == pytest.approx(binom.sf(1, 4, 0.05))
