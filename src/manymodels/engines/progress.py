"""Per-segment progress from pool workers: each writes its chunk's count to an 8-byte slot of a file the
driver polls (nothing to leak or deadlock, unlike a queue through the pool)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from manymodels.engines.base import Progress


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


class Tally:
    """The driver's side of the workers' progress file: reads it, reports what is new to `on_progress`."""

    def __init__(self, chunks: int, total: int, on_progress: Progress | None) -> None:
        self.chunks, self.total, self.on_progress = chunks, total, on_progress
        self.reported = 0
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self.path = ""

    def __enter__(self) -> Tally:
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
