"""A reader's error names the file and where, and never quotes the file's content (it may be a secret)."""

from __future__ import annotations

from pathlib import Path

import pytest

from manymodels.data import read_frame, read_head, read_schema
from manymodels.data.datasets import without_content
from manymodels.errors import DataError


def test_pyarrows_quoted_content_is_left_out_of_a_message() -> None:
    assert without_content("CSV parse error: Expected 2 columns, got 3: DB_PASSWORD=pw,x,y") == (
        "CSV parse error: Expected 2 columns, got 3 (the row's text is not shown)")
    assert without_content("In CSV column #1: CSV conversion error to double: invalid value 'pw'\nmore") == (
        "In CSV column #1: CSV conversion error to double: invalid value (not shown)")
    assert without_content("Parquet magic bytes not found in footer.") == "Parquet magic bytes not found in footer."


@pytest.mark.parametrize("read", [
    lambda p: read_schema(p, "csv"),
    lambda p: read_frame(p, "csv"),
    lambda p: read_frame(p, "csv", ["a"]),
    lambda p: read_head(p, "csv", ["a"]),
])
def test_a_row_with_too_many_fields_is_named_by_its_line(tmp_path: Path, read: object) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n3,4\nkey=secret,5,6\n")
    with pytest.raises(DataError) as caught:
        read(path)  # type: ignore[operator]
    assert str(caught.value).startswith(f"{path}: cannot read csv"), caught.value
    assert "line 4 has 3 fields where the first line has 2" in str(caught.value)
    assert "secret" not in str(caught.value)
