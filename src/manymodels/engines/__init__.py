"""The engines layer: read a dataset as a fleet of segments, map the pure per-chunk fit over it."""

from __future__ import annotations

from typing import Any

from manymodels.engines.base import Engine, Fleet, PreparedData, prepare, segment_labels
from manymodels.engines.chunking import plan_chunks
from manymodels.engines.local import LocalEngine

__all__ = ["Engine", "Fleet", "LocalEngine", "PreparedData", "make_engine", "plan_chunks", "prepare", "segment_labels"]


def make_engine(
    kind: str, workers: int | None = None, options: dict[str, Any] | None = None, session: Any = None
) -> Engine:
    """The engine a target names: `local` (a process pool) or `spark` (a session, or one built from options)."""
    if kind == "spark" or session is not None:
        from manymodels.engines.spark import SparkEngine

        return SparkEngine(session=session, workers=workers, **(options or {}))
    return LocalEngine(workers)
