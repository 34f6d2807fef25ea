"""The local engine: a process pool on this machine, one single-threaded fit per core."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from manymodels.engines.base import PreparedData, Progress
from manymodels.engines.chunking import plan_chunks
from manymodels.segment import SegmentResult, SegmentSpec, fit_chunk
from manymodels.segment.fit import FAILED


class LocalEngine:
    """Fits chunks of segments on a pool of `workers` processes (default: the machine's cores).

    Args:
        workers: processes in the pool; 1 fits in this process.
        max_chunk_rows: an upper bound on the rows of one chunk (more, smaller tasks).
    """

    def __init__(self, workers: int | None = None, max_chunk_rows: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.max_chunk_rows = max_chunk_rows

    def fit(
        self,
        data: PreparedData,
        spec: SegmentSpec,
        shard_dir: str,
        on_progress: Progress | None = None,
    ) -> list[SegmentResult]:
        """Fit every segment; each chunk's models land in one shard in `shard_dir`."""
        chunks = plan_chunks(data.sizes, self.workers, self.max_chunk_rows)
        results: list[SegmentResult] = []
        workers = min(self.workers, len(chunks))
        tasks = [self._task(data, chunk_id, first, end) for chunk_id, (first, end) in enumerate(chunks)]
        if workers <= 1:
            for frame, bounds, chunk_id in tasks:
                done = fit_chunk(frame, bounds, spec, chunk_id, shard_dir)
                results += done
                if on_progress:
                    on_progress(len(done))
            return sorted(results, key=lambda r: r.index)
        # spawn, not fork: a forked child inherits OpenMP state that deadlocks LightGBM.
        context = multiprocessing.get_context("spawn")
        largest_first = sorted(tasks, key=lambda t: -len(t[0]))
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures: dict[Future[list[SegmentResult]], list[tuple[int, int, int]]] = {
                pool.submit(fit_chunk, frame, bounds, spec, chunk_id, shard_dir): bounds
                for frame, bounds, chunk_id in largest_first
            }
            for future in as_completed(futures):
                bounds = futures[future]
                try:
                    done = future.result()
                except BrokenProcessPool as exc:
                    done = _lost(bounds, data, spec, f"worker process died: {exc}")
                except Exception as exc:  # noqa: BLE001 - a chunk's trouble fails its segments, not the run
                    done = _lost(bounds, data, spec, f"{type(exc).__name__}: {exc}")
                results += done
                if on_progress:
                    on_progress(len(done))
        return sorted(results, key=lambda r: r.index)

    @staticmethod
    def _task(data: PreparedData, chunk_id: int, first: int, end: int) -> tuple:
        lo, hi = int(data.starts[first]), int(data.starts[end])
        bounds = [(i, int(data.starts[i]) - lo, int(data.starts[i + 1]) - lo) for i in range(first, end)]
        return data.frame.iloc[lo:hi], bounds, chunk_id


def _lost(
    bounds: list[tuple[int, int, int]], data: PreparedData, spec: SegmentSpec, error: str
) -> list[SegmentResult]:
    return [
        SegmentResult(index, FAILED, hi - lo, f"{spec.fingerprint}-{hi - lo}-lost", error=error)
        for index, lo, hi in bounds
    ]
