"""A fleet's time grid: each segment's times as positions on one regular grid, and the grid's future.

Times are dates (a date or timestamp column, or text that parses as dates) on a pandas offset
(`freq`: `W-MON`, `MS`, `D`, `h`, ...), or numbers (years, period numbers) on a step (`freq: 5`).
The grid is stated in the bundle or inferred from the fleet's own spacing (`infer_freq`). A segment's
time `t` is at position `k` when `t` is its first time moved `k` steps along the grid; a time off the
grid, or one a segment holds twice, is an error naming the segment's time.

Used by `validate` (the bundle layer checks a dataset's grid before any run) and by the segment
layer (features, forecasts), so both read a time column the same way.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries import offsets
from pandas.tseries.frequencies import to_offset

DATE, NUMBER = "date", "number"
CALENDAR = ("week_of_year", "month", "day_of_week", "day_of_month", "quarter", "year")
_DAY_NAMES = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_VOTERS = 32_000  # rows whose weekday or month name an inferred grid's anchor (W-MON, QS-JAN, ...)


class GridError(ValueError):
    """A time column that does not parse, or times that do not sit on the grid."""


def time_kind(values: pd.Series | np.ndarray) -> str:
    """`number` for a numeric column, else `date` (dates, timestamps, or text read as dates)."""
    series = pd.Series(values)
    if pd.api.types.is_bool_dtype(series):
        raise GridError("a true/false column is not a time column")
    return NUMBER if pd.api.types.is_numeric_dtype(series) else DATE


def parse_times(values: pd.Series | np.ndarray, kind: str | None = None) -> np.ndarray:
    """A time column as an array: float64 for numbers, datetime64[ns] (naive, UTC) for dates.

    Raises:
        GridError: a missing time, or a value that is not a date (the first one is named, cut short).
    """
    series = pd.Series(values).reset_index(drop=True)
    kind = kind or time_kind(series)
    if series.isna().any():
        raise GridError(f"{int(series.isna().sum()):,} row(s) have no time")
    if kind == NUMBER:
        if not pd.api.types.is_numeric_dtype(series):
            parsed = pd.to_numeric(series, errors="coerce")
            if parsed.isna().any():
                raise GridError(f"time {_short(series[parsed.isna()].iloc[0])} is not a number, as the grid's are")
            series = parsed
        return series.to_numpy(dtype=np.float64)
    if pd.api.types.is_numeric_dtype(series):
        raise GridError("a numeric time column on a date grid: give freq as a number (the step), or dates")
    stamps = pd.to_datetime(series, errors="coerce", format="mixed") if not _is_datetime(series) else series
    if stamps.isna().any():
        raise GridError(f"time {_short(series[stamps.isna()].iloc[0])} does not parse as a date")
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps.to_numpy(dtype="datetime64[ns]")


def _is_datetime(series: pd.Series) -> bool:
    return bool(pd.api.types.is_datetime64_any_dtype(series))


@dataclass(frozen=True)
class TimeGrid:
    """A regular grid: dates on a pandas offset, or numbers on a step.

    Attributes:
        kind: `date` or `number`.
        freq: the offset alias (`W-MON`, `MS`) of a date grid; the step, as text, of a number grid.
    """

    kind: str
    freq: str

    @classmethod
    def of(cls, freq: str | int | float, kind: str) -> TimeGrid:
        """The grid `freq` names for times of `kind`.

        Raises:
            GridError: not an offset pandas knows (dates), or not a positive number (numbers).
        """
        if kind == NUMBER:
            try:
                step = float(freq)
            except (TypeError, ValueError):
                raise GridError(f"freq {freq!r} must be a number (the step between times), as the times are "
                                "numbers") from None
            if not np.isfinite(step) or step <= 0:
                raise GridError(f"freq {freq!r} must be a positive number")
            return cls(NUMBER, _number_text(step))
        if isinstance(freq, bool) or isinstance(freq, int | float):
            raise GridError(f"freq {freq!r} is a number, but the times are dates: give an offset such as W-MON, MS, D")
        hint = " (month end is ME, month start MS)" if str(freq).upper() == "M" else ""
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an alias pandas deprecates is refused as newer pandas refuse it
            try:
                offset = to_offset(str(freq))
            except (ValueError, FutureWarning) as exc:
                raise GridError(f"freq {freq!r} is not a pandas frequency such as W-MON, MS, D or h{hint}") from exc
        return cls(DATE, str(offset.freqstr))

    @property
    def step(self) -> float:
        """A number grid's step."""
        return float(self.freq)

    @property
    def offset(self) -> Any:
        """A date grid's pandas offset."""
        return to_offset(self.freq)

    @property
    def _delta(self) -> np.timedelta64 | None:
        """A date grid's fixed step (weeks, days, hours, ...), which arithmetic places times on; None: calendar
        steps (months, ...). pandas builds a range of such offsets one date at a time, in Python."""
        offset = self.offset
        if isinstance(offset, offsets.Week) and offset.weekday is not None:
            return np.timedelta64(7 * offset.n, "D").astype("timedelta64[ns]")
        if isinstance(offset, offsets.Day):  # naive times: a day is 24 hours
            return np.timedelta64(offset.n, "D").astype("timedelta64[ns]")
        if isinstance(offset, offsets.Tick):
            return np.timedelta64(int(offset.nanos), "ns")
        return None

    @property
    def _months(self) -> tuple[int, bool] | None:
        """A month grid's step in months and whether it stands on month starts (else ends); None otherwise."""
        offset = self.offset
        if type(offset) is offsets.MonthBegin:
            return offset.n, True
        if type(offset) is offsets.MonthEnd:
            return offset.n, False
        return None

    def positions(self, times: np.ndarray) -> np.ndarray:
        """Each time's position on the grid, counted from the earliest (times of one segment, any order).

        Raises:
            GridError: a time off the grid (named).
        """
        if len(times) == 0:
            return np.zeros(0, dtype=np.int64)
        if self.kind == NUMBER:
            steps = (times - times.min()) / self.step
            whole = np.rint(steps)
            off = np.abs(steps - whole) > 1e-9
            if off.any():
                raise GridError(f"time {_short(times[off][0])} is not on the grid of step {self.freq} from "
                                f"{_short(times.min())}")
            return whole.astype(np.int64)
        stamps = pd.DatetimeIndex(times)
        first = stamps.min()
        offset = self.offset
        if not offset.is_on_offset(first):
            raise GridError(f"time {first.isoformat()} is not on the grid {self.freq}")
        values = np.asarray(times, dtype="datetime64[ns]")
        if self._delta is not None:
            gap = (values - first.to_datetime64()).astype(np.int64)
            step = self._delta.astype(np.int64)
            found = np.where(gap % step == 0, gap // step, -1)
        elif self._months is not None:
            found = self._month_positions(values, first)
        else:
            found = pd.date_range(first, stamps.max(), freq=offset).get_indexer(stamps)
        if (found < 0).any():
            raise GridError(f"time {stamps[found < 0][0].isoformat()} is not on the grid {self.freq}")
        return found.astype(np.int64)

    def _month_positions(self, values: np.ndarray, first: pd.Timestamp) -> np.ndarray:
        """Positions on a month grid: each time must stand on its month's start (or end), at midnight."""
        n, starts = self._months or (1, True)
        day = values.astype("datetime64[D]")
        on = day == values  # midnight
        month = day.astype("datetime64[M]")
        on &= (day == month.astype("datetime64[D]")) if starts else (day + 1).astype("datetime64[M]") != month
        count = (month - np.datetime64(first.to_datetime64(), "M")).astype(np.int64)
        return np.where(on & (count % n == 0), count // n, -1)

    def _month_steps(self, start: np.ndarray | np.datetime64, steps: np.ndarray) -> np.ndarray:
        """Times `steps` grid steps (months x n) after month-grid times `start` (any shapes that broadcast)."""
        n, starts = self._months or (1, True)
        month = np.asarray(start, dtype="datetime64[ns]").astype("datetime64[M]") + steps * n
        day = month.astype("datetime64[D]") if starts else (month + 1).astype("datetime64[D]") - 1
        return day.astype("datetime64[ns]")

    def span(self, first: Any, count: int) -> np.ndarray:
        """`count` times along the grid from `first` (which must be on it)."""
        if self.kind == NUMBER:
            return float(first) + self.step * np.arange(count, dtype=np.float64)
        start = np.datetime64(pd.Timestamp(first).to_datetime64(), "ns")
        if self._delta is not None:
            return start + np.arange(count) * self._delta
        if self._months is not None:
            return self._month_steps(start, np.arange(count))
        return pd.date_range(pd.Timestamp(first), periods=count, freq=self.offset).to_numpy(dtype="datetime64[ns]")

    def future(self, last: np.ndarray, steps: int) -> np.ndarray:
        """The next `steps` times after each of `last`: an array of shape (len(last), steps).

        Vectorised across segments (one offset addition per step), whatever the offset.
        """
        if self.kind == NUMBER:
            return np.asarray(last, dtype=np.float64)[:, None] + self.step * np.arange(1, steps + 1)[None, :]
        ends = np.asarray(last, dtype="datetime64[ns]")
        if self._delta is not None:
            return ends[:, None] + np.arange(1, steps + 1)[None, :] * self._delta
        if self._months is not None:
            return self._month_steps(ends[:, None], np.arange(1, steps + 1)[None, :])
        if len(last) == 1:  # one segment (a validation window): one range, not an addition per step
            return self.span(ends[0], steps + 1)[None, 1:]
        base = pd.DatetimeIndex(ends)
        out = np.empty((len(base), steps), dtype="datetime64[ns]")
        offset = self.offset
        for k in range(steps):
            out[:, k] = (base + (k + 1) * offset).to_numpy(dtype="datetime64[ns]")
        return out

    def describe(self) -> str:
        """How a message names the grid."""
        return f"step {self.freq}" if self.kind == NUMBER else self.freq


def infer_freq(codes: np.ndarray, times: np.ndarray, kind: str) -> str:
    """The fleet's grid from its own spacing: the most common gap between a segment's consecutive times.

    Args:
        codes: each row's segment (any integers; rows need not be sorted).
        times: each row's time, as `parse_times` gives them.
        kind: `date` or `number`.

    Raises:
        GridError: no segment has two distinct times, or the spacing names no grid (set `freq`).
    """
    order = np.lexsort((times, codes))
    codes, times = np.asarray(codes)[order], np.asarray(times)[order]
    same = codes[1:] == codes[:-1]
    if kind == NUMBER:
        gaps = np.diff(times.astype(np.float64))[same]
        gaps = gaps[gaps > 0]
        if gaps.size == 0:
            raise GridError("no segment has two distinct times: set freq (the step between times)")
        return _number_text(float(Counter(np.round(gaps, 9).tolist()).most_common(1)[0][0]))
    ns = np.diff(times.astype("datetime64[ns]").astype(np.int64))[same]
    gaps = ns[ns > 0]
    if gaps.size == 0:
        raise GridError("no segment has two distinct times: set freq (W-MON, MS, D, ...)")
    gap = pd.Timedelta(int(Counter(gaps.tolist()).most_common(1)[0][0]), unit="ns")
    stamps = pd.DatetimeIndex(times[:_VOTERS])
    days = gap / pd.Timedelta(days=1)
    if gap < pd.Timedelta(days=1):
        return str(to_offset(gap).freqstr)
    if days == int(days) and days < 28 and days != 7:
        return "D" if days == 1 else f"{int(days)}D"
    if days == 7:
        return f"W-{_DAY_NAMES[_mode(stamps.day_of_week)]}"
    start = bool((stamps.day == 1).all())
    end = bool(stamps.is_month_end.all())
    for low, high, months in ((28, 31, 1), (89, 92, 3), (181, 184, 6), (365, 366, 12)):
        if low <= days <= high and (start or end):
            month = _mode(stamps.month)
            if months == 1:
                return "MS" if start else "ME"
            if months == 3:  # QS-JAN: quarters starting in Jan, Apr, Jul, Oct; QE-MAR: ending in Mar, Jun, ...
                return f"QS-{_MONTH_NAMES[(month - 1) % 3]}" if start else f"QE-{_MONTH_NAMES[month - 1]}"
            if months == 6:
                return "6MS" if start else "6ME"
            return f"YS-{_MONTH_NAMES[month - 1]}" if start else f"YE-{_MONTH_NAMES[month - 1]}"
    raise GridError(f"cannot tell the grid from a spacing of {gap}: set freq (an offset such as W-MON, MS, D)")


def _mode(values: Any) -> int:
    return int(Counter(np.asarray(values).tolist()).most_common(1)[0][0])


def calendar_values(times: np.ndarray, names: tuple[str, ...] | list[str]) -> np.ndarray:
    """Calendar features of dates (any shape): an array of that shape plus one axis of len(names), float64.

    Plain datetime arithmetic (no pandas objects: this runs for every validation window of every segment):
    `week_of_year` is the ISO week (the week of the Thursday of the date's Monday-to-Sunday week), `day_of_week`
    0 for Monday.
    """
    values = np.asarray(times, dtype="datetime64[ns]")
    day = values.astype("datetime64[D]")
    days = day.astype(np.int64)
    month = day.astype("datetime64[M]")
    month_number = month.astype(np.int64) % 12 + 1
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday
    columns = []
    for name in names:
        if name == "week_of_year":
            thursday = days - weekday + 3
            start = np.asarray(thursday, dtype="datetime64[D]").astype("datetime64[Y]").astype("datetime64[D]")
            values_ = (thursday - start.astype(np.int64)) // 7 + 1
        elif name == "month":
            values_ = month_number
        elif name == "day_of_week":
            values_ = weekday
        elif name == "day_of_month":
            values_ = (day - month.astype("datetime64[D]")).astype(np.int64) + 1
        elif name == "quarter":
            values_ = (month_number - 1) // 3 + 1
        elif name == "year":
            values_ = day.astype("datetime64[Y]").astype(np.int64) + 1970
        else:
            raise ValueError(f"unknown calendar feature {name!r}; use one of {', '.join(CALENDAR)}")
        columns.append(np.asarray(values_, dtype=np.float64))
    if not columns:
        return np.zeros((*values.shape, 0))
    return np.stack(columns, axis=-1)


def time_text(value: Any, kind: str) -> str | float:
    """A time as stored in JSON: ISO text for a date, the number for a number."""
    if kind == NUMBER:
        return float(value)
    return pd.Timestamp(value).isoformat()


def time_from_text(value: str | float, kind: str) -> Any:
    """A time read back from `time_text`: float64 or datetime64[ns]."""
    if kind == NUMBER:
        return np.float64(value)
    return np.datetime64(pd.Timestamp(value).to_datetime64(), "ns")


def _number_text(step: float) -> str:
    return str(int(step)) if float(step).is_integer() else repr(float(step))


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
