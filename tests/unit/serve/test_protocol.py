"""MLflow's scoring protocol as the server reads it: every format, typed columns, errors that name the problem."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from manymodels.serve.protocol import (
    CSV,
    JSON,
    PARQUET,
    Columns,
    RequestError,
    parse,
    predictions_body,
    requested_levels,
)

COLUMNS = Columns(("store", "price", "region"), {"store": "integer", "price": "number", "region": "text"})
ROWS = [{"store": 1, "price": 2.5, "region": "north"}, {"store": 7, "price": None, "region": "007"}]


def _json(payload: object) -> bytes:
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_split": {"columns": ["store", "price", "region"], "data": [[1, 2.5, "north"], [7, None, "007"]]}},
        {"dataframe_records": ROWS},
        {"instances": ROWS},
        {"inputs": ROWS},
        {"inputs": {"store": [1, 7], "price": [2.5, None], "region": ["north", "007"]}},
        {"instances": {"store": [1, 7], "price": [2.5, None], "region": ["north", "007"]}, "params": {"x": 1}},
    ],
    ids=["split", "records", "instances", "inputs-records", "inputs-columns", "instances-columns-params"],
)
def test_every_json_format_gives_the_same_typed_frame(payload: object) -> None:
    frame = parse(_json(payload), "application/json; charset=utf-8", COLUMNS, max_rows=10)
    assert frame["store"].tolist() == [1, 7] and frame["store"].dtype == np.int64
    assert frame["price"].dtype == np.float64 and frame["price"].iloc[0] == 2.5 and np.isnan(frame["price"].iloc[1])
    assert frame["region"].tolist() == ["north", "007"]


def test_csv_keeps_a_text_keys_leading_zeros_and_parquet_reads() -> None:
    csv = b"store,price,region\n1,2.5,north\n7,,007\n"
    frame = parse(csv, CSV, COLUMNS, max_rows=10)
    assert frame["region"].tolist() == ["north", "007"] and frame["store"].tolist() == [1, 7]
    parquet = pd.DataFrame(ROWS).to_parquet()
    assert parse(parquet, PARQUET, COLUMNS, max_rows=10)["region"].tolist() == ["north", "007"]


def test_numbers_sent_for_a_text_key_find_the_same_key() -> None:
    frame = parse(_json({"dataframe_records": [{"store": 1, "price": 1, "region": 7.0}]}), JSON, COLUMNS, 10)
    assert frame["region"].tolist() == ["7"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (b"{not json", JSON, 400, ["not valid JSON"]),
        (b"[" * 100_000, JSON, 400, ["nested too deeply"]),
        (b'{"params": ' + b"[" * 100_000, JSON, 400, ["nested too deeply"]),
        (b"\xff\xfe\x00garbage", JSON, 400, ["not UTF-8"]),
        (_json([1, 2]), JSON, 400, ["JSON object", "list"]),
        (_json({}), JSON, 400, ["exactly one of", "empty object"]),
        (_json({"dataframe_split": {}, "inputs": []}), JSON, 400, ["exactly one of"]),
        (_json({"dataframe_records": ROWS, "colour": 1}), JSON, 400, ["unknown key", "'colour'"]),
        (_json({"dataframe_split": {"columns": ["store"], "data": [[1, 2]]}}), JSON, 400,
         ["row 0", "2 values", "1 col"]),
        (_json({"dataframe_records": [ROWS[0], 5]}), JSON, 400, ["row 1", "int"]),
        (_json({"inputs": {"store": [1], "price": [1, 2]}}), JSON, 400, ["different lengths"]),
        (_json({"dataframe_records": [{"store": 1, "price": 2}]}), JSON, 400, ["missing column", "'region'"]),
        (_json({"dataframe_records": [{"store": 1, "price": "cheap", "region": "n"}]}), JSON, 400,
         ["'price'", "numbers", "row 0", '"cheap"']),
        (_json({"dataframe_records": [{"store": 1.5, "price": 1, "region": "n"}]}), JSON, 400,
         ["'store'", "whole numbers", "row 0"]),
        (_json({"dataframe_records": [{"store": 1, "price": 1, "region": {"a": 1}}]}), JSON, 400, ["'region'", "text"]),
        (_json({"dataframe_records": ROWS * 6}), JSON, 413, ["12 rows", "limit is 10", "--max-rows"]),
        (_json({"dataframe_split": {"columns": ["store"], "data": [[1]] * 11}}), JSON, 413, ["11 rows"]),
        (b"a,b\n1,2\n", "text/plain", 415, ["'text/plain'", "not supported"]),
        (b"{}", None, 415, ["(none)"]),
        (b"{}", "application/json; charset=latin-1", 415, ["latin-1", "UTF-8"]),
        (b"", CSV, 400, ["CSV body is empty"]),
        (b"store,price,region\n1,2,n\n1,N/A,n\n1,-,n\n", CSV, 400, ["'price'", "numbers", 'row 2 has "-"']),
        (b"PAR1garbage", PARQUET, 400, ["Parquet"]),
    ],
)
def test_a_bad_request_is_a_4xx_naming_the_problem(
    body: bytes, content_type: str | None, status: int, words: list[str]
) -> None:
    with pytest.raises(RequestError) as caught:
        parse(body, content_type, COLUMNS, max_rows=10)
    assert caught.value.status == status
    for word in words:
        assert word in caught.value.message, caught.value.message
    assert "Traceback" not in caught.value.message and len(caught.value.message) < 400


def test_a_long_bad_value_is_quoted_short() -> None:
    with pytest.raises(RequestError) as caught:
        parse(_json({"dataframe_records": [{"store": 1, "price": "x" * 10_000, "region": "n"}]}), JSON, COLUMNS, 10)
    assert len(caught.value.message) < 200


def test_without_a_signature_numbers_stay_numbers_and_text_stays_text() -> None:
    columns = Columns(("store", "price"))
    frame = parse(_json({"dataframe_records": [{"store": "a", "price": 1}, {"store": "b", "price": None}]}), JSON,
                  columns, 10)
    assert frame["price"].dtype == np.float64 and frame["store"].tolist() == ["a", "b"]


def test_answers_are_mlflows_records_with_nulls() -> None:
    body = json.loads(predictions_body(np.array([1.5, np.nan]), np.array(["segment", None], dtype=object)))
    assert body == {"predictions": [{"prediction": 1.5, "model_source": "segment"},
                                    {"prediction": None, "model_source": None}]}


def test_a_forecasts_levels_come_from_params_and_anything_else_there_is_refused() -> None:
    rows = {"dataframe_records": ROWS}
    assert requested_levels(_json({**rows, "params": {"levels": [95, 80, 95]}}), JSON) == (95.0, 80.0)
    assert requested_levels(_json({**rows, "params": {"levels": 90}}), JSON) == (90.0,)
    assert requested_levels(_json(rows), JSON) == () and requested_levels(b"store\n1\n", CSV) == ()
    assert requested_levels(_json({**rows, "params": None}), JSON) == ()
    for params, said in [({"levels": [0]}, "between 0 and 100"), ({"levels": ["80"]}, "got '80'"),
                         ({"levels": [True]}, "got True"), ({"x": 1}, "unknown parameter(s) 'x'"),
                         ("levels", "must be an object")]:
        with pytest.raises(RequestError) as caught:
            requested_levels(_json({**rows, "params": params}), JSON)
        assert caught.value.status == 400 and said in caught.value.message


def test_bounds_are_added_to_each_answer_and_missing_ones_are_null() -> None:
    body = predictions_body(np.array([1.0, np.nan]), np.array(["segment", None], dtype=object),
                            {"lo-80": np.array([0.5, np.nan]), "hi-80": np.array([1.5, np.nan])})
    assert json.loads(body)["predictions"] == [
        {"prediction": 1.0, "model_source": "segment", "lo-80": 0.5, "hi-80": 1.5},
        {"prediction": None, "model_source": None, "lo-80": None, "hi-80": None},
    ]
