"""What every segment of a model family is fitted with: plain, picklable, no client handles."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class SegmentSpec:
    """The per-segment recipe of one model family.

    Attributes:
        segment_by: the columns whose values name a segment.
        label: the column to predict.
        features: the model's input columns, in order.
        task: `regression` or `binary`.
        estimator: `lightgbm`, `sklearn` or `python`.
        entry: the estimator's import path (sklearn, python).
        params: the estimator's parameters, as given in the bundle.
        test_size: holdout fraction of a random split.
        seed: the random split's seed.
        split_by: the time column of a time split, or None for a random split.
        cutoff: rows with `split_by` before it train, the rest are the holdout.
        min_rows: segments with fewer rows fail (the fallback model serves them, once it exists).
        metric: the primary metric.
        import_roots: folders put on sys.path so a project's own estimators import.
        impute: fill missing feature values (`median`, `zero`) before a sklearn or python estimator.
    """

    segment_by: tuple[str, ...]
    label: str
    features: tuple[str, ...]
    task: str = "regression"
    estimator: str = "lightgbm"
    entry: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    test_size: float = 0.2
    seed: int = 42
    split_by: str | None = None
    cutoff: str | None = None
    min_rows: int = 5
    metric: str = "rmse"
    import_roots: tuple[str, ...] = ()
    impute: str | None = None

    @property
    def fingerprint(self) -> str:
        """A hash of everything that changes what a segment's model would be, given the same rows."""
        spec = asdict(self)
        spec.pop("import_roots")
        if spec["impute"] is None:  # a field newer than most fingerprints: unset, it changes none of them
            spec.pop("impute")
        text = json.dumps(spec, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def columns(self) -> list[str]:
        """The columns training reads: segments, features, label and the split's time column."""
        cols = [*self.segment_by, *self.features, self.label]
        if self.split_by:
            cols.append(self.split_by)
        return list(dict.fromkeys(cols))
