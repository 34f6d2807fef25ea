"""The plain request's path answers exactly what the general path answers, and leaves every other request to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from manymodels.registry import manifest as mf
from manymodels.registry.pack import Pack
from manymodels.registry.pack_info import PackInfo, write_pack_files
from manymodels.segment import SegmentSpec, fit_chunk
from manymodels.serve.plain import plain_rows
from manymodels.serve.protocol import Columns, parse

SPEC = SegmentSpec(segment_by=("store",), label="label", features=("f0", "f1", "f2"),
                   params={"num_boost_round": 20, "min_data_in_leaf": 5})
TYPED = Columns(("store", "f0", "f1", "f2"), {"store": "integer", "f0": "number", "f1": "number", "f2": "integer"},
                ("day",))
UNTYPED = Columns(("store", "f0", "f1", "f2"), {"store": "integer"})  # no signature: features typed as sent
NAMES = ["store", "f0", "f1", "f2"]


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Pack:
    from helpers import segment_frame

    root = tmp_path_factory.mktemp("plain")
    frame = segment_frame(segments=6, rows=60, seed=5)
    frame["store"] = frame.pop("segment").str[-3:].astype(np.int64) * 10  # whole-number keys 0, 10, ..., 50
    frame["f2"] = np.floor(frame["f2"] * 5)
    frame = frame.sort_values("store", kind="stable").reset_index(drop=True)
    keys = frame[["store"]].drop_duplicates().reset_index(drop=True)
    starts = np.flatnonzero(np.r_[True, frame["store"].to_numpy()[1:] != frame["store"].to_numpy()[:-1]])
    bounds = [(i, int(lo), int(hi)) for i, (lo, hi) in enumerate(zip(starts, np.r_[starts[1:], len(frame)],
                                                                        strict=True))]
    (root / "shards").mkdir()
    results = fit_chunk(frame, bounds, SPEC, 0, str(root / "shards"))
    info = PackInfo(model="m", segment_by=["store"], features=list(SPEC.features), label="label",
                    task="regression", metric="rmse")
    write_pack_files(root, info, mf.build_manifest(keys, results, SPEC))
    return Pack(root, whole_shards=False)


def general(pack: Pack, payload: Any, columns: Columns) -> np.ndarray:
    frame = parse(json.dumps(payload).encode(), "application/json", columns, max_rows=1000)
    return pack.predict_arrays(frame)[0]


def split(rows: list[list[Any]], names: list[str] = NAMES) -> dict[str, Any]:
    return {"dataframe_split": {"columns": names, "data": rows}}


@pytest.mark.parametrize("columns", [TYPED, UNTYPED], ids=["signature", "no-signature"])
@pytest.mark.parametrize("rows", [
    [[10, 0.5, 0.25, 3]],  # one row
    [[50, 0.1, None, 2.0], [0, 1, 0, None], [10, 0.9, 0.9, 4], [50, 0.2, 0.3, 1]],  # mixed segments, nulls, ints
])
def test_a_plain_request_gets_the_general_paths_predictions(pack: Pack, rows: list[list[Any]],
                                                           columns: Columns) -> None:
    payload = split(rows)
    plain = plain_rows(payload, columns, pack.info.features, pack.segment_by, max_rows=1000)
    assert plain is not None
    values = pack.predict_plain(*plain)
    assert values is not None
    np.testing.assert_array_equal(values, general(pack, payload, columns))


def test_extra_columns_in_any_order_are_plain_too(pack: Pack) -> None:
    payload = split([[0.3, "x", 20, 0.4, 1]], ["f1", "note", "store", "f0", "f2"])
    plain = plain_rows(payload, TYPED, pack.info.features, pack.segment_by, max_rows=1000)
    assert plain is not None and plain[0] == [20]
    np.testing.assert_array_equal(pack.predict_plain(*plain), general(pack, payload, TYPED))


@pytest.mark.parametrize("payload", [
    {"dataframe_records": [{"store": 10, "f0": 0.5, "f1": 0.2, "f2": 1}]},  # another format
    {**split([[10, 0.5, 0.2, 1]]), "params": {"levels": [80]}},  # params
    split([[10, 0.5, 0.2]], ["store", "f0", "f1"]),  # a missing column: the general path's 400
    split([[10, 0.5, 0.2, 1, 0.1]], ["store", "f0", "f1", "f2", "f0"]),  # a column twice
    split([[10, 0.5, 0.2, 1, "2026-01-05"]], [*NAMES, "day"]),  # an optional column: typed by the general path
    split([[10, "0.5", 0.2, 1]]),  # a number as text
    split([[10, True, 0.2, 1]]),  # a boolean
    split([["10", 0.5, 0.2, 1]]),  # a whole-number key as text
    split([[10.0, 0.5, 0.2, 1]]),  # ... or as a float
    split([[10, 0.5, 0.2, 1.5]]),  # a fraction in an integer column: the general path's 400
    split([[10, 0.5, 0.2, 1], [10, 0.5]]),  # a short row
    split([]),  # no rows
    split([[10, 0.5, 0.2, 1]] * 3),  # more rows than allowed (max_rows=2 below)
])
def test_anything_else_is_left_to_the_general_path(pack: Pack, payload: dict[str, Any]) -> None:
    assert plain_rows(payload, TYPED, pack.info.features, pack.segment_by, max_rows=2) is None


def test_a_column_of_nulls_without_a_signature_is_left_to_the_general_path(pack: Pack) -> None:
    payload = split([[10, 0.5, None, 1], [20, 0.1, None, 2]])
    assert plain_rows(payload, UNTYPED, pack.info.features, pack.segment_by, max_rows=10) is None
    assert plain_rows(payload, TYPED, pack.info.features, pack.segment_by, max_rows=10) is not None


def test_a_segment_without_a_model_of_its_own_is_left_to_the_general_path(pack: Pack) -> None:
    plain = plain_rows(split([[10, 0.5, 0.2, 1], [99, 0.5, 0.2, 1]]), TYPED, pack.info.features, pack.segment_by,
                       max_rows=10)
    assert plain is not None and pack.predict_plain(*plain) is None
    frame = pd.DataFrame([[99, 0.5, 0.2, 1]], columns=NAMES)
    assert np.isnan(pack.predict_arrays(frame)[0][0])  # which answers it: no model, no prediction


def test_a_key_of_two_columns_is_routed_as_a_tuple(tmp_path: Path) -> None:
    from helpers import segment_frame

    spec = SegmentSpec(segment_by=("store", "region"), label="label", features=("f0", "f1", "f2"),
                       params={"num_boost_round": 10, "min_data_in_leaf": 5})
    frame = segment_frame(segments=4, rows=40, seed=6)
    codes = frame.pop("segment").str[-1].astype(int)
    frame["store"], frame["region"] = (codes // 2).astype(np.int64), np.where(codes % 2, "north", "south")
    frame = frame.sort_values(["store", "region"], kind="stable").reset_index(drop=True)
    keys = frame[["store", "region"]].drop_duplicates().reset_index(drop=True)
    cut = np.flatnonzero(np.r_[True, (frame[["store", "region"]].shift() != frame[["store", "region"]]).any(axis=1)
                               .to_numpy()[1:]])
    bounds = [(i, int(lo), int(hi)) for i, (lo, hi) in enumerate(zip(cut, np.r_[cut[1:], len(frame)], strict=True))]
    (tmp_path / "shards").mkdir()
    results = fit_chunk(frame, bounds, spec, 0, str(tmp_path / "shards"))
    info = PackInfo(model="m", segment_by=["store", "region"], features=list(spec.features), label="label",
                    task="regression", metric="rmse")
    write_pack_files(tmp_path, info, mf.build_manifest(keys, results, spec))
    pack = Pack(tmp_path, whole_shards=False)
    columns = Columns(("store", "region", "f0", "f1", "f2"), {"store": "integer", "region": "text"})
    payload = split([[1, "north", 0.2, 0.3, 0.4], [0, "south", 0.5, 0.5, 0.5]], ["store", "region", "f0", "f1", "f2"])
    plain = plain_rows(payload, columns, pack.info.features, pack.segment_by, max_rows=10)
    assert plain is not None and plain[0] == [(1, "north"), (0, "south")]
    values = pack.predict_plain(*plain)
    assert values is not None
    np.testing.assert_array_equal(values, general(pack, payload, columns))
