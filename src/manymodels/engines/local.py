"""The local engine: a process pool on this machine, one single-threaded fit per core."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from loky import ProcessPoolExecutor

from manymodels import faults
from manymodels.data import read_frame, write_table
from manymodels.data.hierarchy import with_levels
from manymodels.engines.base import (
    Dataset,
    Forecasted,
    PreparedData,
    Progress,
    Scored,
    Source,
    prepare,
    select_prepared,
    source_frame,
    wanted_mask,
    warm_up,
)
from manymodels.engines.chunking import MIN_CHUNK_ROWS, plan_chunks, segment_order
from manymodels.engines.operations import (
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
    score_chunk,
    wanted_segments,
)
from manymodels.engines.pool import Trusting, new_pool, stopped_at_exit
from manymodels.engines.progress import Tally
from manymodels.engines.records import drop_leftovers, fit_recorded
from manymodels.errors import DataError, EngineError, EngineSetupError
from manymodels.registry import manifest as mf
from manymodels.registry.forecasting import forecast_keys, history_columns, known_segments, plan_and_grid
from manymodels.registry.pack_info import DAMAGED_SOURCE, FALLBACK_SOURCE, MODEL_SOURCE
from manymodels.segment import SegmentResult, SegmentSpec
from manymodels.segment.fit import FAILED, segment_fingerprints

# How long to wait for a new pool's workers to answer before saying they cannot start.
START_TIMEOUT_SECONDS = 120.0
# How often the driver reads the workers' progress while it waits for chunks.
PROGRESS_SECONDS = 0.25

# A unit of work: the chunk's rows, (segment index, first row, end row) of each segment, chunk number.
Task = tuple[pd.DataFrame, list[tuple[int, int, int]], int]


class LocalEngine:
    """Fits chunks of segments on a pool of `workers` processes (default: the machine's cores).

    Args:
        workers: processes in the pool; 1 fits in this process.
        max_chunk_rows: an upper bound on the rows of one chunk (more, smaller tasks).
    """

    kind = "local"

    def __init__(self, workers: int | None = None, max_chunk_rows: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.max_chunk_rows = max_chunk_rows
        self._pool: ProcessPoolExecutor | None = None
        self._pool_size = 0
        self._warming: list[Future[None]] = []
        self._helper = False  # the pool is `start(overlap=True)`'s one worker, for a job of one chunk

    @property
    def is_local(self) -> bool:
        """Always: the pool runs on this machine."""
        return True

    def start(self, rows: int | None = None, overlap: bool = False) -> None:
        """Start the workers now, so their imports overlap the driver's reading and tracking set-up.

        Args:
            rows: the dataset's row count if known; a fleet that fits one chunk runs in this
                process and starts no pool.
            overlap: for a job that fits one chunk, start one worker anyway when this process has imported
                neither MLflow nor LightGBM yet (a command's fresh process): the worker imports LightGBM (and
                scikit-learn, ~0.7 s) while this process imports MLflow, then does the work (`_map`). Once MLflow
                is imported (the Python API's calls, a second job) there is nothing to overlap: the work stays
                here, where LightGBM is then imported once. A worker that cannot start leaves the work here.
        """
        if self._pool is not None or self.workers <= 1:
            return
        if rows is not None and rows <= MIN_CHUNK_ROWS:
            if not overlap or not _imports_ahead() or (os.cpu_count() or 1) < 2:
                return
            self._pool_size, self._helper = 1, True
            self._pool = new_pool(1)
            self._warming = [self._pool.submit(warm_up)]
            return
        self._pool_size = self.workers
        self._pool = new_pool(self.workers)
        self._warming = [self._pool.submit(warm_up) for _ in range(self.workers)]

    def ready(self) -> None:
        """Wait until the workers `start` launched have answered (nothing to wait for without a pool).

        Called before a run is created, so a pool that cannot start leaves no run behind.

        Raises:
            EngineSetupError: a worker process could not start or died while starting.
        """
        warming, self._warming = self._warming, []
        for future in warming:
            try:
                future.result(timeout=START_TIMEOUT_SECONDS)
            except Exception as exc:  # noqa: BLE001 - whatever stops a worker, the pool is unusable
                self.close()
                why = " ".join(str(exc).split())  # loky's messages span lines; ours is one
                raise EngineSetupError(
                    f"the local engine's worker processes could not start ({type(exc).__name__}: {why}); "
                    "check that this Python can start another of itself, or train with workers: 1"
                ) from exc

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        helper, self._warming, self._helper = self._helper, [], False
        if self._pool is not None:
            # A small job's worker, idle once its task answered, is asked to exit: killed, loky's resource tracker
            # at times warned of a leaked semaphore (about 1 command in 20), into the command's output.
            self._pool.shutdown(wait=True, kill_workers=not helper)
            self._pool = None

    def load(self, dataset: Dataset, spec: SegmentSpec, segments: Sequence[str] | None = None) -> PreparedData:
        """Read the columns training needs once, keep the named segments, group by segment."""
        frame = read_frame(Path(dataset.path), dataset.fmt, spec.columns, dataset.na_values)
        if spec.forecast is not None and spec.forecast.hierarchy:  # the levels above the segments are series too
            frame = with_levels(frame, spec.forecast.hierarchy, spec.label, spec.forecast.time)
        if segments:
            frame = frame[wanted_mask(frame[list(spec.segment_by)], segments)]
        return prepare(frame, list(spec.segment_by))

    def fingerprints(self, data: PreparedData, spec: SegmentSpec) -> list[str]:
        """Each segment's fingerprint, hashed here in one vectorised pass."""
        return segment_fingerprints(data.frame, data.starts, spec)

    def select(self, data: PreparedData, keep: np.ndarray, dataset: Dataset, spec: SegmentSpec) -> PreparedData:
        """The chosen segments, from the rows already in memory."""
        return select_prepared(data, keep)

    def fit(
        self,
        data: PreparedData,
        spec: SegmentSpec,
        shard_dir: str | None,
        on_progress: Progress | None = None,
    ) -> list[SegmentResult]:
        """Fit every segment; each chunk's models land in one shard in `shard_dir`.

        `on_progress` hears of every segment as it is done (not of whole chunks), from the
        workers too: each writes its chunk's count to a small file the driver reads.
        """
        chunks = plan_chunks(data.sizes, self.workers, self.max_chunk_rows, heavy=spec.heavy)
        results: list[SegmentResult] = []
        workers = min(self.workers, len(chunks))
        tasks = [self._task(data, chunk_id, first, end) for chunk_id, (first, end) in enumerate(chunks)]
        if workers <= 1 and self._pool is None:  # a pool `start` made is warm (LightGBM imported): it takes one chunk
            self.close()
            one = (lambda _done: on_progress(1)) if on_progress else None
            for frame, bounds, chunk_id in tasks:
                results += fit_recorded(frame, bounds, spec, chunk_id, shard_dir, one)
            return sorted(results, key=lambda r: r.index)
        largest_first = sorted(tasks, key=lambda t: -len(t[0]))
        lost: list[Task] = []
        self.ready()
        pool, self._pool = self._pool or new_pool(workers), None
        with stopped_at_exit(pool), Tally(len(chunks), len(data), on_progress) as tally:
            futures: dict[Future[list[SegmentResult]], Task] = {
                pool.submit(Trusting(fit_recorded), frame, bounds, spec, chunk_id, shard_dir, tally.slot(chunk_id)): (
                    frame,
                    bounds,
                    chunk_id,
                )
                for frame, bounds, chunk_id in largest_first
            }
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, timeout=PROGRESS_SECONDS, return_when=FIRST_COMPLETED)
                tally.report()
                for future in finished:
                    try:
                        results += future.result()
                        faults.point("train.chunk")  # a test stops the command with some chunks done
                    except BrokenProcessPool:
                        lost.append(futures[future])  # maybe not this chunk's fault: retried alone below
                    except Exception as exc:  # noqa: BLE001 - a chunk's trouble fails its segments, not the run
                        results += _lost(futures[future][1], spec, f"{type(exc).__name__}: {exc}")
            results += self._retry_alone(lost, spec, shard_dir, tally)
            if lost and shard_dir is not None:  # every worker is done: a stopped one's half-written file goes
                drop_leftovers(shard_dir)
            tally.report(done=len(results))
        return sorted(results, key=lambda r: r.index)

    def score(
        self, source: Source, pack: str, output: Path | None = None, partition_by_segment: bool = False
    ) -> Scored:
        """Score chunks of whole segments on the pool (or here, for a small input); rows keep their order.

        Rows are grouped by segment and bin-packed into chunks as for fitting, so a worker reads
        the shards of its chunk's segments only and loads each model once.
        """
        frame = source_frame(source)
        opened = open_pack(pack)
        info = opened.info
        needed = [c for c in info.inputs if c in frame.columns or c in info.required]
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise DataError(f"input lacks column(s) {', '.join(missing)} that model {info.model!r} needs")
        if opened.fallback is not None:  # a fallback by parent group routes by its own columns
            needed += [c for c in opened.fallback.segment_by if c in frame.columns and c not in needed]
        order, sizes = segment_order(frame, list(info.segment_by))
        chunks = plan_chunks(sizes, self.workers, self.max_chunk_rows)
        ends = np.cumsum(sizes)
        starts = ends - sizes
        parts = [order[starts[first] : ends[end - 1]] for first, end in chunks]
        tasks = ((frame[needed].take(rows), pack) for rows in parts)
        prediction = np.full(len(frame), np.nan)
        source_of = np.full(len(frame), None, dtype=object)
        for rows, done in zip(parts, self._map(score_chunk, tasks, len(parts)), strict=True):
            prediction[rows] = done[PREDICTION].to_numpy(dtype=float, na_value=np.nan)
            source_of[rows] = done[MODEL_SOURCE].to_numpy(dtype=object, na_value=None)
        out = frame.copy() if not isinstance(source, Dataset) else frame
        missed = np.isnan(prediction)
        values = pd.array(prediction, dtype="Float64")  # nullable: no model is null, not NaN
        values[missed] = pd.NA
        out[PREDICTION] = values
        out[MODEL_SOURCE] = pd.array(source_of, dtype="string")
        if output is not None:
            write_table(out, output)
        fallback = int((source_of == FALLBACK_SOURCE).sum())
        damaged = int((source_of == DAMAGED_SOURCE).sum())
        by = list(info.segment_by)  # no segment columns: one model for every row, so at most one "segment" lacks it
        segments_without = len(frame.loc[missed, by].drop_duplicates()) if by else int(missed.any())
        return Scored(out, len(out), int(missed.sum()), segments_without, fallback, damaged)

    def evaluate(
        self, source: Source, spec: SegmentSpec, metric: str, contenders: Sequence[Contender], holdout: bool
    ) -> pd.DataFrame:
        """Evaluate chunks of whole segments on the pool (or here, when small); one row per segment returns."""
        frame = source_frame(source, spec.columns)
        if spec.forecast is not None and spec.forecast.hierarchy:  # the levels above the segments, summed here too
            frame = with_levels(frame, spec.forecast.hierarchy, spec.label, spec.forecast.time)
        data = prepare(frame, list(spec.segment_by))  # the rows as read: freed once grouped
        chunks = plan_chunks(data.sizes, self.workers, self.max_chunk_rows)
        judged = [(c.label, c.root, wanted_segments(data.keys, c.skip)) for c in contenders]
        tasks = (
            (*self._task(data, chunk_id, first, end)[:2], spec, metric, judged, holdout)
            for chunk_id, (first, end) in enumerate(chunks)
        )
        parts = list(self._map(evaluate_chunk, tasks, len(chunks)))
        if not parts:
            parts = [evaluate_chunk(data.frame, [], spec, metric, judged, holdout)]  # no rows: an empty table
        table = pd.concat(parts, ignore_index=True)
        table = table.sort_values(mf.SEGMENT_INDEX, kind="stable").reset_index(drop=True)
        return pd.concat([data.keys.reset_index(drop=True), table.drop(columns=mf.SEGMENT_INDEX)], axis=1)

    def forecast(
        self, pack: str, steps: int, history: Source | None = None, known: pd.DataFrame | None = None,
        levels: Sequence[float] = (),
    ) -> Forecasted:
        """Forecasts of chunks of segments on the pool (or here, when few): from the pack's state, whose segments
        are chunked in shard order (each worker reads its shards once), or from `history`, grouped by segment."""
        opened = open_pack(pack)
        plan_and_grid(opened)  # not a forecast's pack: one error here, before any work
        by = list(opened.segment_by)
        future = KnownValues.of(known, by)
        tasks: Iterable[tuple[Any, ...]]
        if history is None:
            keys = forecast_keys(opened)  # shard order; then the thin segments the fallback forecasts
            chunks = plan_chunks(np.full(len(keys), max(steps, 1), dtype=np.int64), self.workers, self.max_chunk_rows)
            parts_of = (keys.iloc[first:end].reset_index(drop=True) for first, end in chunks)
            tasks = ((pack, part, steps, future.rows_of(part), tuple(levels)) for part in parts_of)
            parts = list(self._map(forecast_chunk, tasks, len(chunks)))
            asked = known_segments(opened)
        else:
            data = prepare(source_frame(history, history_columns(opened)), by)
            chunks = plan_chunks(data.sizes, self.workers, self.max_chunk_rows)
            tasks = ((self._task(data, number, first, end)[0], pack, steps, future.rows_of(data.keys.iloc[first:end]),
                      tuple(levels)) for number, (first, end) in enumerate(chunks))
            parts = list(self._map(forecast_history_chunk, tasks, len(chunks)))
            asked = len(data)
        if not parts:
            parts = [forecast_chunk(pack, opened.manifest[by].iloc[:0], steps, None, levels)]
        frame = pd.concat(parts, ignore_index=True)
        return Forecasted(frame, asked - len(frame) // max(steps, 1))

    def monitor(self, source: Source, segment_by: Sequence[str], root: str, watch: Watch) -> pd.DataFrame:
        """Each segment's drift and metric on its new rows; rows already scored: one vectorised pass here, else
        chunks of whole segments predicted on the pool."""
        columns = list(dict.fromkeys([*segment_by, *watch.read]))
        frame = source_frame(source, columns)
        plan = open_pack(root).plan
        if plan is not None and plan.hierarchy and not watch.scored:  # the levels above, from the segments' rows
            frame = with_levels(frame, plan.hierarchy, watch.label, plan.time)
        data = prepare(frame, list(segment_by))
        models = model_positions(data.keys, root)
        whole = 1 if watch.scored or len(data) == 0 else None
        chunks = [(0, len(data))] if whole else plan_chunks(data.sizes, self.workers, self.max_chunk_rows)
        tasks = ((*self._task(data, number, first, end)[:2], root, watch, models) for number, (first, end)
                 in enumerate(chunks))
        table = pd.concat(list(self._map(monitor_chunk, tasks, len(chunks))), ignore_index=True)
        table = table.sort_values(mf.SEGMENT_INDEX, kind="stable").reset_index(drop=True)
        return pd.concat([data.keys.reset_index(drop=True), table.drop(columns=mf.SEGMENT_INDEX)], axis=1)

    def _map(self, function: Callable[..., Any], tasks: Iterable[tuple[Any, ...]], count: int) -> Iterator[Any]:
        """`function(*task)` for each task, yielded in task order.

        The pool is kept fed with two tasks per process. A pool started here has `workers - 1`
        processes, and whenever it is fed this process runs the next task itself: the work starts at
        once, while the pool's workers still start and import (about as long, on a laptop, as
        scoring thousands of segments), and `workers` processes share it. A pool `start` launched
        earlier (its workers imported while this process did its own set-up) has `workers`
        processes, and this process only feeds it. Tasks are drawn lazily, so memory holds the tasks
        in flight, not all of them. One task: here, no pool.

        Raises:
            EngineError: a worker process died.
        """
        if self._helper:
            yield from self._on_helper(function, tasks)
            return
        if self.workers <= 1 or count <= 1:
            for task in tasks:
                yield function(*task)
            return
        if all(future.done() for future in self._warming):
            self.ready()  # the warm-up `start` launched has ended: a pool that could not start is one clear error
        if self._pool is None:
            self._pool_size = min(self.workers - 1, count)
            self._pool = new_pool(self._pool_size)
        pool, feed = self._pool, 2 * self._pool_size
        helping = self._pool_size < self.workers  # a pool `start` launched with every worker: this process feeds it
        in_flight: dict[Future[Any], int] = {}
        done: dict[int, Any] = {}
        yielded = 0
        try:
            for number, task in enumerate(tasks):
                if len(in_flight) < feed:
                    in_flight[pool.submit(Trusting(function), *task)] = number
                elif helping:
                    done[number] = function(*task)
                else:
                    finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in finished:
                        done[in_flight.pop(future)] = future.result()
                    in_flight[pool.submit(Trusting(function), *task)] = number
                for future in [f for f in in_flight if f.done()]:
                    done[in_flight.pop(future)] = future.result()
                while yielded in done:
                    yield done.pop(yielded)
                    yielded += 1
            for future, number in sorted(in_flight.items(), key=lambda item: item[1]):
                done[number] = future.result()
            in_flight.clear()
            while yielded in done:
                yield done.pop(yielded)
                yielded += 1
        except BrokenProcessPool as exc:
            raise self._worker_died() from exc
        finally:
            for future in in_flight:
                future.cancel()

    def _on_helper(self, function: Callable[..., Any], tasks: Iterable[tuple[Any, ...]]) -> Iterator[Any]:
        """A small job's tasks on the one worker `start(overlap=True)` launched, in order; here when it could not start.

        Raises:
            EngineError: the worker died on a task.
        """
        warming, self._warming = self._warming, []
        try:
            for future in warming:
                future.result(timeout=START_TIMEOUT_SECONDS)
        except Exception:  # noqa: BLE001 - only a head start: this process does the work instead
            self.close()
        for task in tasks:
            if self._pool is None:
                yield function(*task)
                continue
            try:
                done = self._pool.submit(Trusting(function), *task).result()
            except BrokenProcessPool as exc:
                raise self._worker_died() from exc
            yield done

    def _worker_died(self) -> EngineError:
        """The pool closed, and the error a job gets when one of its workers died."""
        self.close()
        return EngineError("a worker process died (a crash in native code, or out of memory); try fewer workers")

    @staticmethod
    def _retry_alone(lost: list[Task], spec: SegmentSpec, shard_dir: str | None, tally: Tally) -> list[SegmentResult]:
        """Chunks lost when a worker died, run one at a time: only the chunk that kills its worker fails."""
        results: list[SegmentResult] = []
        pool: ProcessPoolExecutor | None = None
        try:
            for frame, bounds, chunk_id in sorted(lost, key=lambda t: t[2]):
                pool = pool or new_pool(1)
                try:
                    slot = tally.slot(chunk_id)
                    done = pool.submit(Trusting(fit_recorded), frame, bounds, spec, chunk_id, shard_dir, slot).result()
                except BrokenProcessPool:
                    pool.shutdown(wait=False)
                    pool = None
                    done = _lost(
                        bounds,
                        spec,
                        "the worker process died fitting this segment's chunk (a crash in "
                        "native code or out of memory); it died again when retried alone",
                    )
                except Exception as exc:  # noqa: BLE001
                    done = _lost(bounds, spec, f"{type(exc).__name__}: {exc}")
                results += done
                tally.report()
        finally:
            if pool is not None:
                pool.shutdown()
        return results

    @staticmethod
    def _task(data: PreparedData, chunk_id: int, first: int, end: int) -> Task:
        lo, hi = int(data.starts[first]), int(data.starts[end])
        bounds = [(i, int(data.starts[i]) - lo, int(data.starts[i + 1]) - lo) for i in range(first, end)]
        return data.frame.iloc[lo:hi], bounds, chunk_id


def _imports_ahead() -> bool:
    """Whether this process has MLflow's and LightGBM's imports ahead of it (a command's fresh process)."""
    return "mlflow" not in sys.modules and "lightgbm" not in sys.modules


def _lost(bounds: list[tuple[int, int, int]], spec: SegmentSpec, error: str) -> list[SegmentResult]:
    return [
        SegmentResult(index, FAILED, hi - lo, f"{spec.fingerprint}-{hi - lo}-lost", error=error)
        for index, lo, hi in bounds
    ]
