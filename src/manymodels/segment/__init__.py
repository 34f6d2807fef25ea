"""The segment layer: the pure per-segment work every engine maps (split, fit, evaluate, serialize)."""

from manymodels.segment.fit import SegmentResult, fit_chunk, fit_segment
from manymodels.segment.metrics import compute_metrics, metric_names
from manymodels.segment.shards import read_shard, shard_name
from manymodels.segment.spec import SegmentSpec

__all__ = [
    "SegmentResult",
    "SegmentSpec",
    "compute_metrics",
    "fit_chunk",
    "fit_segment",
    "metric_names",
    "read_shard",
    "shard_name",
]
