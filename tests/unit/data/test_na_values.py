"""Values that mark a missing value: declared per dataset (`na_values`), read as missing in every format."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa

from manymodels.data import read_frame, read_head, read_sample, read_schema

CSV = "a,b,c\n1,2.5,x\nN/A,-,-\n3,?,N/A\n"


def test_a_csv_number_column_with_declared_markers_stays_numbers(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(CSV)
    plain = read_frame(path, "csv")
    assert plain["a"].isna().tolist() == [False, True, False]  # "N/A": a CSV reader's own marker
    assert plain["b"].tolist() == ["2.5", "-", "?"]  # "-" and "?" made it text
    declared = read_frame(path, "csv", na_values=["-", "?"])
    assert declared["b"].dtype == "float64" and declared["b"].isna().tolist() == [False, True, True]
    # A text column: the declared markers are missing; the reader's own ("N/A") are text, as without na_values.
    assert declared["c"][0] == "x" and pd.isna(declared["c"][1]) and declared["c"][2] == "N/A"
    schema = read_schema(path, "csv", ["-", "?"])
    assert pa.types.is_floating(schema.field("b").type) and pa.types.is_string(schema.field("c").type)
    head = read_head(path, "csv", ["b", "c"], rows=2, na_values=["-"])
    assert len(head) == 2 and head["b"].isna().tolist() == [False, True]


def test_a_marker_far_down_a_csv_is_in_its_schema(tmp_path: Path) -> None:
    """A CSV's types come from every row when read, so its schema does too: a value first seen after the first
    block (1 MB) makes the column text, and validate must say what train will read."""
    path = tmp_path / "long.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i}\n" for i in range(200_000)) + "7,-\n")
    assert pa.types.is_string(read_schema(path, "csv").field("b").type)
    assert read_frame(path, "csv", ["b"])["b"].dtype != "float64"
    assert pa.types.is_integer(read_schema(path, "csv", ["-"]).field("b").type)
    assert len(read_sample(path, "csv", ["b"], rows=10)) == 200_001  # a CSV is scanned whole


def test_parquets_text_columns_get_missing_values_and_keep_their_type(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pd.DataFrame({"t": ["1", "-", "x"], "n": [1.0, 2.0, 3.0]}).to_parquet(path, index=False)
    got = read_frame(path, "parquet", na_values=["-"])
    assert got["t"][0] == "1" and pd.isna(got["t"][1]) and got["t"][2] == "x"
    assert got["n"].tolist() == [1.0, 2.0, 3.0]
    assert read_sample(path, "parquet", ["t"], rows=2, na_values=["-"])["t"].isna().tolist() == [False, True]
