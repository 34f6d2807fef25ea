"""A fleet's time grid: inferred from its spacing, times placed on it, its future, its calendar."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from manymodels.data.timegrid import GridError, TimeGrid, calendar_values, infer_freq, parse_times


@pytest.mark.parametrize("freq", ["W-MON", "W-SUN", "MS", "ME", "QS-JAN", "YS-JAN", "D", "2D", "h", "15min"])
def test_the_grid_is_inferred_from_the_fleets_own_spacing(freq: str) -> None:
    times = pd.date_range("2021-01-04", periods=30, freq=freq).to_numpy(dtype="datetime64[ns]")
    codes = np.repeat([0, 1], 15)  # two segments, one after the other
    found = infer_freq(codes, times, "date")
    assert pd.date_range("2021-01-04", periods=30, freq=found).equals(pd.date_range("2021-01-04", periods=30,
                                                                                    freq=freq))


def test_holes_do_not_fool_the_inference_and_numbers_get_their_step() -> None:
    weeks = pd.date_range("2024-01-01", periods=20, freq="W-MON").delete([3, 4, 11]).to_numpy("datetime64[ns]")
    assert infer_freq(np.zeros(len(weeks), dtype=np.int64), weeks, "date") == "W-MON"
    years = np.array([1952.0, 1957, 1962, 1972, 1952, 1957])
    assert infer_freq(np.array([0, 0, 0, 0, 1, 1]), years, "number") == "5"
    with pytest.raises(GridError, match="no segment has two distinct times"):
        infer_freq(np.array([0, 1]), years[:2], "number")


def test_positions_on_the_grid_and_times_off_it() -> None:
    grid = TimeGrid.of("MS", "date")
    times = parse_times(pd.Series(["2024-03-01", "2024-01-01", "2024-06-01"]))
    assert grid.positions(times).tolist() == [2, 0, 5]
    with pytest.raises(GridError, match="time 2024-02-15T00:00:00 is not on the grid MS"):
        grid.positions(parse_times(pd.Series(["2024-01-01", "2024-02-15"])))
    years = TimeGrid.of(5, "number")
    assert years.positions(np.array([2007.0, 1952.0])).tolist() == [11, 0]
    with pytest.raises(GridError, match="1953.0 is not on the grid of step 5"):
        years.positions(np.array([1952.0, 1953.0]))


def test_the_future_of_many_segments_at_once() -> None:
    grid = TimeGrid.of("MS", "date")
    last = np.array(["2024-01-01", "2024-11-01"], dtype="datetime64[ns]")
    future = grid.future(last, 3)
    assert [str(t)[:10] for t in future[1]] == ["2024-12-01", "2025-01-01", "2025-02-01"]
    assert future.shape == (2, 3) and grid.future(last[:1], 2).shape == (1, 2)
    np.testing.assert_array_equal(TimeGrid.of(5, "number").future(np.array([2007.0]), 2), [[2012.0, 2017.0]])


def test_bad_frequencies_and_times_are_explained() -> None:
    with pytest.raises(GridError, match=r"freq 'M' is not a pandas frequency .*month end is ME"):
        TimeGrid.of("M", "date")
    with pytest.raises(GridError, match="is a number, but the times are dates"):
        TimeGrid.of(7, "date")
    with pytest.raises(GridError, match="'soon' does not parse as a date"):
        parse_times(pd.Series(["2024-01-01", "soon"]))
    with pytest.raises(GridError, match="1 row"):
        parse_times(pd.Series(["2024-01-01", None]))


def test_calendar_values_keep_the_shape_of_the_times() -> None:
    times = np.array([["2024-01-01", "2024-12-30"]], dtype="datetime64[ns]")
    values = calendar_values(times, ["month", "week_of_year", "day_of_week", "quarter", "year", "day_of_month"])
    assert values.shape == (1, 2, 6)
    assert values[0, 1].tolist() == [12, 1, 0, 4, 2024, 30]  # ISO week 1 of 2025


@pytest.mark.parametrize("freq", ["W-MON", "2W-SUN", "D", "3D", "h", "15min", "MS", "ME", "2MS", "QS-JAN", "YS-JAN"])
def test_fixed_and_month_steps_by_arithmetic_agree_with_pandas_ranges(freq: str) -> None:
    grid = TimeGrid.of(freq, "date")
    start = pd.date_range("2023-01-01", periods=1, freq=freq)[0]
    want = pd.date_range(start, periods=40, freq=freq).to_numpy(dtype="datetime64[ns]")
    np.testing.assert_array_equal(grid.span(start, 40), want)
    np.testing.assert_array_equal(grid.positions(want[[5, 0, 39]]), [5, 0, 39])
    np.testing.assert_array_equal(grid.future(want[[3, 10]], 4), np.stack([want[4:8], want[11:15]]))
    if freq in ("MS", "ME", "W-MON", "D"):
        with pytest.raises(GridError, match="is not on the grid"):
            grid.positions(np.array([want[0], want[2] + np.timedelta64(1, "h")]))


def test_calendar_values_agree_with_pandas_over_years_of_days() -> None:
    days = pd.date_range("1999-12-20", "2027-01-10", freq="D")
    got = calendar_values(days.to_numpy(dtype="datetime64[ns]"),
                          ["week_of_year", "month", "day_of_week", "day_of_month", "quarter", "year"])
    want = np.column_stack([days.isocalendar().week.to_numpy(), days.month, days.day_of_week, days.day,
                            days.quarter, days.year])
    np.testing.assert_array_equal(got, want)
