"""MLflow's scoring protocol, as `mlflow models serve` speaks it: request bodies in, predictions out.

Accepted on `/invocations`: JSON with exactly one of `dataframe_split`, `dataframe_records`,
`instances` or `inputs`, and an optional `params` (a forecast's one parameter: `{"levels": [80, 95]}`,
its prediction intervals), CSV (`text/csv`) and Parquet (`application/vnd.apache.parquet`). The answer
is `{"predictions": [{"prediction": .., "model_source": ..}, ..]}` (with levels, `lo-80`, `hi-80`, ...
too), one object per row in request order, as MLflow writes a frame.

Every problem with a request is a `RequestError`: an HTTP status and one sentence naming what is
wrong (a column, a row, a limit), answered as JSON; never a stack trace.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

JSON, CSV, PARQUET = "application/json", "text/csv", "application/vnd.apache.parquet"
DF_SPLIT, DF_RECORDS, INSTANCES, INPUTS = "dataframe_split", "dataframe_records", "instances", "inputs"
FORMATS = (DF_SPLIT, DF_RECORDS, INSTANCES, INPUTS)
PARAMS = "params"
LEVELS = "levels"  # the one parameter: a forecast's prediction intervals, as percents
NUMBER, INTEGER, TEXT, BOOLEAN, DATETIME = "number", "integer", "text", "boolean", "datetime"
# MLflow signature types -> how a column is conformed.
SIGNATURE_TYPES = {
    "double": NUMBER,
    "float": NUMBER,
    "long": INTEGER,
    "integer": INTEGER,
    "string": TEXT,
    "boolean": BOOLEAN,
    "datetime": DATETIME,
}
SHOWN = 60  # characters of a client's value quoted in an error


class RequestError(Exception):
    """A request the server cannot answer: its HTTP status and what is wrong, for the client."""

    def __init__(self, status: int, message: str, code: str = "BAD_REQUEST") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def body(self) -> dict[str, str]:
        """The JSON error, shaped like MLflow's (`error_code`, `message`), without its stack trace."""
        return {"error_code": self.code, "message": self.message}


@dataclass(frozen=True)
class Columns:
    """The columns a request must carry, and how each is typed (from the model's signature, when it has one)."""

    required: tuple[str, ...]
    types: dict[str, str] = field(default_factory=dict)
    optional: tuple[str, ...] = ()  # read by some segments' models only: typed when sent


def parse(body: bytes, content_type: str | None, columns: Columns, max_rows: int, payload: Any = None
          ) -> pd.DataFrame:
    """A request body as a frame with the model's columns typed as in training (`payload`: a JSON body already
    decoded by `json_payload`, not decoded again).

    Raises:
        RequestError: 415 for a content type or charset the server does not read, 413 for too many
            rows, 400 for anything malformed (the message names the key, column or row).
    """
    mime, charset = _content_type(content_type)
    if charset not in ("utf-8", "utf8"):
        raise RequestError(415, f"charset {charset!r} is not supported: send UTF-8", "UNSUPPORTED_MEDIA_TYPE")
    if mime == JSON:
        frame = _from_payload(_decode(body) if payload is None else payload, max_rows)
    elif mime == CSV:
        frame = _from_csv(body, columns)
    elif mime == PARQUET:
        try:
            frame = pd.read_parquet(io.BytesIO(body))
        except (OSError, ValueError) as exc:
            raise RequestError(400, f"body is not a readable Parquet file: {_short(exc)}") from exc
    else:
        raise RequestError(
            415,
            f"content type {mime or '(none)'!r} is not supported: send {JSON} ({', '.join(FORMATS)}), {CSV} "
            f"or {PARQUET}",
            "UNSUPPORTED_MEDIA_TYPE",
        )
    if len(frame) > max_rows:
        raise _too_many(len(frame), max_rows)
    return conform(frame, columns)


def conform(frame: pd.DataFrame, columns: Columns) -> pd.DataFrame:
    """Check the model's columns are there and give each its training type (other columns are left as sent).

    Raises:
        RequestError: a missing column, or a value that is not of its column's type (named with its row).
    """
    if not all(isinstance(c, str) for c in frame.columns):
        frame.columns = [str(c) for c in frame.columns]
    missing = [c for c in columns.required if c not in frame.columns]
    if missing:
        raise RequestError(
            400,
            f"missing column(s) {', '.join(map(repr, missing))}; this model reads {', '.join(columns.required)}",
        )
    if frame.columns.duplicated().any():
        twice = sorted(set(frame.columns[frame.columns.duplicated()]))
        raise RequestError(400, f"column(s) {', '.join(map(repr, twice))} sent twice")
    for name in (*columns.required, *(c for c in columns.optional if c in frame.columns)):
        values = frame[name]
        kind = columns.types.get(name) or _guess(values)
        typed = _typed(values, kind, name)
        if typed is not values:
            frame[name] = typed
    return frame


def requested_levels(body: bytes, content_type: str | None) -> tuple[float, ...]:
    """The prediction intervals a JSON body's `params` asks for (`{"levels": [80, 95]}`); none for other bodies.

    Raises:
        RequestError: 400 for `params` that is not an object, a parameter other than `levels`, or a level that
            is not a percent between 0 and 100.
    """
    if _content_type(content_type)[0] != JSON or b'"params"' not in body:  # the common request: no second parse
        return ()
    try:
        params = json.loads(body.decode("utf-8")).get(PARAMS)
    except (ValueError, AttributeError, RecursionError):
        return ()  # `parse` names what is wrong with the body
    if params is None:
        return ()
    if not isinstance(params, dict):
        raise RequestError(400, f"{PARAMS!r} must be an object, e.g. {{\"levels\": [80, 95]}}")
    unknown = sorted(set(params) - {LEVELS})
    if unknown:
        raise RequestError(400, f"unknown parameter(s) {', '.join(map(repr, unknown))}: a model here takes "
                                f"{LEVELS!r} only (a forecast's prediction intervals, e.g. [80, 95])")
    levels = params.get(LEVELS) or []
    if not isinstance(levels, list):
        levels = [levels]
    from manymodels.segment.intervals import checked_levels

    try:
        return checked_levels(levels, "each of params.levels")
    except ValueError as exc:
        raise RequestError(400, _short(exc)) from None


def predictions_body(prediction: np.ndarray, source: np.ndarray, bands: dict[str, np.ndarray] | None = None) -> bytes:
    """`{"predictions": [{"prediction": p, "model_source": s}, ..]}`, with each of `bands`' columns (`lo-80`, ...)
    when given; a missing prediction, bound or source is null."""
    rows = [
        {"prediction": None if math.isnan(p) else p, "model_source": s}
        for p, s in zip(prediction.tolist(), source.tolist(), strict=True)
    ]
    for name, values in (bands or {}).items():
        for row, value in zip(rows, values.tolist(), strict=True):
            row[name] = None if math.isnan(value) else value
    return json.dumps({"predictions": rows}, allow_nan=False).encode()


# Parsing ---------------------------------------------------------------------------------------


def _content_type(header: str | None) -> tuple[str, str]:
    if not header:
        return "", "utf-8"
    mime, *parameters = (part.strip() for part in header.split(";"))
    charset = "utf-8"
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return mime.lower(), charset


def json_payload(body: bytes, content_type: str | None) -> Any:
    """A JSON body decoded (for `parse` and the plain path, decoded once); None for a body of another type or
    charset (`parse` answers it).

    Raises:
        RequestError: 400 for a body that is not UTF-8 or not JSON.
    """
    mime, charset = _content_type(content_type)
    if mime != JSON or charset not in ("utf-8", "utf8"):
        return None
    return _decode(body)


def _decode(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"body is not UTF-8: {_short(exc)}") from exc
    except ValueError as exc:
        raise RequestError(400, f"body is not valid JSON: {_short(exc)}") from exc
    except RecursionError as exc:  # json's parser recurses per level: 100,000 `[` were a 500 and a traceback
        raise RequestError(400, "body is not valid JSON for this server: nested too deeply") from exc


def _from_payload(payload: Any, max_rows: int) -> pd.DataFrame:
    if not isinstance(payload, dict):
        raise RequestError(400, f"the body must be a JSON object with one of {', '.join(FORMATS)}; got a "
                                f"{type(payload).__name__}")
    found = [key for key in FORMATS if key in payload]
    unknown = sorted(set(payload) - set(FORMATS) - {PARAMS})
    if len(found) != 1:
        got = f"got {', '.join(map(repr, sorted(payload)))}" if payload else "got an empty object"
        raise RequestError(400, f"the body must hold exactly one of {', '.join(FORMATS)}; {got}")
    if unknown:
        raise RequestError(400, f"unknown key(s) {', '.join(map(repr, unknown))} beside {found[0]!r}")
    key = found[0]
    value = payload[key]
    if key == DF_SPLIT:
        return _split(value, max_rows)
    if isinstance(value, list):  # records: dataframe_records, or instances/inputs as a list of objects
        return _records(value, key, max_rows)
    if isinstance(value, dict) and key in (INSTANCES, INPUTS):  # columns: {"col": [values], ..}
        return _columnar(value, key, max_rows)
    raise RequestError(400, f"{key!r} must be a list of objects (one per row)"
                            + (" or an object of columns" if key in (INSTANCES, INPUTS) else ""))


def _split(value: Any, max_rows: int) -> pd.DataFrame:
    if not isinstance(value, dict) or not isinstance(value.get("columns"), list) or "data" not in value:
        raise RequestError(400, f"{DF_SPLIT!r} must be an object with 'columns' (a list) and 'data' (a list of rows)")
    names, data = value["columns"], value["data"]
    if not isinstance(data, list):
        raise RequestError(400, f"{DF_SPLIT}.data must be a list of rows")
    if len(data) > max_rows:
        raise _too_many(len(data), max_rows)
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(names):
            size = f"{len(row)} values" if isinstance(row, list) else f"a {type(row).__name__}"
            raise RequestError(400, f"{DF_SPLIT}.data row {i} has {size} for {len(names)} columns")
    if not all(isinstance(name, str) for name in names):
        raise RequestError(400, f"{DF_SPLIT}.columns must be strings")
    return pd.DataFrame(data, columns=names) if data else pd.DataFrame(columns=names)


def _records(rows: list[Any], key: str, max_rows: int) -> pd.DataFrame:
    if len(rows) > max_rows:
        raise _too_many(len(rows), max_rows)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RequestError(400, f"{key} row {i} is a {type(row).__name__}, not an object of column values")
    return pd.DataFrame.from_records(rows) if rows else pd.DataFrame()


def _columnar(columns: dict[str, Any], key: str, max_rows: int) -> pd.DataFrame:
    lengths = {name: len(v) if isinstance(v, list) else None for name, v in columns.items()}
    if any(n is None for n in lengths.values()):
        scalar = next(name for name, n in lengths.items() if n is None)
        raise RequestError(400, f"{key}.{scalar} must be a list of values (one per row)")
    if len(set(lengths.values())) > 1:
        raise RequestError(400, f"{key}: columns have different lengths ({_shown(lengths)})")
    rows = next(iter(lengths.values()), 0) or 0
    if rows > max_rows:
        raise _too_many(rows, max_rows)
    return pd.DataFrame(columns)


def _from_csv(body: bytes, columns: Columns) -> pd.DataFrame:
    # Text columns are read as text: a key like "007" keeps its zeros.
    text = {name: str for name, kind in columns.types.items() if kind == TEXT}
    try:
        frame = pd.read_csv(io.BytesIO(body), dtype=text, encoding="utf-8")
    except pd.errors.EmptyDataError as exc:
        raise RequestError(400, "the CSV body is empty: send a header line and rows") from exc
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise RequestError(400, f"body is not readable CSV: {_short(exc)}") from exc
    # A number column with one value that is not a number ("-") is read as text whole: its numbers are numbers
    # still, and the error names the value that is not one (it blamed the first row, a valid "2").
    for name, kind in columns.types.items():
        if kind in (NUMBER, INTEGER) and name in frame.columns and pd.api.types.is_string_dtype(frame[name]):
            numbers = pd.to_numeric(frame[name], errors="coerce")
            bad = (numbers.isna() & frame[name].notna()).to_numpy()
            if bad.any():
                raise _bad_value(frame[name], bad, name, "numbers")
            frame[name] = numbers
    return frame


def _too_many(rows: int, limit: int) -> RequestError:
    return RequestError(413, f"{rows} rows in one request; the limit is {limit} (serve --max-rows)",
                        "PAYLOAD_TOO_LARGE")


# Types -----------------------------------------------------------------------------------------


def _guess(values: pd.Series) -> str:
    """A column's kind when the model has no signature: numbers stay numbers, anything else is text."""
    if pd.api.types.is_bool_dtype(values):
        return BOOLEAN
    if pd.api.types.is_numeric_dtype(values):
        return NUMBER
    present = values.dropna()
    if len(present) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return NUMBER
    return TEXT


def _typed(values: pd.Series, kind: str, name: str) -> pd.Series:
    """The column as its kind, or the column itself when it already is (most requests: nothing to copy)."""
    dtype = values.dtype
    if kind in (NUMBER, INTEGER):
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            if kind == INTEGER and pd.api.types.is_integer_dtype(dtype):
                return values
            out = values.astype(np.float64) if dtype != np.float64 else values
        else:
            raw = values.to_numpy(dtype=object)
            numbers = np.fromiter((v if _is_number(v) else np.nan for v in raw), dtype=np.float64, count=len(raw))
            bad = np.fromiter((not _missing(v) and not _is_number(v) for v in raw), dtype=bool, count=len(raw))
            if bad.any():
                raise _bad_value(values, bad, name, "numbers")
            out = pd.Series(numbers, index=values.index, name=values.name)
        if kind == INTEGER:
            whole = out.to_numpy()
            fraction = ~np.isnan(whole) & (whole != np.round(whole))
            if fraction.any():
                raise _bad_value(values, fraction, name, "whole numbers")
            return out.astype(np.int64) if not np.isnan(whole).any() else out
        return out
    if kind == TEXT:
        raw = values.to_numpy(dtype=object)
        if all(isinstance(v, str) for v in raw):
            return values
        bad = np.fromiter((isinstance(v, dict | list) for v in raw), dtype=bool, count=len(raw))
        if bad.any():
            raise _bad_value(values, bad, name, "text")
        text = [None if _missing(v) else v if isinstance(v, str) else _as_text(v) for v in raw]
        return pd.Series(np.array(text, dtype=object), index=values.index, name=values.name, dtype=object)
    if kind == BOOLEAN:
        if pd.api.types.is_bool_dtype(dtype):
            return values
        bad = values.notna().to_numpy() & ~np.fromiter((isinstance(v, bool | np.bool_) for v in values), dtype=bool,
                                                        count=len(values))
        if bad.any():
            raise _bad_value(values, bad, name, "true or false")
        return values
    if kind == DATETIME:
        if pd.api.types.is_datetime64_any_dtype(dtype):
            return values
        parsed = pd.to_datetime(values, errors="coerce")
        bad = values.notna().to_numpy() & parsed.isna().to_numpy()
        if bad.any():
            raise _bad_value(values, bad, name, "dates or times")
        return parsed
    return values


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_text(value: Any) -> str:
    # 7.0 sent for the text key "7" is the same key: a whole float is written without its ".0".
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _bad_value(values: pd.Series, bad: np.ndarray, name: str, expected: str) -> RequestError:
    row = int(np.flatnonzero(bad)[0])
    count = int(bad.sum())
    more = f" (and {count - 1} more row(s))" if count > 1 else ""
    return RequestError(400, f"column {name!r} must hold {expected}; row {row} has {_shown(values.iloc[row])}{more}")


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else json.dumps(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 2 * SHOWN else text[: 2 * SHOWN - 3] + "..."
