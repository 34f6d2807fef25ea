"""What the Spark engine does to DataFrames beside its chunks' work: a hierarchy's levels summed in Spark, forecast
rows made portable through Arrow and back, counts of unserved rows in one job, Python workers started ahead."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from manymodels.data.hierarchy import nesting_problem
from manymodels.engines.operations import (
    PREDICTION,
)
from manymodels.engines.spark_session import (
    to_pandas,
)
from manymodels.errors import DataError
from manymodels.registry.pack_info import DAMAGED_SOURCE, FALLBACK_SOURCE, MODEL_SOURCE


def portable(frame: pd.DataFrame, time: str, dates: bool) -> pd.DataFrame:
    """Forecast rows as Spark takes them back: dates as nanoseconds, predictions as floats (NaN for none)."""
    out = frame.copy()
    if dates:
        out[time] = out[time].astype("datetime64[ns]").astype("int64")
    else:
        out[time] = out[time].astype("float64")
    for column in ["prediction", *(c for c in out.columns if c.startswith(("lo-", "hi-")))]:  # intervals too
        out[column] = out[column].astype("float64")
    for column in out.columns:  # text as Python strings: Arrow-backed text of concatenated parts is chunked, which
        if pd.api.types.is_string_dtype(out[column]):  # Spark's Arrow writer does not take
            out[column] = out[column].astype(object)
    return out


def from_portable(rows: pd.DataFrame, time: str, dates: bool) -> pd.DataFrame:
    """The forecast rows as the local engine gives them (dates, nullable predictions)."""
    out = rows.copy()
    if dates:
        out[time] = pd.to_datetime(out[time].astype("int64"), unit="ns")
    elif len(out) and (np.mod(out[time].to_numpy(dtype=float), 1) == 0).all():
        out[time] = out[time].astype("int64")
    for column in ["prediction", *(c for c in out.columns if c.startswith(("lo-", "hi-")))]:
        values = out[column].to_numpy(dtype=float)
        nullable = pd.array(values, dtype="Float64")
        nullable[~np.isfinite(values)] = pd.NA
        out[column] = nullable
    out["model_source"] = out["model_source"].astype("string")
    return out


def warm_workers(spark: Any, slots: int) -> None:
    """One tiny task per slot that starts a Python worker and imports what fitting needs (reused workers keep it)."""

    def warm(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from manymodels.engines.base import warm_up

        warm_up()
        yield from batches

    try:
        spark.range(0, slots, 1, slots).mapInPandas(warm, schema="id long").collect()
    except Exception:  # noqa: BLE001, S110 - only a head start: the fit stage imports what it needs anyway
        pass


def unserved_counts(scored: Any, segment_by: list[str]) -> tuple[int, int, int, int, int]:
    """(rows, rows without a prediction, segments without a model, rows the fallback served, rows it served for
    a damaged model), in one job."""
    from pyspark.sql import functions as F  # noqa: N812 - pyspark's own convention

    missing = F.col(PREDICTION).isNull()
    segments = F.count_distinct(F.when(missing, F.struct(*segment_by))) if segment_by else F.max(F.when(missing, 1))
    row = scored.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count(F.when(missing, 1)).alias("missing"),
        segments.alias("segments"),
        F.count(F.when(F.col(MODEL_SOURCE) == FALLBACK_SOURCE, 1)).alias("fallback"),
        F.count(F.when(F.col(MODEL_SOURCE) == DAMAGED_SOURCE, 1)).alias("damaged"),
    ).first()
    return (int(row["rows"]), int(row["missing"]), int(row["segments"] or 0), int(row["fallback"]),
            int(row["damaged"]))


def spark_levels(df: Any, hierarchy: Sequence[str], label: str | None, time: str) -> Any:
    """`data.hierarchy.with_levels` in Spark: the segments' rows, then each level above summed by time (numbers
    carried as the level's mean, text as the one value its children share, else null).

    Raises:
        DataError: a segment column holds a null, or a segment is under two parents (named).
    """
    from pyspark.sql import functions as F  # noqa: N812 - pyspark's own convention
    from pyspark.sql import types as T  # noqa: N812

    levels = list(hierarchy)
    nulls = df.filter(F.greatest(*[F.col(c).isNull() for c in levels]) if len(levels) > 1
                      else F.col(levels[0]).isNull()).count()
    if nulls:
        raise DataError(f"{nulls:,} rows have a null in segment column(s) {', '.join(levels)}: a hierarchy marks the "
                        "series above the segments with nulls, so the segments' rows may not hold any (fill or drop "
                        "them first)")
    pairs = to_pandas(df.select(*levels).distinct())  # one row per segment: what nesting needs
    problem = nesting_problem(pairs, levels)
    if problem:
        raise DataError(problem)
    numeric = (T.NumericType, T.BooleanType)
    has_label = label is not None and label in df.columns
    others = [f.name for f in df.schema.fields if f.name not in (*levels, label, time)]
    numbers = {f.name for f in df.schema.fields if f.name in others and isinstance(f.dataType, numeric)}
    base = df.withColumn(str(label), F.col(str(label)).cast("double")) if has_label else df
    for column in numbers:
        base = base.withColumn(column, F.col(column).cast("double"))
    parts = [base]
    for depth in range(len(levels) - 1, -1, -1):
        sums = [F.sum(str(label)).alias(str(label))] if has_label else []
        for column in others:
            if column in numbers:
                sums.append(F.avg(column).alias(column))
            else:
                one = F.countDistinct(column) == 1
                sums.append(F.when(one & (F.count(F.lit(1)) == F.count(column)), F.first(column, ignorenulls=True))
                            .alias(column))
        part = base.groupBy(*levels[:depth], time).agg(*sums)
        for column in levels[depth:]:
            part = part.withColumn(column, F.lit(None).cast(base.schema[column].dataType))
        parts.append(part.select(*base.columns))
    out = parts[0]
    for part in parts[1:]:
        out = out.unionByName(part)
    return out
