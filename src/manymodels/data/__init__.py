"""The data layer: read and write the datasets a bundle names (Parquet, CSV, Delta)."""

from manymodels.data.datasets import (
    is_delta_table,
    is_numeric,
    output_format,
    read_frame,
    read_head,
    read_sample,
    read_schema,
    row_count,
    write_parquet,
    write_table,
)

__all__ = [
    "is_delta_table",
    "is_numeric",
    "output_format",
    "read_frame",
    "read_head",
    "read_sample",
    "read_schema",
    "row_count",
    "write_parquet",
    "write_table",
]
