"""The plain request's path: a `dataframe_split` body of numbers whose rows' segments each have a LightGBM model.

Most requests a server gets are of this kind: a few rows, numeric features, keys of segments the pack serves. For
them, building and typing a pandas frame costs several times LightGBM's own prediction. This path takes the decoded
body's rows as they are: each row's key as a plain Python value and its features as one float matrix, checked
value by value with the same rules `protocol.conform` applies. Anything else — another format, a value of another
type, an optional column sent, a segment without a model of its own, another kind of model, a forecast — is left to
the general path (`protocol.parse`, `Pack.predict_arrays`), which answers it, or names what is wrong, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from manymodels.serve.protocol import DF_SPLIT, INTEGER, NUMBER, TEXT, Columns

_KEY_TYPES = {INTEGER: int, TEXT: str}  # a key's kind -> the one Python type its value may have here


def plain_rows(payload: Any, columns: Columns, features: Sequence[str], segment_by: Sequence[str], max_rows: int
               ) -> tuple[list[Any], np.ndarray] | None:
    """Each row's segment key (its value; a tuple for several key columns) and the rows' features as a float
    matrix (`features` order, NaN for null), when the body is plain; None when the general path must answer.

    Plain: exactly `dataframe_split` (no `params`), at most `max_rows` rows, every required column sent once and
    no optional one, keys of the type the pack's keys have (whole numbers or text), features numbers or null (whole
    numbers for an integer feature), never a boolean.
    """
    if not isinstance(payload, dict) or len(payload) != 1 or not segment_by:
        return None
    split = payload.get(DF_SPLIT)
    if not isinstance(split, dict):
        return None
    names, data = split.get("columns"), split.get("data")
    if not isinstance(names, list) or not isinstance(data, list) or not data or len(data) > max_rows:
        return None
    where: dict[str, int] = {}
    for i, name in enumerate(names):
        if not isinstance(name, str) or name in where:
            return None
        where[name] = i
    if any(c not in where for c in columns.required) or any(c in where for c in columns.optional):
        return None
    key_types = [_KEY_TYPES.get(columns.types.get(c, "")) for c in segment_by]
    if any(t is None for t in key_types):
        return None
    kinds = [columns.types.get(c) for c in features]
    if any(k not in (NUMBER, INTEGER, None) for k in kinds):
        return None
    key_at = [where[c] for c in segment_by]
    feature_at = [where[c] for c in features]
    whole = [i for i, k in zip(feature_at, kinds, strict=True) if k == INTEGER]
    unknown = {i for i, k in zip(feature_at, kinds, strict=True) if k is None}  # no signature: typed as sent
    width = len(names)
    keys: list[Any] = []
    rows: list[list[Any]] = []
    for row in data:
        if type(row) is not list or len(row) != width:
            return None
        key = [row[i] for i in key_at]
        if any(type(v) is not t for v, t in zip(key, key_types, strict=True)):
            return None
        values = [row[i] for i in feature_at]
        for v in values:
            kind = type(v)
            if kind is not float and kind is not int and v is not None:  # a bool, text, a list: the general path
                return None
        for i in whole:
            v = row[i]
            if type(v) is float and not v.is_integer() and v == v:  # a fraction: the general path's 400
                return None
        unknown = {i for i in unknown if row[i] is None}  # a number seen: the column is numbers, as conform guesses
        keys.append(key[0] if len(key) == 1 else tuple(key))
        rows.append(values)
    if unknown:  # a column of nulls only, with no signature, is guessed to be text: the general path
        return None
    return keys, np.array(rows, dtype=np.float64).reshape(len(rows), len(feature_at))
