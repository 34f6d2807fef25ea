"""Turn pydantic's validation errors into one line each: `file:line: key must be …; got …`."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from manymodels.bundle.source import KeyPath, SourceMap, dotted

_PLAIN = {
    "missing": "is required",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
}


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` when a close match exists, else an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


SHOWN = 200  # characters of a value quoted in a message


def show_value(value: Any) -> str:
    """A value as a user wrote it: numbers plain, strings quoted; cut to SHOWN characters."""
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    else:
        text = str(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}... ({len(text):,} characters)"


def describe(exc: ValidationError, model: type[BaseModel], smap: SourceMap, base: KeyPath = ()) -> list[str]:
    """One message per pydantic error, located in the bundle's files."""
    return [_one(err, model, smap, base) for err in exc.errors()]


def _one(err: ErrorDetails, model: type[BaseModel], smap: SourceMap, base: KeyPath) -> str:
    # A tagged union's arm is named in pydantic's location ("(mapping)"): not a key of the bundle.
    inner = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("(") and p.endswith(")")))
    err = {**err, "loc": inner}
    loc: KeyPath = (*base, *err["loc"])
    key = dotted(loc) or "the bundle"
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(model, tuple(err["loc"])[:-1])
        hint = did_you_mean(str(loc[-1]), known)
        if not hint and known:
            hint = f" (known keys: {', '.join(sorted(known))})"
        return f"{smap.prefix(loc)}{key} is not a known key{hint}"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        msg = f"must be one of {expected}"
    elif kind in ("greater_than_equal", "greater_than", "less_than", "less_than_equal"):
        ctx = err.get("ctx", {})
        sign = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<", "less_than_equal": "<="}[kind]
        msg = f"must be {sign} {next(iter(ctx.values()), '?')}"
    elif kind == "too_short":
        msg = f"must have at least {err.get('ctx', {}).get('min_length', 1)} item(s)"
    elif kind == "value_error":
        msg = err["msg"].removeprefix("Value error, ")
    else:
        msg = _PLAIN.get(kind, err["msg"])
    got = err.get("input")
    suffix = "" if kind == "missing" or isinstance(got, dict) else f"; got {show_value(got)}"
    return f"{smap.prefix(loc)}{key} {msg}{suffix}"


def _known_keys(model: type[BaseModel], loc: KeyPath) -> list[str]:
    """The field names of the model found by walking `loc` down from `model`."""
    current: Any = model
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    for arm in _arms(current):  # a section that is a model, or a union with one (features: a list or a mapping)
        if isinstance(arm, type) and issubclass(arm, BaseModel):
            return list(arm.model_fields)
    return []


def _step(annotation: Any, part: str | int) -> Any:
    for candidate in _arms(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            if isinstance(part, str) and part in candidate.model_fields:
                return candidate.model_fields[part].annotation
        origin = typing.get_origin(candidate)
        if origin is dict and isinstance(part, str):
            return typing.get_args(candidate)[1]
        if origin is list and isinstance(part, int):
            return typing.get_args(candidate)[0]
    return None


def _arms(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _arms(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [arm for a in typing.get_args(annotation) if a is not type(None) for arm in _arms(a)]
    return [annotation]
