"""The local engine: a process pool on this machine, one single-threaded fit per core."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pandas as pd
from loky import ProcessPoolExecutor

from manymodels.data import read_frame
from manymodels.engines.base import PreparedData, Progress, prepare, select_prepared, wanted_mask, warm_up
from manymodels.engines.chunking import MIN_CHUNK_ROWS, plan_chunks
from manymodels.errors import EngineSetupError
from manymodels.segment import SegmentResult, SegmentSpec, fit_chunk
from manymodels.segment.fit import FAILED, segment_fingerprints

# Workers are fresh interpreters (loky: fork + exec), never forked copies of this process: a forked
# child inherits OpenMP state that deadlocks LightGBM. Unlike multiprocessing's `spawn`, loky's
# workers do not import the caller's `__main__`, so a plain script (no `if __name__ == "__main__":`),
# `python - < file` and a notebook kernel all work.

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
        self._warming: list[Future[None]] = []

    @property
    def is_local(self) -> bool:
        """Always: the pool runs on this machine."""
        return True

    def start(self, rows: int | None = None) -> None:
        """Start the workers now, so their imports overlap the driver's reading and tracking set-up.

        Args:
            rows: the dataset's row count if known; a fleet that fits one chunk runs in this
                process and starts no pool.
        """
        if self._pool is not None or self.workers <= 1 or (rows is not None and rows <= MIN_CHUNK_ROWS):
            return
        self._pool = _new_pool(self.workers)
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
        self._warming = []
        if self._pool is not None:
            self._pool.shutdown(wait=True, kill_workers=True)
            self._pool = None

    def load(self, path: Path, fmt: str, spec: SegmentSpec, segments: Sequence[str] | None = None) -> PreparedData:
        """Read the columns training needs once, keep the named segments, group by segment."""
        frame = read_frame(path, fmt, spec.columns)
        if segments:
            frame = frame[wanted_mask(frame[list(spec.segment_by)], segments)]
        return prepare(frame, list(spec.segment_by))

    def fingerprints(self, data: PreparedData, spec: SegmentSpec) -> list[str]:
        """Each segment's fingerprint, hashed here in one vectorised pass."""
        return segment_fingerprints(data.frame, data.starts, spec)

    def select(self, data: PreparedData, keep: np.ndarray, path: Path, fmt: str, spec: SegmentSpec) -> PreparedData:
        """The chosen segments, from the rows already in memory."""
        return select_prepared(data, keep)

    def fit(
        self,
        data: PreparedData,
        spec: SegmentSpec,
        shard_dir: str,
        on_progress: Progress | None = None,
    ) -> list[SegmentResult]:
        """Fit every segment; each chunk's models land in one shard in `shard_dir`.

        `on_progress` hears of every segment as it is done (not of whole chunks), from the
        workers too: each writes its chunk's count to a small file the driver reads.
        """
        chunks = plan_chunks(data.sizes, self.workers, self.max_chunk_rows)
        results: list[SegmentResult] = []
        workers = min(self.workers, len(chunks))
        tasks = [self._task(data, chunk_id, first, end) for chunk_id, (first, end) in enumerate(chunks)]
        if workers <= 1:
            self.close()
            one = (lambda _done: on_progress(1)) if on_progress else None
            for frame, bounds, chunk_id in tasks:
                results += fit_chunk(frame, bounds, spec, chunk_id, shard_dir, one)
            return sorted(results, key=lambda r: r.index)
        largest_first = sorted(tasks, key=lambda t: -len(t[0]))
        lost: list[Task] = []
        self.ready()
        pool, self._pool = self._pool or _new_pool(workers), None
        with pool, _Tally(len(chunks), len(data), on_progress) as tally:
            futures: dict[Future[list[SegmentResult]], Task] = {
                pool.submit(fit_chunk, frame, bounds, spec, chunk_id, shard_dir, tally.slot(chunk_id)): (
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
                    except BrokenProcessPool:
                        lost.append(futures[future])  # maybe not this chunk's fault: retried alone below
                    except Exception as exc:  # noqa: BLE001 - a chunk's trouble fails its segments, not the run
                        results += _lost(futures[future][1], spec, f"{type(exc).__name__}: {exc}")
            results += self._retry_alone(lost, spec, shard_dir, tally)
            tally.report(done=len(results))
        return sorted(results, key=lambda r: r.index)

    @staticmethod
    def _retry_alone(lost: list[Task], spec: SegmentSpec, shard_dir: str, tally: _Tally) -> list[SegmentResult]:
        """Chunks lost when a worker died, run one at a time: only the chunk that kills its worker fails."""
        results: list[SegmentResult] = []
        pool: ProcessPoolExecutor | None = None
        try:
            for frame, bounds, chunk_id in sorted(lost, key=lambda t: t[2]):
                pool = pool or _new_pool(1)
                try:
                    slot = tally.slot(chunk_id)
                    done = pool.submit(fit_chunk, frame, bounds, spec, chunk_id, shard_dir, slot).result()
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


class ProgressSlot:
    """A worker's way to say how many of its chunk's segments are done: 8 bytes at its chunk's place in a file.

    Picklable (a path and a number), so it travels to the worker with the chunk; a write per
    segment costs microseconds against a fit's milliseconds.
    """

    def __init__(self, path: str, slot: int) -> None:
        self.path, self.slot = path, slot

    def __call__(self, done: int) -> None:
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.pwrite(fd, done.to_bytes(8, "little"), self.slot * 8)
        finally:
            os.close(fd)


class _Tally:
    """The driver's side of the workers' progress file: reads it, reports what is new to `on_progress`."""

    def __init__(self, chunks: int, total: int, on_progress: Progress | None) -> None:
        self.chunks, self.total, self.on_progress = chunks, total, on_progress
        self.reported = 0
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self.path = ""

    def __enter__(self) -> _Tally:
        if self.on_progress is not None:
            self._folder = tempfile.TemporaryDirectory(prefix="manymodels-progress-")
            self.path = str(Path(self._folder.name) / "segments-done")
            Path(self.path).write_bytes(bytes(8 * self.chunks))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._folder is not None:
            self._folder.cleanup()

    def slot(self, chunk_id: int) -> ProgressSlot | None:
        """What a chunk's worker calls after each segment (None: nobody is listening)."""
        return ProgressSlot(self.path, chunk_id) if self.path else None

    def report(self, done: int | None = None) -> None:
        """Tell `on_progress` of segments finished since the last report (at least `done` in all, when given).

        A chunk retried after its worker died counts again from zero in its slot; progress only moves forward.
        """
        if self.on_progress is None:
            return
        counts = np.frombuffer(Path(self.path).read_bytes(), dtype="<i8")
        seen = max(int(counts.sum()), done or 0)
        step = min(seen, self.total) - self.reported
        if step > 0:
            self.reported += step
            self.on_progress(step)


def _new_pool(workers: int) -> ProcessPoolExecutor:
    # No idle timeout: the pool lives exactly as long as the engine holds it.
    return ProcessPoolExecutor(max_workers=workers)


def _lost(bounds: list[tuple[int, int, int]], spec: SegmentSpec, error: str) -> list[SegmentResult]:
    return [
        SegmentResult(index, FAILED, hi - lo, f"{spec.fingerprint}-{hi - lo}-lost", error=error)
        for index, lo, hi in bounds
    ]
