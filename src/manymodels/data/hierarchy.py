"""A forecast hierarchy's levels: the series above the segments, summed from their rows.

`hierarchy: [region, store]` orders the segment columns from the top level down. Every level above the
segments becomes a set of segments too: a region's series is the sum of its stores' labels at each time, keyed
by its region and a null store; the total's, by nulls in every column. Columns besides the label are carried as
a level's mean (numbers: a price, a promotion share) or, for text, as the one value all its children share
(else null). A segment nests in one parent: a store found under two regions is an error that names it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from manymodels.errors import DataError

TOTAL = "total"
LEVEL = "level"


def level_names(keys: pd.DataFrame, hierarchy: Sequence[str]) -> np.ndarray:
    """Each key's level: the name of its deepest column that holds a value, `total` where none does."""
    out = np.full(len(keys), TOTAL, dtype=object)
    for column in hierarchy:
        out[keys[column].notna().to_numpy()] = column
    return out


def nesting_problem(frame: pd.DataFrame, hierarchy: Sequence[str]) -> str | None:
    """Why a frame's segments do not nest, one parent each (None when they do): the first segment named."""
    levels = list(hierarchy)
    for depth in range(1, len(levels)):
        pairs = frame[levels[: depth + 1]].drop_duplicates()
        twice = pairs.duplicated(subset=[levels[depth]], keep=False).to_numpy()
        if twice.any():
            child = pairs[levels[depth]].to_numpy()[twice][0]
            parents = pairs[twice & (pairs[levels[depth]] == child).to_numpy()][levels[:depth]]
            shown = " and ".join(_key_text(parents.iloc[i]) for i in range(min(2, len(parents))))
            return (f"segment {levels[depth]}={_plain(child)!r} is under {shown}: each segment of a hierarchy nests "
                    f"in one parent (give it one {', '.join(levels[:depth])}, or name the two apart)")
    return None


def ends_problem(frame: pd.DataFrame, hierarchy: Sequence[str], time: str) -> str | None:
    """Why a hierarchy's segments cannot be forecast together (None when they can): they must end at the same
    time, since the levels' forecasts are made to add up step by step."""
    if not len(frame):
        return None
    last = frame.groupby(list(hierarchy), sort=True, dropna=False, observed=True)[time].max()
    latest = last.max()
    early = last[last < latest]
    if len(early):
        key = early.index[0] if isinstance(early.index[0], tuple) else (early.index[0],)
        named = ", ".join(f"{c}={_plain(v)!r}" for c, v in zip(hierarchy, key, strict=True))
        return (f"segment ({named}) ends at {early.iloc[0]} where the latest ends at {latest} ({len(early):,} "
                "segment(s) end early): a hierarchy's forecasts add up step by step, so its segments end together "
                "(fill their last steps, or leave the ended ones out)")
    return None


def with_levels(frame: pd.DataFrame, hierarchy: Sequence[str], label: str | None, time: str) -> pd.DataFrame:
    """The rows of every level: the segments' own, then each level above theirs summed by time (see the module).

    Raises:
        DataError: a segment column holds a null (a hierarchy keeps null for its levels), or a segment is under two
            parents.
    """
    levels = list(hierarchy)
    nulls = frame[levels].isna().any(axis=1).to_numpy()
    if nulls.any():
        raise DataError(f"{int(nulls.sum()):,} rows have a null in segment column(s) {', '.join(levels)}: a "
                        "hierarchy marks the series above the segments with nulls, so the segments' rows may not "
                        "hold any (fill or drop them first)")
    problem = nesting_problem(frame, levels)
    if problem:
        raise DataError(problem)
    base = frame.copy()
    for column in levels:  # a null must fit the column: integers become nullable ones
        if pd.api.types.is_integer_dtype(base[column]) and not isinstance(base[column].dtype, pd.ArrowDtype):
            base[column] = base[column].astype("Int64")
    has_label = label is not None and label in base.columns
    if has_label:
        base[str(label)] = base[str(label)].astype(np.float64)
    others = [c for c in base.columns if c not in (*levels, label, time)]
    numbers = [c for c in others if pd.api.types.is_numeric_dtype(base[c]) or pd.api.types.is_bool_dtype(base[c])]
    for column in numbers:
        base[column] = base[column].astype(np.float64)
    parts = [base]
    for depth in range(len(levels) - 1, -1, -1):
        grouped = base.groupby([*levels[:depth], time], sort=True, dropna=False, observed=True)
        part = pd.DataFrame(index=grouped.size().index)
        if has_label:
            part[str(label)] = grouped[str(label)].sum(min_count=1)
        for column in others:
            if column in numbers:
                part[column] = grouped[column].mean()
            else:
                one = grouped[column].nunique(dropna=False) == 1
                part[column] = grouped[column].first().where(one)
        part = part.reset_index()
        for column in levels[depth:]:
            part[column] = pd.Series(pd.NA, index=part.index).astype(base[column].dtype)
        parts.append(part[base.columns])
    return pd.concat(parts, ignore_index=True)


def summing(keys: pd.DataFrame, hierarchy: Sequence[str]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """How a hierarchy's series add up: the summing matrix S (every key x the bottom keys, 1 where a key's series
    holds the bottom one's), the positions of the bottom keys among `keys`, and each level's positions (top first).

    Raises:
        DataError: a bottom segment whose parent (or the total) has no key here.
    """
    levels = list(hierarchy)
    names = level_names(keys, levels)
    bottom = np.flatnonzero(names == levels[-1])
    text = keys[levels].astype(object).where(keys[levels].notna(), None)
    rows = [tuple(r) for r in text.itertuples(index=False, name=None)]
    where = {row: i for i, row in enumerate(rows)}
    matrix = np.zeros((len(keys), len(bottom)), dtype=np.float64)
    for j, b in enumerate(bottom):
        row = rows[b]
        for depth in range(len(levels) + 1):
            node = (*row[:depth], *([None] * (len(levels) - depth)))
            at = where.get(node)
            if at is None:
                raise DataError(f"segment {_key_text(pd.Series(dict(zip(levels, row, strict=True))))} has no "
                                f"{'total' if depth == 0 else levels[depth - 1]} series above it to add up to")
            matrix[at, j] = 1.0
    tags = {name: np.flatnonzero(names == name) for name in (TOTAL, *levels)}
    return matrix, bottom, tags


def _key_text(values: pd.Series) -> str:
    return "(" + ", ".join(f"{c}={_plain(v)!r}" for c, v in values.items()) + ")"


def _plain(value: object) -> object:
    """A NumPy scalar as the Python value it holds (shown as 3, not np.int64(3))."""
    item = getattr(value, "item", None)
    return item() if callable(item) and isinstance(value, np.generic) else value
