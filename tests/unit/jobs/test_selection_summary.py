"""What a training run says of its selection: which winners are rules."""

from __future__ import annotations

from manymodels.jobs.selection import rules
from manymodels.segment.spec import Candidate, SegmentSpec


def test_an_ensemble_of_rules_alone_counts_as_a_baseline() -> None:
    """A fleet won by the mean of naive and drift has not beaten a naive rule: it says so as when naive wins."""
    spec = SegmentSpec(segment_by=("s",), label="y", features=(), candidates=(
        Candidate("lgbm"), Candidate("naive", "baseline", method="naive"),
        Candidate("drift", "baseline", method="drift"),
        Candidate("rules", "ensemble", members=("naive", "drift")),
        Candidate("mixed", "ensemble", members=("lgbm", "naive"))))
    assert rules(spec) == ["naive", "drift", "rules"]
