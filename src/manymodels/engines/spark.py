"""The Spark engine: segments bin-packed into chunks on the cluster, one `applyInPandas` group per chunk.

Data is read by Spark and never collected: the driver collects only the segment sizes (one row
per segment), plans the chunks, and broadcasts the (segment -> chunk) table back. Executors run
the same `fit_chunk` as the local engine, write their shard straight to the run's staging folder
and return manifest rows only, so no model bytes pass through the driver.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from manymodels.engines.base import Progress, wanted_mask
from manymodels.engines.chunking import plan_chunks
from manymodels.errors import DataError, EngineSetupError
from manymodels.segment import SegmentResult, SegmentSpec, fit_chunk, metric_names
from manymodels.segment.fit import OK

# Every chunk is one pandas frame in one Python worker, sent as Arrow: stay far below Arrow's
# 2 GiB per-batch limit however many small segments share a chunk.
DEFAULT_MAX_CHUNK_ROWS = 1_000_000
INDEX = "_mm_segment_index"
CHUNK = "_mm_chunk"
PART = "_mm_partition"  # a label per chunk that Spark's hash partitioning sends to a partition of its own
_AQE = "spark.sql.adaptive.enabled"
_PARTITIONS = "spark.sql.shuffle.partitions"
_ARROW = "spark.sql.execution.arrow.pyspark.enabled"
_JAVA_OPTIONS = "spark.driver.extraJavaOptions"
# In local mode the driver JVM is the whole cluster, yet its work here is small (a scan, a shuffle,
# Arrow to and from Python): the optimising JIT compiler and parallel GC threads burn more of the
# machine's cores than they save (measured in bench/RESULTS.md). Used unless the target sets its own.
LOCAL_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
_RESULT_FIELDS = [
    ("segment_index", "long"),
    ("status", "string"),
    ("error", "string"),
    ("rows", "long"),
    ("n_train", "long"),
    ("n_test", "long"),
    ("shard", "string"),
    ("model_format", "string"),
    ("fingerprint", "string"),
    ("fit_seconds", "double"),
    ("constant", "boolean"),
    ("attempt", "int"),
]


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
    """Fits chunks of segments with `groupBy(chunk).applyInPandas` on a Spark session.

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

    def start(self, rows: int | None = None) -> None:
        """Get (or build) the session and learn how many tasks it runs at once."""
        if self.session is None:
            self.session = build_session(self.master, self.remote, self.conf)
            self._owned = True
        self.workers = self._slots or _parallelism(self.session)

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

    def load(self, path: Path, fmt: str, spec: SegmentSpec, segments: Sequence[str] | None = None) -> SparkFleet:
        """Read with Spark, count rows per segment (the only thing collected), plan and tag chunks."""
        from pyspark.sql import functions as F  # noqa: N812 - pyspark's own convention

        self.start()
        spark = self.session
        warming = threading.Thread(target=_warm_workers, args=(spark, self.workers), name="manymodels-warm-up")
        warming.start()  # Python workers import LightGBM while the JVM reads and counts
        df = read_with_spark(spark, path, fmt).select(*spec.columns)
        by = list(spec.segment_by)
        counts = _to_pandas(df.groupBy(*by).count())
        warming.join()
        if by:  # no segment columns: one group of every row (a global model)
            counts = counts.sort_values(by, kind="stable", na_position="last").reset_index(drop=True)
        if segments:
            counts = counts[wanted_mask(counts[by], segments)].reset_index(drop=True)
        keys = counts[by].copy()
        sizes = counts["count"].to_numpy(dtype=np.int64)
        chunks = plan_chunks(sizes, self.workers, self.max_chunk_rows)
        chunk_of = np.zeros(len(keys), dtype=np.int64)
        for chunk_id, (first, end) in enumerate(chunks):
            chunk_of[first:end] = chunk_id
        plan = keys.copy()
        plan[INDEX] = np.arange(len(keys), dtype=np.int64)
        plan[CHUNK] = chunk_of
        if len(plan) == 0:
            return SparkFleet(df, keys, sizes, chunks)
        plan[PART] = partition_labels(spark, len(chunks))[chunk_of]
        with _stage_conf(spark, {_ARROW: "true"}):
            assign = spark.createDataFrame(plan)
        same_segment = [df[c].eqNullSafe(assign[c]) for c in by]
        if same_segment:
            tagged = df.join(F.broadcast(assign), on=same_segment, how="inner")
        else:
            tagged = df.crossJoin(F.broadcast(assign))
        tagged = tagged.select(*[df[c] for c in spec.columns], assign[INDEX], assign[CHUNK], assign[PART])
        return SparkFleet(tagged, keys, sizes, chunks)

    def fit(
        self, fleet: SparkFleet, spec: SegmentSpec, shard_dir: str, on_progress: Progress | None = None
    ) -> list[SegmentResult]:
        """One `applyInPandas` group per chunk; manifest rows come back, shards stay where executors wrote them."""
        if len(fleet) == 0:
            return []
        metrics = list(metric_names(spec.task))
        schema = ", ".join(f"{name} {kind}" for name, kind in [*_RESULT_FIELDS, *[(m, "double") for m in metrics]])

        def fit_group(pdf: pd.DataFrame) -> pd.DataFrame:
            return _fit_group(pdf, spec, shard_dir, metrics)

        # One task per chunk: the shuffle has one partition per chunk and each chunk's label hashes
        # to its own partition (chunk numbers themselves collide: 10 chunks fill 7 of 10 partitions).
        # Adaptive execution is off for the stage, or it would coalesce the small partitions back together.
        settings = {_AQE: "false", _PARTITIONS: str(len(fleet.chunks)), _ARROW: "true"}
        with _stage_conf(self.session, settings), _progress(self.session, len(fleet), on_progress) as finish:
            rows = _to_pandas(fleet.frame.groupBy(PART).applyInPandas(fit_group, schema=schema))
            results = _results(rows, metrics)
            finish()
        return results

    def fingerprints(self, fleet: SparkFleet, spec: SegmentSpec) -> list[str]:
        """Each segment's fingerprint, hashed on the executors chunk by chunk (one row per segment comes back)."""
        if len(fleet) == 0:
            return []

        def hash_chunk(pdf: pd.DataFrame) -> pd.DataFrame:
            from manymodels.segment.fit import data_fingerprint

            groups = pdf.groupby(INDEX, sort=False)
            return pd.DataFrame(
                {
                    INDEX: [int(i) for i, _ in groups],
                    "fingerprint": [data_fingerprint(g, spec) for _, g in groups],
                }
            )

        settings = {_AQE: "false", _PARTITIONS: str(len(fleet.chunks)), _ARROW: "true"}
        with _stage_conf(self.session, settings):
            schema = f"{INDEX} long, fingerprint string"
            rows = _to_pandas(fleet.frame.groupBy(PART).applyInPandas(hash_chunk, schema=schema))
        found = dict(zip(rows[INDEX].astype(int), rows["fingerprint"].astype(str), strict=True))
        return [found.get(i, f"{spec.fingerprint}-0-0") for i in range(len(fleet))]

    def select(self, fleet: SparkFleet, keep: np.ndarray, path: Path, fmt: str, spec: SegmentSpec) -> SparkFleet:
        """The chosen segments: read again by Spark, filtered to them, planned afresh."""
        from manymodels.engines.base import segment_labels

        return (
            self.load(path, fmt, spec, segments=segment_labels(fleet.keys[keep]).tolist() or None)
            if keep.any()
            else SparkFleet(fleet.frame.limit(0), fleet.keys.iloc[:0], fleet.sizes[:0], [])
        )


def _warm_workers(spark: Any, slots: int) -> None:
    """One tiny task per slot that starts a Python worker and imports what fitting needs (reused workers keep it)."""

    def warm(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from manymodels.engines.base import warm_up

        warm_up()
        yield from batches

    try:
        spark.range(0, slots, 1, slots).mapInPandas(warm, schema="id long").collect()
    except Exception:  # noqa: BLE001, S110 - only a head start: the fit stage imports what it needs anyway
        pass


def read_with_spark(spark: Any, path: Path | str, fmt: str) -> Any:
    """A dataset as a Spark DataFrame (CSV: with a header, types inferred; Delta: needs Delta Lake on the session).

    Raises:
        DataError: a Delta table on a session without Delta Lake.
    """
    if fmt == "parquet":
        return spark.read.parquet(str(path))
    if fmt == "delta":
        try:
            return spark.read.format("delta").load(str(path))
        except Exception as exc:  # noqa: BLE001 - Spark's analysis errors are not one type across versions
            raise DataError(
                f"{path}: reading a Delta table on Spark needs Delta Lake on the session (pip install delta-spark and "
                f"add its io.delta jars with spark.jars.packages, or a cluster that has them): {_first_line(exc)}"
            ) from exc
    return spark.read.option("header", True).option("inferSchema", True).csv(str(path))


def build_session(master: str | None, remote: str | None, conf: dict[str, Any]) -> Any:
    """A SparkSession for the target, or an EngineSetupError saying what to install or check."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise EngineSetupError("engine kind spark needs pyspark: pip install 'manymodels[spark]'") from exc
    _check_reachable(master, remote)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("manymodels")
    builder = builder.remote(remote) if remote else builder.master(master or "local[*]")
    if not remote:  # Spark's console progress bar would fight ours
        builder = builder.config("spark.ui.showConsoleProgress", "false")
    if not remote and (master or "local").startswith("local") and _JAVA_OPTIONS not in conf:
        builder = builder.config(_JAVA_OPTIONS, LOCAL_JAVA_OPTIONS)
    for key, value in conf.items():
        builder = builder.config(key, str(value).lower() if isinstance(value, bool) else str(value))
    try:
        return builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - Java, network and config errors all end here
        where = f"Spark Connect at {remote}" if remote else f"Spark master {master or 'local[*]'}"
        first = _first_line(exc)
        raise EngineSetupError(
            f"cannot start {where}: {first} (Spark needs Java 17+ on PATH or in JAVA_HOME, and a reachable master)"
        ) from exc


def _first_line(exc: BaseException) -> str:
    """The gist of a Spark start-up error: the Java exception's own message when py4j wraps one."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            return str(java.toString()).strip().splitlines()[0]
        except Exception:  # noqa: BLE001, S110 - the JVM may be gone: fall back to the Python text
            pass
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def partition_labels(spark: Any, partitions: int) -> np.ndarray:
    """`partitions` long values that Spark's hash partitioning into `partitions` sends one to each partition.

    Asked of Spark itself (`pmod(hash(x), n)` is how a shuffle on a long column picks its
    partition), so the labels hold for whatever hash the cluster's Spark version uses.
    """
    candidates = partitions * 16
    while True:
        ids = _to_pandas(spark.range(0, candidates).selectExpr("id", f"pmod(hash(id), {partitions}) AS p"))
        first = ids.drop_duplicates("p").sort_values("p")
        if len(first) == partitions:
            return first["id"].to_numpy(dtype=np.int64)
        candidates *= 4


def _to_pandas(frame: Any) -> pd.DataFrame:
    """`toPandas()` without Spark Connect's query metrics in `attrs` (pandas cannot write them to Parquet)."""
    out = frame.toPandas()
    out.attrs = {}
    return out


def session_is_local(spark: Any) -> bool:
    """Whether a session runs in local mode (its master, from the context or, on Connect, the server's conf)."""
    context = _spark_context(spark)
    if context is not None:
        return str(context.master).startswith("local")
    try:
        master = spark.conf.get("spark.master", None)
    except Exception:  # noqa: BLE001 - a server that hides its conf: assume a cluster
        master = None
    return bool(master) and str(master).startswith("local")


def _spark_context(spark: Any) -> Any:
    try:
        return spark.sparkContext
    except Exception:  # noqa: BLE001 - Spark Connect has none
        return None


@contextmanager
def _progress(spark: Any, segments: int, on_progress: Progress | None) -> Iterator[Callable[[], None]]:
    """Report segments done while the fit stage runs; yields `finish`, which reports the rest.

    Classic Spark: the stage's finished tasks (one chunk each) are read from the status tracker
    twice a second and turned into segments (chunks hold similar row counts, not equal segment
    counts, so the figure is an estimate until the end). Spark Connect: only the end is reported.
    """
    reported = 0
    lock = threading.Lock()

    def report(done: int) -> None:
        nonlocal reported
        with lock:
            if on_progress is not None and done > reported:
                on_progress(done - reported)
                reported = done

    context = _spark_context(spark) if on_progress is not None else None
    if context is None:
        yield lambda: report(segments)
        return
    group = f"manymodels-fit-{uuid.uuid4().hex}"
    saved = {key: context.getLocalProperty(key) for key in ("spark.jobGroup.id", "spark.job.description")}
    context.setJobGroup(group, "manymodels: fit segments")
    tracker = context.statusTracker()
    stop = threading.Event()

    def fit_stage() -> Any:
        jobs = [tracker.getJobInfo(job) for job in tracker.getJobIdsForGroup(group)]
        stages = [stage for job in jobs if job is not None for stage in job.stageIds]
        return tracker.getStageInfo(max(stages)) if stages else None  # the job's last stage runs the fits

    def poll() -> None:
        while not stop.wait(0.5):
            try:
                info = fit_stage()
            except Exception:  # noqa: BLE001, S112 - progress is best effort; the result is not
                continue
            if info is not None and info.numTasks:
                report(min(segments - 1, segments * info.numCompletedTasks // info.numTasks))

    watcher = threading.Thread(target=poll, name="manymodels-spark-progress", daemon=True)
    watcher.start()
    try:
        yield lambda: report(segments)
    finally:
        stop.set()
        watcher.join()
        for key, value in saved.items():
            context.setLocalProperty(key, value)


def _check_reachable(master: str | None, remote: str | None) -> None:
    """Fail in seconds, not after Spark's minute of retries, when a standalone master or Connect server is down."""
    if remote and remote.startswith("sc://"):
        parsed = urlsplit(remote.split(";")[0])
        addresses = [(parsed.hostname or "localhost", parsed.port or 15002)]
        what = f"Spark Connect server {remote}"
    elif master and master.startswith("spark://"):
        addresses = []
        for part in master[len("spark://") :].split(","):
            name, _, number = part.strip().rpartition(":")
            addresses.append((name or part, int(number) if number.isdigit() else 7077))
        what = f"Spark master {master}"
    else:
        return  # local, yarn, k8s: Spark reports those itself
    reasons = []
    for host, port in addresses:
        try:
            with socket.create_connection((host, port), timeout=5):
                return
        except OSError as exc:
            reasons.append(f"{host}:{port}: {exc.strerror or exc}")
    raise EngineSetupError(f"cannot reach {what} ({'; '.join(reasons)}); check the URL and that it is running")


def _parallelism(spark: Any) -> int:
    """How many tasks the session runs at once (the chunk plan aims at a few chunks per task slot)."""
    context = _spark_context(spark)
    if context is not None:
        return max(1, int(context.defaultParallelism))
    from pyspark.sql import functions as F  # noqa: N812 - pyspark's own convention

    # Spark Connect has no SparkContext: spark.range splits into the cluster's default
    # parallelism, so count the partitions it made.
    parts = spark.range(0, 1 << 16).select(F.spark_partition_id().alias("p"))
    row = parts.agg(F.max("p").alias("last")).first()
    return max(1, int(row["last"]) + 1)


def _fit_group(pdf: pd.DataFrame, spec: SegmentSpec, shard_dir: str, metrics: list[str]) -> pd.DataFrame:
    """On an executor: the chunk's rows in, one manifest row per segment out (the shard written)."""
    pdf = pdf.sort_values(INDEX, kind="stable").reset_index(drop=True)
    index = pdf[INDEX].to_numpy()
    cuts = np.flatnonzero(index[1:] != index[:-1]) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, len(pdf)]
    bounds = [(int(index[s]), int(s), int(e)) for s, e in zip(starts, ends, strict=True)]
    results = fit_chunk(pdf, bounds, spec, int(pdf[CHUNK].iloc[0]), shard_dir)
    attempt = _attempt()
    out = pd.DataFrame(
        {
            "segment_index": [r.index for r in results],
            "status": [r.status for r in results],
            "error": [r.error for r in results],
            "rows": [r.rows for r in results],
            "n_train": [r.n_train for r in results],
            "n_test": [r.n_test for r in results],
            "shard": [r.shard for r in results],
            "model_format": [r.model_format for r in results],
            "fingerprint": [r.fingerprint for r in results],
            "fit_seconds": [r.seconds for r in results],
            "constant": [r.constant for r in results],
            "attempt": [attempt] * len(results),
        }
    )
    for m in metrics:
        out[m] = [r.metrics.get(m, np.nan) for r in results]
    return out


def _attempt() -> int:
    try:
        from pyspark import TaskContext

        context = TaskContext.get()
        return int(context.attemptNumber()) if context is not None else 0
    except Exception:  # noqa: BLE001
        return 0


def _results(rows: pd.DataFrame, metrics: list[str]) -> list[SegmentResult]:
    """Manifest rows to results, one per segment: a retried task's rows count once (an ok attempt wins)."""
    rows = rows.assign(_ok=rows["status"] == OK).sort_values(["segment_index", "_ok", "attempt"], kind="stable")
    rows = rows.drop_duplicates("segment_index", keep="last")
    results = []
    for r in rows.itertuples(index=False):
        rec = r._asdict()
        results.append(
            SegmentResult(
                index=int(rec["segment_index"]),
                status=str(rec["status"]),
                rows=int(rec["rows"]),
                fingerprint=str(rec["fingerprint"]),
                n_train=int(rec["n_train"]),
                n_test=int(rec["n_test"]),
                metrics={m: float(rec[m]) for m in metrics if rec[m] == rec[m]},
                error=_text(rec["error"]),
                model_format=_text(rec["model_format"]),
                shard=_text(rec["shard"]),
                seconds=float(rec["fit_seconds"]),
                constant=bool(rec["constant"]),
            )
        )
    return results


def _text(value: Any) -> str | None:
    return None if value is None or value is pd.NA or (isinstance(value, float) and value != value) else str(value)


def score_on_spark(
    spark: Any,
    data: Any,
    routes: pd.DataFrame,
    segment_by: list[str],
    predict: Callable[[pd.DataFrame], Any],
    output: str,
    partition_by_segment: bool = False,
) -> Any:
    """Predictions for a Spark DataFrame, written as Parquet by Spark; returns the written frame.

    Args:
        spark: the session.
        data: the rows to score (a Spark DataFrame).
        routes: segment_by values plus `shard`: which shard holds each served segment's model.
        segment_by: the segment columns.
        predict: picklable; called on an executor with rows of one shard's segments (or of
            segments without a model), returns a frame of `prediction` and `model_source` (it loads
            what it needs once per Python worker).
        output: where Spark writes the Parquet.
        partition_by_segment: partition the output folders by the segment columns.

    One task per shard (each reads its shard once, loads each model once, and streams its rows in
    Arrow batches) plus one for the rows of segments without a model, which get a null prediction.
    """
    from pyspark.sql import functions as F  # noqa: N812 - pyspark's own convention
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    shards = sorted(routes["shard"].dropna().unique().tolist())
    labels = partition_labels(spark, len(shards) + 1)  # the last: rows without a model
    served = routes[segment_by].copy()
    served[PART] = labels[pd.Index(shards).get_indexer(routes["shard"])]
    with _stage_conf(spark, {_ARROW: "true"}):
        route_frame = spark.createDataFrame(served)
    same_segment = [data[c].eqNullSafe(route_frame[c]) for c in segment_by]
    routed = data.join(F.broadcast(route_frame), on=same_segment, how="left").select(
        *[data[c] for c in data.columns], F.coalesce(route_frame[PART], F.lit(int(labels[-1]))).alias(PART)
    )
    schema = StructType(
        [
            *data.schema.fields,
            StructField("prediction", DoubleType(), True),
            StructField("model_source", StringType(), True),
        ]
    )

    def predict_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:  # Arrow batches of one partition: memory holds a batch, not the partition
            out = pdf.drop(columns=[PART])
            predicted = predict(out)  # rows without a segment model: the fallback's, else null
            out["prediction"] = predicted["prediction"].array
            out["model_source"] = predicted["model_source"].array
            yield out

    # One partition per shard (its label hashes to a partition of its own), sorted by segment so
    # a segment's rows are adjacent and its model is loaded once; batches stream through
    # `mapInPandas`, so a task never holds more than one batch of rows and a few shards.
    settings = {_AQE: "false", _ARROW: "true"}
    with _stage_conf(spark, settings):
        partitioned = routed.repartition(len(labels), PART).sortWithinPartitions(*segment_by)
        scored = partitioned.mapInPandas(predict_batches, schema=schema)
        writer = scored.write.mode("overwrite")
        if partition_by_segment:
            writer = writer.partitionBy(*segment_by)
        writer.parquet(output)
    return spark.read.parquet(output)


def unserved_counts(scored: Any, segment_by: list[str]) -> tuple[int, int, int, int]:
    """(rows, rows without a prediction, segments without a model, rows the fallback served), in one job."""
    from pyspark.sql import functions as F  # noqa: N812 - pyspark's own convention

    missing = F.col("prediction").isNull()
    row = scored.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count(F.when(missing, 1)).alias("missing"),
        F.count_distinct(F.when(missing, F.struct(*segment_by))).alias("segments"),
        F.count(F.when(F.col("model_source") == "fallback", 1)).alias("fallback"),
    ).first()
    return int(row["rows"]), int(row["missing"]), int(row["segments"]), int(row["fallback"])


@contextmanager
def _stage_conf(spark: Any, settings: dict[str, str]) -> Iterator[None]:
    """Spark settings for one stage, put back as they were afterwards."""
    saved = {key: spark.conf.get(key, None) for key in settings}
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)
