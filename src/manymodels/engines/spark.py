"""The Spark engine: segments bin-packed into chunks on the cluster, one `applyInPandas` group per chunk.

Data is read by Spark and never collected: the driver collects only one row per segment (its
size; then its fit, evaluation or fingerprint result), plans the chunks, and broadcasts the
(segment -> chunk) table back. Executors run the same per-chunk work as the local engine
(`fit_chunk`, `evaluate_chunk`, a pack's predictions), write shards and predictions themselves
and return per-segment rows only, so neither model bytes nor data rows pass through the driver.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from manymodels.engines.base import Dataset, Forecasted, Progress, Scored, Source, segment_labels, wanted_mask
from manymodels.engines.chunking import plan_chunks
from manymodels.engines.operations import (
    EVAL_FINGERPRINT,
    EVAL_ROWS,
    MON_BANDED,
    MON_LOSS_P,
    MON_METRIC,
    MON_MISSES,
    MON_MODEL,
    MON_ROWS,
    MON_STEP,
    MON_WINDOWS,
    PREDICTION,
    Contender,
    KnownValues,
    Watch,
    evaluate_chunk,
    forecast_chunk,
    forecast_history_chunk,
    model_positions,
    monitor_chunk,
    open_pack,
    wanted_segments,
)
from manymodels.engines.records import fit_recorded
from manymodels.engines.spark_frames import from_portable, portable, spark_levels, unserved_counts, warm_workers
from manymodels.engines.spark_session import (
    build_session,
    parallelism,
    partition_labels,
    read_with_spark,
    session_is_local,
    stage_conf,
    stage_progress,
    to_pandas,
)
from manymodels.estimators import allow_pickle, pickle_allowed
from manymodels.registry import manifest as mf
from manymodels.registry.forecasting import (
    forecast_keys,
    history_columns,
    known_segments,
    lower_column,
    plan_and_grid,
    upper_column,
)
from manymodels.registry.pack import PackPredict
from manymodels.registry.pack_info import MODEL_SOURCE
from manymodels.segment import SegmentResult, SegmentSpec

# Every chunk is one pandas frame in one Python worker, sent as Arrow: stay far below Arrow's
# 2 GiB per-batch limit however many small segments share a chunk.
DEFAULT_MAX_CHUNK_ROWS = 1_000_000
INDEX = "_mm_segment_index"
CHUNK = "_mm_chunk"
PART = "_mm_partition"  # a label per chunk that Spark's hash partitioning sends to a partition of its own
_AQE = "spark.sql.adaptive.enabled"
_PARTITIONS = "spark.sql.shuffle.partitions"
_ARROW = "spark.sql.execution.arrow.pyspark.enabled"


@dataclass
class SparkFleet:
    """A dataset's segments on Spark: the lazy data tagged with segment index and chunk, and the plan."""

    frame: Any
    keys: pd.DataFrame
    sizes: np.ndarray
    chunks: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.keys)


class SparkEngine:
    """Runs every fleet operation with `groupBy(chunk).applyInPandas` (or `mapInPandas`) on a Spark session.

    Args:
        session: a SparkSession to use as is (never stopped by the engine).
        master: classic Spark master (`local[2]`, `spark://host:7077`, `yarn`); default `local[*]`.
        remote: a Spark Connect URL (`sc://host:15002`) instead of `master`.
        conf: extra Spark configuration for a session the engine builds.
        max_chunk_rows: an upper bound on one chunk's rows.
        workers: task slots to plan chunks for (default: the cluster's default parallelism).
    """

    kind = "spark"

    def __init__(
        self,
        session: Any = None,
        master: str | None = None,
        remote: str | None = None,
        conf: dict[str, Any] | None = None,
        max_chunk_rows: int | None = None,
        workers: int | None = None,
    ) -> None:
        self.session = session
        self._owned = False
        self.master, self.remote, self.conf = master, remote, dict(conf or {})
        self.max_chunk_rows = max_chunk_rows or DEFAULT_MAX_CHUNK_ROWS
        self._slots = workers
        self.workers = workers or 1

    def start(self, rows: int | None = None, overlap: bool = False) -> None:
        """Get (or build) the session and learn how many tasks it runs at once."""
        if self.session is None:
            self.session = build_session(self.master, self.remote, self.conf)
            self._owned = True
        self.workers = self._slots or parallelism(self.session)

    def ready(self) -> None:
        """Nothing to wait for: `start` has the session (or raised)."""

    @property
    def is_local(self) -> bool:
        """Whether executors run on this machine (local mode), so they can write to its folders."""
        if self.session is not None:
            return session_is_local(self.session)
        if self.remote:
            return self.remote.startswith("local")
        return (self.master or "local").startswith("local")

    def close(self) -> None:
        """Stop the session if the engine built it (a caller's session is left running)."""
        if self._owned and self.session is not None:
            self.session.stop()
            self.session, self._owned = None, False

    def load(self, dataset: Dataset, spec: SegmentSpec, segments: Sequence[str] | None = None) -> SparkFleet:
        """Read with Spark, count rows per segment (the only thing collected), plan and tag chunks."""
        self.start()
        warming = threading.Thread(
            target=warm_workers, args=(self.session, self.workers), name="manymodels-warm-up"
        )
        warming.start()  # Python workers import LightGBM while the JVM reads and counts
        try:
            rows = read_with_spark(self.session, dataset.path, dataset.fmt, dataset.na_values, spec.columns)
            if spec.forecast is not None and spec.forecast.hierarchy:  # the levels above the segments are series too
                rows = spark_levels(rows, spec.forecast.hierarchy, spec.label, spec.forecast.time)
            return self._tag(rows, spec.segment_by, segments, heavy=spec.heavy)
        finally:
            warming.join()

    def _tag(self, df: Any, segment_by: Sequence[str], segments: Sequence[str] | None = None,
             heavy: bool = False) -> SparkFleet:
        """The rows tagged with their segment's index, chunk and partition label; the plan from the counts."""
        from pyspark.sql import functions as F  # noqa: N812 - pyspark's own convention

        spark = self.session
        by = list(segment_by)
        counts = to_pandas(df.groupBy(*by).count())
        if by:  # no segment columns: one group of every row (a global model)
            counts = counts.sort_values(by, kind="stable", na_position="last").reset_index(drop=True)
        if segments:
            counts = counts[wanted_mask(counts[by], segments)].reset_index(drop=True)
        keys = counts[by].copy()
        sizes = counts["count"].to_numpy(dtype=np.int64)
        chunks = plan_chunks(sizes, self.workers, self.max_chunk_rows, heavy=heavy)
        chunk_of = np.zeros(len(keys), dtype=np.int64)
        for chunk_id, (first, end) in enumerate(chunks):
            chunk_of[first:end] = chunk_id
        plan = keys.copy()
        plan[INDEX] = np.arange(len(keys), dtype=np.int64)
        plan[CHUNK] = chunk_of
        if len(plan) == 0:
            return SparkFleet(df, keys, sizes, chunks)
        plan[PART] = partition_labels(spark, len(chunks))[chunk_of]
        with stage_conf(spark, {_ARROW: "true"}):
            assign = spark.createDataFrame(plan)
        same_segment = [df[c].eqNullSafe(assign[c]) for c in by]
        if same_segment:
            tagged = df.join(F.broadcast(assign), on=same_segment, how="inner")
        else:
            tagged = df.crossJoin(F.broadcast(assign))
        tagged = tagged.select(*[df[c] for c in df.columns], assign[INDEX], assign[CHUNK], assign[PART])
        return SparkFleet(tagged, keys, sizes, chunks)

    def _per_chunk(self, fleet: SparkFleet, work: Any, schema: Any) -> pd.DataFrame:
        """`work(chunk rows) -> per-segment rows` in one task per chunk; only those rows are collected.

        One task per chunk: the shuffle has one partition per chunk and each chunk's label hashes
        to its own partition (chunk numbers themselves collide: 10 chunks fill 7 of 10 partitions).
        Adaptive execution is off for the stage, or it would coalesce the small partitions back together.
        """
        settings = {_AQE: "false", _PARTITIONS: str(len(fleet.chunks)), _ARROW: "true"}
        with stage_conf(self.session, settings):
            return to_pandas(fleet.frame.groupBy(PART).applyInPandas(_trusting(work), schema=schema))

    def fit(
        self, fleet: SparkFleet, spec: SegmentSpec, shard_dir: str | None, on_progress: Progress | None = None
    ) -> list[SegmentResult]:
        """One `applyInPandas` group per chunk; manifest rows come back, shards stay where executors wrote them."""
        from pyspark.sql.pandas.types import from_arrow_schema

        if len(fleet) == 0:
            return []
        schema = from_arrow_schema(mf.result_schema(spec, [(mf.ATTEMPT, pa.int32())]))

        def fit_group(pdf: pd.DataFrame) -> pd.DataFrame:
            frame, bounds = _chunk_bounds(pdf)
            results = fit_recorded(frame, bounds, spec, int(pdf[CHUNK].iloc[0]), shard_dir)
            return mf.result_rows(results, spec).assign(**{mf.ATTEMPT: np.int32(_attempt())})

        with stage_progress(self.session, len(fleet), on_progress) as finish:
            rows = self._per_chunk(fleet, fit_group, schema)
            finish()
        return mf.results_from_rows(rows, spec)

    def fingerprints(self, fleet: SparkFleet, spec: SegmentSpec) -> list[str]:
        """Each segment's fingerprint, hashed on the executors chunk by chunk (one row per segment comes back)."""
        if len(fleet) == 0:
            return []

        def hash_chunk(pdf: pd.DataFrame) -> pd.DataFrame:
            from manymodels.segment.fit import data_fingerprint

            groups = pdf.groupby(INDEX, sort=False)
            return pd.DataFrame(
                {INDEX: [int(i) for i, _ in groups], mf.FINGERPRINT: [data_fingerprint(g, spec) for _, g in groups]}
            )

        rows = self._per_chunk(fleet, hash_chunk, f"{INDEX} long, {mf.FINGERPRINT} string")
        found = dict(zip(rows[INDEX].astype(int), rows[mf.FINGERPRINT].astype(str), strict=True))
        return [found.get(i, f"{spec.fingerprint}-0-0") for i in range(len(fleet))]

    def select(self, fleet: SparkFleet, keep: np.ndarray, dataset: Dataset, spec: SegmentSpec) -> SparkFleet:
        """The chosen segments: read again by Spark, filtered to them, planned afresh."""
        return (
            self.load(dataset, spec, segments=segment_labels(fleet.keys[keep]).tolist() or None)
            if keep.any()
            else SparkFleet(fleet.frame.limit(0), fleet.keys.iloc[:0], fleet.sizes[:0], [])
        )

    def evaluate(
        self, source: Source, spec: SegmentSpec, metric: str, contenders: Sequence[Contender], holdout: bool
    ) -> pd.DataFrame:
        """Each chunk's segments evaluated on an executor; one row per segment comes back, never a row of data."""
        self.start()
        rows = self._read(source).select(*spec.columns)
        if spec.forecast is not None and spec.forecast.hierarchy:  # the levels above the segments, summed here too
            rows = spark_levels(rows, spec.forecast.hierarchy, spec.label, spec.forecast.time)
        fleet = self._tag(rows, spec.segment_by)
        judged = [(c.label, c.root, wanted_segments(fleet.keys, c.skip)) for c in contenders]
        fields = [f"{mf.SEGMENT_INDEX} long, {EVAL_ROWS} long, {EVAL_FINGERPRINT} string"]
        schema = ", ".join(fields + [f"{label} double" for label, _, _ in judged])

        def evaluate_group(pdf: pd.DataFrame) -> pd.DataFrame:
            frame, bounds = _chunk_bounds(pdf)
            return evaluate_chunk(frame, bounds, spec, metric, judged, holdout)

        if len(fleet) == 0:
            rows = evaluate_chunk(pd.DataFrame(columns=list(spec.columns)), [], spec, metric, judged, holdout)
        else:
            rows = self._per_chunk(fleet, evaluate_group, schema)
        rows = rows.sort_values(mf.SEGMENT_INDEX, kind="stable").reset_index(drop=True)
        return pd.concat([fleet.keys.reset_index(drop=True), rows.drop(columns=mf.SEGMENT_INDEX)], axis=1)

    def monitor(self, source: Source, segment_by: Sequence[str], root: str, watch: Watch) -> pd.DataFrame:
        """Each chunk's segments judged on an executor against the pack's profiles; only per-segment rows return."""
        self.start()
        columns = list(dict.fromkeys([*segment_by, *watch.read]))
        rows = self._read(source).select(*columns)
        plan = open_pack(root).plan
        if plan is not None and plan.hierarchy and not watch.scored:  # the levels above, from the segments' rows
            rows = spark_levels(rows, plan.hierarchy, watch.label, plan.time)
        fleet = self._tag(rows, segment_by)
        models = model_positions(fleet.keys, root)
        fields = [f"{mf.SEGMENT_INDEX} long, {MON_ROWS} long, {MON_MODEL} long"]
        fields += [f"psi_{c} double, ks_{c} double, p_{c} double" for c in range(watch.columns)]
        fields += [f"{MON_METRIC} double, {MON_LOSS_P} double",
                   *(f"{MON_STEP}{k + 1} double" for k in range(watch.steps))]
        if watch.steps:
            fields.append(f"{MON_BANDED} long, {MON_MISSES} long")
            fields += [f"{c} {'double' if j < 4 else 'long'}" for j, c in enumerate(MON_WINDOWS)]
        schema = ", ".join(fields)

        def monitor_group(pdf: pd.DataFrame) -> pd.DataFrame:
            frame, bounds = _chunk_bounds(pdf)
            return monitor_chunk(frame, bounds, root, watch, models)

        if len(fleet) == 0:
            rows = monitor_chunk(pd.DataFrame(columns=columns), [], root, watch, models)
        else:
            rows = self._per_chunk(fleet, monitor_group, schema)
        rows = rows.sort_values(mf.SEGMENT_INDEX, kind="stable").reset_index(drop=True)
        return pd.concat([fleet.keys.reset_index(drop=True), rows.drop(columns=mf.SEGMENT_INDEX)], axis=1)

    def forecast(
        self, pack: str, steps: int, history: Source | None = None, known: pd.DataFrame | None = None,
        levels: Sequence[float] = (),
    ) -> Forecasted:
        """Forecasts of chunks of segments, one task per chunk: the pack's segments (in shard order, so a task reads
        its shards once) or the segments of `history` read by Spark; the forecast rows come back to the driver."""
        self.start()
        opened = open_pack(pack)
        plan, _ = plan_and_grid(opened)
        by = list(opened.segment_by)
        dates = plan.time_kind != "number"
        future = KnownValues.of(known, by)
        if history is None:
            keys = forecast_keys(opened)  # shard order; then the thin segments the fallback forecasts
            asked = known_segments(opened)
            if len(keys) == 0:
                return Forecasted(forecast_chunk(pack, keys, steps, None, levels), asked)
            chunks = plan_chunks(np.full(len(keys), max(steps, 1), dtype=np.int64), self.workers, self.max_chunk_rows)
            chunk_of = np.zeros(len(keys), dtype=np.int64)
            for number, (first, end) in enumerate(chunks):
                chunk_of[first:end] = number
            tagged = keys.assign(**{INDEX: np.arange(len(keys)), PART: partition_labels(self.session,
                                                                                      len(chunks))[chunk_of]})
            with stage_conf(self.session, {_ARROW: "true"}):
                frame = self.session.createDataFrame(tagged)
            fleet = SparkFleet(frame, keys, np.ones(len(keys), dtype=np.int64), chunks)

            def forecast_group(pdf: pd.DataFrame) -> pd.DataFrame:
                part = pdf.sort_values(INDEX, kind="stable")[by].reset_index(drop=True)
                return portable(forecast_chunk(pack, part, steps, future.rows_of(part), levels), plan.time, dates)
        else:
            columns = history_columns(opened)
            fleet = self._tag(self._read(history).select(*columns), by)
            asked = len(fleet)
            if len(fleet) == 0:
                return Forecasted(forecast_chunk(pack, opened.manifest[by].iloc[:0], steps, None, levels), asked)

            def forecast_group(pdf: pd.DataFrame) -> pd.DataFrame:
                rows, bounds = _chunk_bounds(pdf)
                part = rows[by].iloc[[lo for _, lo, _ in bounds]].reset_index(drop=True)
                done = forecast_history_chunk(rows[columns], pack, steps, future.rows_of(part), levels)
                return portable(done, plan.time, dates)

        key_types = [f for f in fleet.frame.schema.fields if f.name in by]
        schema = ", ".join([*(f"`{f.name}` {f.dataType.simpleString()}" for f in key_types),
                            f"`{plan.time}` {'long' if dates else 'double'}", "step long", "prediction double",
                            "model_source string",
                            *(f"`{side(level)}` double" for level in levels for side in (lower_column, upper_column))])
        rows = self._per_chunk(fleet, forecast_group, schema)
        return Forecasted(from_portable(rows, plan.time, dates), asked - len(rows) // max(steps, 1))

    def score(
        self, source: Source, pack: str, output: Path | None = None, partition_by_segment: bool = False
    ) -> Scored:
        """Predictions written as Parquet by Spark (or, without `output`, returned as a lazy Spark DataFrame).

        One task per shard (each reads its shard once, loads each model once, and streams its rows
        in Arrow batches) plus one for the rows of segments without a model, which the fallback
        predicts or leave null. `pack` must be readable by the executors.
        """
        from pyspark.sql import functions as F  # noqa: N812 - pyspark's own convention
        from pyspark.sql.types import DoubleType, StringType, StructField, StructType

        self.start()
        data = self._read(source)
        opened = open_pack(pack)
        segment_by = list(opened.segment_by)
        routes = mf.routes(opened.manifest, segment_by)
        shards = sorted(routes[mf.SHARD].dropna().unique().tolist())
        labels = partition_labels(self.session, len(shards) + 1)  # the last: rows without a model
        served = routes[segment_by].copy()
        served[PART] = labels[pd.Index(shards).get_indexer(routes[mf.SHARD])]
        with stage_conf(self.session, {_ARROW: "true"}):
            route_frame = self.session.createDataFrame(served)
        same_segment = [data[c].eqNullSafe(route_frame[c]) for c in segment_by]
        routed = data.join(F.broadcast(route_frame), on=same_segment, how="left").select(
            *[data[c] for c in data.columns], F.coalesce(route_frame[PART], F.lit(int(labels[-1]))).alias(PART)
        )
        schema = StructType(
            [
                *data.schema.fields,
                StructField(PREDICTION, DoubleType(), True),
                StructField(MODEL_SOURCE, StringType(), True),
            ]
        )
        predict = PackPredict(pack)

        def predict_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            for pdf in batches:  # Arrow batches of one partition: memory holds a batch, not the partition
                out = pdf.drop(columns=[PART])
                predicted = predict(out)  # rows without a segment model: the fallback's, else null
                out[PREDICTION] = predicted[PREDICTION].array
                out[MODEL_SOURCE] = predicted[MODEL_SOURCE].array
                yield out

        # One partition per shard (its label hashes to a partition of its own), sorted by segment so
        # a segment's rows are adjacent and its model is loaded once; batches stream through
        # `mapInPandas`, so a task never holds more than one batch of rows and a few shards.
        partitioned = routed.repartition(len(labels), PART).sortWithinPartitions(*segment_by)
        scored = partitioned.mapInPandas(_trusting(predict_batches), schema=schema)
        if output is None:  # returned unwritten: the counts take one pass, the caller's action another
            with stage_conf(self.session, {_AQE: "false", _ARROW: "true"}):
                return Scored(scored, *unserved_counts(scored, segment_by))
        with stage_conf(self.session, {_AQE: "false", _ARROW: "true"}):
            writer = scored.write.mode("overwrite")
            if partition_by_segment:
                writer = writer.partitionBy(*segment_by)
            writer.parquet(str(output))
        written = self.session.read.parquet(str(output))
        return Scored(written, *unserved_counts(written, segment_by))

    def _read(self, source: Source) -> Any:
        """A source as a Spark DataFrame: a dataset read by Spark, a pandas frame sent, a Spark frame as is."""
        if isinstance(source, Dataset):
            return read_with_spark(self.session, source.path, source.fmt, source.na_values)
        if isinstance(source, pd.DataFrame):
            with stage_conf(self.session, {_ARROW: "true"}):
                return self.session.createDataFrame(source)
        return source


def _trusting(work: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`work`, run on an executor that trusts pickle as this process does (the target's `trust`)."""
    trusts = pickle_allowed()

    def trusting(data: Any) -> Any:
        allow_pickle(trusts)
        return work(data)

    return trusting


def _chunk_bounds(pdf: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[int, int, int]]]:
    """On an executor: a chunk's rows grouped by segment, and (segment index, first row, end row) of each."""
    pdf = pdf.sort_values(INDEX, kind="stable").reset_index(drop=True)
    index = pdf[INDEX].to_numpy()
    cuts = np.flatnonzero(index[1:] != index[:-1]) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, len(pdf)]
    return pdf, [(int(index[s]), int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def _attempt() -> int:
    try:
        from pyspark import TaskContext

        context = TaskContext.get()
        return int(context.attemptNumber()) if context is not None else 0
    except Exception:  # noqa: BLE001
        return 0
