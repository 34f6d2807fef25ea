"""Conformal prediction intervals from a segment's validation windows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from manymodels.segment.intervals import half_widths, interval_scores, scores_needed, window_residuals


def test_the_interval_is_the_pools_conformal_quantile_growing_with_the_square_root_of_the_step() -> None:
    """Errors of every window and step, each divided by sqrt(step), pooled; at level L the ceil((n + 1) L)-th
    smallest, times sqrt(step) ahead."""
    residuals = np.array([[1.0, -2.0 * math.sqrt(2)], [-3.0, 4.0 * math.sqrt(2)], [5.0, np.nan]])
    # scores: 1, 2, 3, 4, 5 (n = 5); 50%: the 3rd smallest (3); 80%: ceil(4.8) = 5th (5); 90%: ceil(5.4) > 5
    widths = half_widths(residuals, [50, 80, 90], steps=3)
    np.testing.assert_allclose(widths[0], 3.0 * np.sqrt([1, 2, 3]))
    np.testing.assert_allclose(widths[1], 5.0 * np.sqrt([1, 2, 3]))
    assert np.isnan(widths[2]).all()  # too few errors to claim 90%
    assert np.isnan(half_widths(None, [80], 2)).all()
    assert [scores_needed(level) for level in (50, 80, 90, 95)] == [1, 4, 9, 19]


def test_coverage_and_winkler_on_a_holdout() -> None:
    actual = np.array([10.0, 12.0, 20.0, np.nan])
    predicted = np.array([10.0, 10.0, 10.0, 10.0])
    widths = np.array([[1.0, 3.0, 4.0, 1.0], [np.nan] * 4])
    scores = interval_scores(actual, predicted, widths, [80, 95])
    assert scores["80"]["coverage"] == pytest.approx(2 / 3)  # 10 in [9, 11], 12 in [7, 13], 20 not in [6, 14]
    # Winkler: width, plus 2 / (1 - 0.8) = 10 times the miss: (2 + 6 + 8 + 10 * 6) / 3
    assert scores["80"]["winkler"] == pytest.approx((2 + 6 + 8 + 60) / 3)
    assert scores["95"] == {"coverage": None, "winkler": None}


def test_window_residuals_are_actual_minus_forecast_padded_with_nan() -> None:
    out = window_residuals([np.array([3.0, 4.0]), np.array([5.0])], [np.array([1.0, 1.0]), np.array([2.0])])
    np.testing.assert_array_equal(out, np.array([[2.0, 3.0], [3.0, np.nan]]))
