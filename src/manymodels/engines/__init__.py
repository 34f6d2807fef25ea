"""The engines layer: every fleet operation (fit, fingerprint, score, evaluate) mapped over chunks of segments."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from manymodels.engines.base import Dataset, Engine, Fleet, PreparedData, Scored, prepare, segment_labels
from manymodels.engines.chunking import plan_chunks
from manymodels.engines.local import LocalEngine
from manymodels.engines.operations import Contender

if TYPE_CHECKING:
    from manymodels.bundle.settings import EngineSpec

__all__ = [
    "Contender",
    "Dataset",
    "Engine",
    "Fleet",
    "LocalEngine",
    "PreparedData",
    "Scored",
    "make_engine",
    "open_engine",
    "plan_chunks",
    "prepare",
    "segment_labels",
]


def make_engine(
    kind: str,
    workers: int | None = None,
    options: dict[str, Any] | None = None,
    session: Any = None,
    max_chunk_rows: int | None = None,
) -> Engine:
    """The engine a target names: `local` (a process pool) or `spark` (a session, or one built from options)."""
    if kind == "spark" or session is not None:
        from manymodels.engines.spark import SparkEngine

        return SparkEngine(session=session, workers=workers, **(options or {}))
    return LocalEngine(workers, max_chunk_rows=max_chunk_rows)


@contextmanager
def open_engine(spec: EngineSpec, spark: Any = None, workers: int | None = None) -> Iterator[Engine]:
    """The target's engine for the length of a `with` block; closes what it started (a pool, a session it built).

    Args:
        spec: the target's `engine:` settings.
        spark: a SparkSession to adopt (a notebook's) instead of the target's engine; it is left running.
        workers: overrides `spec.workers`.
    """
    options = spec.spark_options() if spec.kind == "spark" else None
    engine = make_engine(spec.kind, workers or spec.workers, options, session=spark, max_chunk_rows=spec.max_chunk_rows)
    try:
        yield engine
    finally:
        engine.close()
