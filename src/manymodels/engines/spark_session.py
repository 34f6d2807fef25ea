"""Spark sessions for the Spark engine: building or adopting one, reading with it, settings per stage, progress."""

from __future__ import annotations

import os
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from manymodels.engines.base import Progress
from manymodels.errors import DataError, EngineSetupError

_JAVA_OPTIONS = "spark.driver.extraJavaOptions"
# In local mode the driver JVM is the whole cluster, yet its work here is small (a scan, a shuffle,
# Arrow to and from Python): the optimising JIT compiler and parallel GC threads burn more of the
# machine's cores than they save (measured in bench/RESULTS.md). Used unless the target sets its own.
LOCAL_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def read_with_spark(
    spark: Any, path: Path | str, fmt: str, na_values: Sequence[str] = (), columns: Sequence[str] | None = None
) -> Any:
    """A dataset as a Spark DataFrame (only `columns` when given), read as the local engine reads it: `na_values`
    missing in every column; a CSV's types inferred, and a CSV column of numbers and missing-value markers (the
    declared ones, and the local reader's own "NA", "N/A", "null", ...) numbers. Delta needs Delta Lake on the
    session.

    Raises:
        DataError: a Delta table on a session without Delta Lake.
    """
    if fmt == "parquet":
        frame = spark.read.parquet(str(path))
    elif fmt == "delta":
        try:
            frame = spark.read.format("delta").load(str(path))
        except Exception as exc:  # noqa: BLE001 - Spark's analysis errors are not one type across versions
            raise DataError(
                f"{path}: reading a Delta table on Spark needs Delta Lake on the session (pip install delta-spark and "
                f"add its io.delta jars with spark.jars.packages, or a cluster that has them): {_first_line(exc)}"
            ) from exc
    else:
        frame = spark.read.option("header", True).option("inferSchema", True).csv(str(path))
    if columns is not None:
        frame = frame.select(*[_named(c) for c in dict.fromkeys(columns)])
    return _as_missing(frame, na_values, numbers=fmt == "csv")


def _named(column: str) -> Any:
    """A column by its name as written (a dot in it is no field of a struct)."""
    from pyspark.sql import functions as F  # noqa: N812 - pyspark's own convention

    return F.col("`" + column.replace("`", "``") + "`")


def _as_missing(frame: Any, na_values: Sequence[str], numbers: bool) -> Any:
    """Text columns with `na_values` made missing; with `numbers` (a CSV), a text column holding only numbers and
    markers (declared or the local reader's) made a number column: one pass over the text columns decides which."""
    from pyspark.sql import functions as F  # noqa: N812 - pyspark's own convention

    from manymodels.data.datasets import CSV_MISSING

    text = [f.name for f in frame.schema.fields if f.dataType.typeName() == "string"]
    if not text or not (na_values or numbers):
        return frame
    markers = list(dict.fromkeys([*CSV_MISSING, *na_values]))
    numeric: set[str] = set()
    if numbers:
        # A value that is neither missing, a marker nor a number: a column with none is a number column.
        def other(c: str) -> Any:
            return _named(c).isNotNull() & ~_named(c).isin(markers) & _named(c).try_cast("double").isNull()

        counts = frame.agg(*[F.sum(other(c).cast("long")).alias(str(i)) for i, c in enumerate(text)]).collect()[0]
        numeric = {c for i, c in enumerate(text) if not counts[str(i)]}
    for column in text:
        if column in numeric:
            value = F.when(_named(column).isin(markers), F.lit(None)).otherwise(_named(column)).cast("double")
        elif na_values:
            value = F.when(_named(column).isin(list(na_values)), F.lit(None)).otherwise(_named(column))
        else:
            continue
        frame = frame.withColumn(column, value)
    return frame


def build_session(master: str | None, remote: str | None, conf: dict[str, Any]) -> Any:
    """A SparkSession for the target, or an EngineSetupError saying what to install or check."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise EngineSetupError("engine kind spark needs pyspark: pip install 'manymodels[spark]'") from exc
    check_reachable(master, remote)
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
        ids = to_pandas(spark.range(0, candidates).selectExpr("id", f"pmod(hash(id), {partitions}) AS p"))
        first = ids.drop_duplicates("p").sort_values("p")
        if len(first) == partitions:
            return first["id"].to_numpy(dtype=np.int64)
        candidates *= 4


def to_pandas(frame: Any) -> pd.DataFrame:
    """`toPandas()` without Spark Connect's query metrics in `attrs` (pandas cannot write them to Parquet)."""
    out = frame.toPandas()
    out.attrs = {}
    return out


def session_is_local(spark: Any) -> bool:
    """Whether a session runs in local mode (its master, from the context or, on Connect, the server's conf)."""
    context = spark_context(spark)
    if context is not None:
        return str(context.master).startswith("local")
    try:
        master = spark.conf.get("spark.master", None)
    except Exception:  # noqa: BLE001 - a server that hides its conf: assume a cluster
        master = None
    return bool(master) and str(master).startswith("local")


def spark_context(spark: Any) -> Any:
    try:
        return spark.sparkContext
    except Exception:  # noqa: BLE001 - Spark Connect has none
        return None


@contextmanager
def stage_progress(spark: Any, segments: int, on_progress: Progress | None) -> Iterator[Callable[[], None]]:
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

    context = spark_context(spark) if on_progress is not None else None
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


def check_reachable(master: str | None, remote: str | None) -> None:
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


def parallelism(spark: Any) -> int:
    """How many tasks the session runs at once (the chunk plan aims at a few chunks per task slot)."""
    context = spark_context(spark)
    if context is not None:
        return max(1, int(context.defaultParallelism))
    from pyspark.sql import functions as F  # noqa: N812 - pyspark's own convention

    # Spark Connect has no SparkContext: spark.range splits into the cluster's default
    # parallelism, so count the partitions it made.
    parts = spark.range(0, 1 << 16).select(F.spark_partition_id().alias("p"))
    row = parts.agg(F.max("p").alias("last")).first()
    return max(1, int(row["last"]) + 1)


@contextmanager
def stage_conf(spark: Any, settings: dict[str, str]) -> Iterator[None]:
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
