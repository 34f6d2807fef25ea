"""Read datasets whole or by column, read only their schema, write Parquet atomically."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from manymodels.errors import DataError, StorageError

FORMATS = ("parquet", "csv", "delta")
# What a CSV reader takes for a missing number with no `na_values` declared (pyarrow's defaults: "", "NA", "N/A",
# "NaN", "null", ...). A column that holds only numbers and these is a number column with missing values.
CSV_MISSING = tuple(pacsv.ConvertOptions().null_values)


def read_schema(path: Path, fmt: str, na_values: Sequence[str] = ()) -> pa.Schema:
    """The columns and types of a dataset: from its metadata (Parquet, Delta); a CSV's as reading it whole gives them
    (its types are inferred over every row, `na_values` missing: a value first seen far down the file makes a column
    text, so its first rows cannot tell).

    Raises:
        DataError: the file is missing or unreadable.
    """
    if fmt == "delta":
        return _delta(path).schema
    _must_exist(path)
    bad = _FirstBadRow()
    try:
        if fmt == "parquet":
            return pq.read_schema(path)
        options = _csv_options(None, na_values)
        return pacsv.read_csv(path, convert_options=options, parse_options=bad.options()).schema
    except (pa.ArrowException, OSError) as exc:
        raise _read_error(path, f"{fmt} schema", exc, bad) from exc


def row_count(path: Path, fmt: str) -> int | None:
    """A dataset's row count from its metadata (Parquet, Delta), or None when only reading it would tell."""
    if fmt == "delta":
        try:
            return int(_delta(path).count_rows())
        except (DataError, pa.ArrowException, OSError):
            return None
    if fmt != "parquet" or not path.is_file():
        return None
    try:
        return int(pq.read_metadata(path).num_rows)
    except (pa.ArrowException, OSError):
        return None


def read_frame(
    path: Path, fmt: str, columns: Sequence[str] | None = None, na_values: Sequence[str] = ()
) -> pd.DataFrame:
    """A dataset as a pandas DataFrame, reading only `columns` when given, the values `na_values` lists missing.

    Raises:
        DataError: the file is missing, unreadable, or lacks a requested column.
    """
    wanted = list(dict.fromkeys(columns)) if columns is not None else None
    if fmt == "delta":
        try:
            return _to_pandas(as_missing(_delta(path).to_table(columns=wanted), na_values))
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: cannot read delta table: {without_content(str(exc))}") from exc
    _must_exist(path)
    bad = _FirstBadRow()
    try:
        if fmt == "parquet":
            table = pq.read_table(path, columns=wanted)
        else:
            table = pacsv.read_csv(path, convert_options=_csv_options(wanted, na_values), parse_options=bad.options())
    except (pa.ArrowException, OSError) as exc:
        raise _read_error(path, fmt, exc, bad) from exc
    return _to_pandas(as_missing(table, na_values))


def _csv_options(wanted: list[str] | None, na_values: Sequence[str]) -> pacsv.ConvertOptions | None:
    """How a CSV's values convert: `na_values` are missing as well as pyarrow's own markers."""
    if not wanted and not na_values:
        return None
    extra = [v for v in na_values if v not in CSV_MISSING]
    return pacsv.ConvertOptions(include_columns=wanted or [], null_values=[*CSV_MISSING, *extra])


def as_missing(table: pa.Table, na_values: Sequence[str]) -> pa.Table:
    """A table whose text columns hold a missing value where they held one of `na_values` (a CSV reader makes them
    missing in number columns only; a Parquet or Delta table's text columns keep the type their writer gave)."""
    if not na_values:
        return table
    markers = pa.array(list(na_values), pa.string())
    for i, field in enumerate(table.schema):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            column = table.column(i)
            found = pc.is_in(column, value_set=markers.cast(field.type))
            if pc.any(found).as_py():
                table = table.set_column(i, field, pc.if_else(found, pa.scalar(None, field.type), column))
    return table


class _FirstBadRow:
    """A CSV reader's handler of rows with the wrong number of fields: it notes the first and stops the read.

    pyarrow's own error quotes the row's text, and a dataset path that points at the wrong file (an environment
    file, a password file) would put that text in a CI log: the error built from what this notes names the line and
    the field counts only.
    """

    def __init__(self) -> None:
        self.expected: int | None = None
        self.actual = 0
        self.line: int | None = None

    def __call__(self, row: Any) -> str:
        if self.expected is None:
            self.expected, self.actual, self.line = row.expected_columns, row.actual_columns, row.number
        return "error"

    def options(self) -> pacsv.ParseOptions:
        return pacsv.ParseOptions(invalid_row_handler=self)


# Where pyarrow's messages quote a file's content: the rest of a row after its field counts, a value it could not
# convert. What they are replaced by says the content is left out on purpose.
_QUOTED_CONTENT = (
    (re.compile(r"(Expected \d+ columns?, got \d+):.*", re.S), r"\1 (the row's text is not shown)"),
    (re.compile(r"(invalid value) '.*", re.S), r"\1 (not shown)"),
)


def without_content(message: str) -> str:
    """A reader's error message with any of the file's content it quotes left out, on one line."""
    for pattern, replacement in _QUOTED_CONTENT:
        message = pattern.sub(replacement, message)
    return " ".join(message.split())


def _read_error(path: Path, what: str, exc: Exception, bad: _FirstBadRow) -> DataError:
    """The error for a dataset that cannot be read, naming the file and where, never quoting its content."""
    if bad.expected is not None:
        line = bad.line if bad.line is not None else _first_bad_line(path)
        where = f"line {line}" if line is not None else "a row"
        return DataError(
            f"{path}: cannot read {what}: {where} has {bad.actual} fields where the first line has {bad.expected} "
            "(is this the file you meant? an unquoted value holding a comma does this too)"
        )
    return DataError(f"{path}: cannot read {what}: {without_content(str(exc))}")


def _first_bad_line(path: Path) -> int | None:
    """The line of a CSV file's first row with the wrong number of fields, read again in one thread (the threaded
    reader does not know row numbers): only on the way to an error."""
    bad = _FirstBadRow()
    try:
        with pacsv.open_csv(path, read_options=pacsv.ReadOptions(use_threads=False),
                            parse_options=bad.options()) as reader:
            for _batch in reader:
                pass
    except (pa.ArrowException, OSError):
        pass
    return bad.line


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """A table as pandas, its Arrow buffers freed column by column as they convert: the peak is one copy, not two."""
    return table.to_pandas(split_blocks=True, self_destruct=True)


def read_head(
    path: Path, fmt: str, columns: Sequence[str], rows: int = 5, na_values: Sequence[str] = ()
) -> pd.DataFrame:
    """The first `rows` rows of a dataset (only `columns`, `na_values` missing), reading no more of it than one
    batch.

    Raises:
        DataError: the file is missing or unreadable.
    """
    wanted = list(dict.fromkeys(columns))
    bad = _FirstBadRow()
    try:
        if fmt == "delta":
            table = _delta(path).head(rows, columns=wanted)
        else:
            _must_exist(path)
            if fmt == "parquet":
                batch = next(pq.ParquetFile(path).iter_batches(batch_size=rows, columns=wanted), None)
                table = pa.Table.from_batches([batch]) if batch is not None else pq.read_table(path, columns=wanted)
            else:
                options = _csv_options(wanted, na_values)
                with pacsv.open_csv(path, convert_options=options, parse_options=bad.options()) as reader:
                    table = pa.Table.from_batches([reader.read_next_batch()])
    except (pa.ArrowException, OSError, StopIteration) as exc:
        raise _read_error(path, fmt, exc, bad) from exc
    return as_missing(table.slice(0, rows), na_values).to_pandas()


def read_sample(
    path: Path, fmt: str, columns: Sequence[str], rows: int, na_values: Sequence[str] = ()
) -> pd.DataFrame:
    """Some rows of a dataset's `columns` with the types reading it gives: a CSV's every row (its types come from
    all of them), else the first `rows`.

    Raises:
        DataError: the file is missing or unreadable.
    """
    if fmt == "csv":
        return read_frame(path, fmt, columns, na_values)
    return read_head(path, fmt, columns, rows, na_values)


OUTPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


def output_format(path: Path) -> str:
    """The format a table written to `path` takes, by its suffix: Parquet (`.parquet`, `.pq`) or CSV (`.csv`).

    Raises:
        DataError: another suffix (checked before any work, so nothing is computed for nothing).
    """
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{path}: cannot tell the output format from {path.suffix or 'no suffix'!r}: end the path with "
            ".parquet or .csv"
        )
    return fmt


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    """Write a table as Parquet or CSV, by the path's suffix (`output_format`), atomically.

    Raises:
        DataError: the folder cannot be created or written (bad input: exit 2).
        StorageError: the disk is full or failing (exit 1).
    """
    if output_format(path) == "parquet":
        return write_parquet(frame, path)
    return _atomically(path, "CSV", lambda tmp: frame.to_csv(tmp, index=False))


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    """Write `frame` to `path` as Parquet; readers never see a half-written file.

    Raises:
        DataError: the folder cannot be created or written (bad input: exit 2).
        StorageError: the disk is full or failing (exit 1).
    """
    return _atomically(Path(path), "Parquet", lambda tmp: _parquet_in_slices(frame, tmp))


def _umask() -> int:
    mask = os.umask(0o022)  # read it the only portable way, and put it back at once
    os.umask(mask)
    return mask


# Files this package writes are readable as the user's umask says (a temporary file is created 0600: a pack
# renamed into place from one was unreadable by the team sharing its store).
FILE_MODE = 0o666 & ~_umask()
# errno values that say the storage failed, not the request: a full disk or quota, a file too large, I/O errors.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})


def _atomically(path: Path, kind: str, write: Callable[[str], None]) -> Path:
    """Write through a temporary file in the same folder, renamed into place; nothing is left on failure."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            write(tmp)
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        raise write_error(path, f"cannot write {kind}", exc) from exc
    return path


def write_error(path: Path | str, what: str, exc: OSError) -> DataError | StorageError:
    """The error for a failed write: the storage's fault (exit 1) or the path's (exit 2), naming the path."""
    text = exc.strerror or str(exc)
    if exc.errno in STORAGE_ERRNOS or "No space left" in text or "Disk quota" in text:
        return StorageError(f"{path}: {what}: {text}")
    return DataError(f"{path}: {what}: {text}")


# Rows converted to Arrow at a time when writing a large frame: memory holds the frame and one slice.
WRITE_SLICE_ROWS = 1_000_000


def _parquet_in_slices(frame: pd.DataFrame, path: str) -> None:
    """`frame.to_parquet(path)`, one slice of rows after another (a row group each) for a large frame.

    Pages carry CRC checksums, which this package's readers check (a damaged page is an error, not other values).
    """
    if len(frame) <= WRITE_SLICE_ROWS:
        frame.to_parquet(path, index=False, write_page_checksum=True)
        return
    first = pa.Table.from_pandas(frame.iloc[:WRITE_SLICE_ROWS], preserve_index=False)
    try:
        with pq.ParquetWriter(path, first.schema, write_page_checksum=True) as writer:
            writer.write_table(first)
            del first
            for start in range(WRITE_SLICE_ROWS, len(frame), WRITE_SLICE_ROWS):
                piece = frame.iloc[start : start + WRITE_SLICE_ROWS]
                writer.write_table(pa.Table.from_pandas(piece, schema=writer.schema, preserve_index=False))
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a column typed differently further down (object columns)
        frame.to_parquet(path, index=False, write_page_checksum=True)


def is_numeric(dtype: pa.DataType) -> bool:
    """Whether a column of this Arrow type can be a model feature as it is."""
    return bool(
        pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_boolean(dtype)
        or pa.types.is_decimal(dtype)
    )


def is_delta_table(path: Path) -> bool:
    """Whether a folder is a Delta table (it has a `_delta_log`)."""
    return (path / "_delta_log").is_dir()


def _delta(path: Path) -> Any:
    """A Delta table's current version as a pyarrow dataset (read with deltalake, no Spark needed)."""
    if not is_delta_table(path):
        raise DataError(f"{path}: delta table not found (no _delta_log folder)")
    try:
        from deltalake import DeltaTable
    except ImportError as exc:
        raise DataError(f"{path}: format delta needs the deltalake package: pip install 'manymodels[delta]'") from exc
    try:
        return DeltaTable(str(path)).to_pyarrow_dataset()
    except Exception as exc:  # noqa: BLE001 - deltalake's own error types: a bad log, an unsupported feature
        text = str(exc).strip().splitlines()
        raise DataError(f"{path}: cannot read delta table: {text[0] if text else type(exc).__name__}") from exc


def _must_exist(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: dataset file not found")
