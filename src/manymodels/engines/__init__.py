"""The engines layer: one map of the pure per-chunk work over a fleet's segments."""

from manymodels.engines.base import Engine, PreparedData, prepare
from manymodels.engines.chunking import plan_chunks
from manymodels.engines.local import LocalEngine

__all__ = ["Engine", "LocalEngine", "PreparedData", "plan_chunks", "prepare"]
