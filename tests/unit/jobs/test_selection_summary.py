"""What a training run says of its selection: which winners are rules."""

from __future__ import annotations

import json

import pytest

from manymodels.errors import DataError
from manymodels.jobs.selection import fleet_choice
from manymodels.segment.fit import SegmentResult
from manymodels.segment.spec import Candidate, SegmentSpec


def test_an_ensemble_of_rules_alone_counts_as_a_baseline() -> None:
    """A fleet won by the mean of naive and drift has not beaten a naive rule: it says so as when naive wins."""
    spec = SegmentSpec(segment_by=("s",), label="y", features=(), candidates=(
        Candidate("lgbm"), Candidate("naive", "baseline", method="naive"),
        Candidate("drift", "baseline", method="drift"),
        Candidate("rules", "ensemble", members=("naive", "drift")),
        Candidate("mixed", "ensemble", members=("lgbm", "naive"))))
    assert spec.rules() == ["naive", "drift", "rules"]


def test_the_fleet_takes_the_candidate_nearest_each_segments_best_by_median() -> None:
    """Selection rule fleet: each candidate's window error divided by the segment's best, the lowest median over the
    segments wins (scale-free: a segment of thousands weighs as one of units); a failure is infinitely worse; ties
    go to the candidate listed first; segments with nothing to divide by are left out."""
    spec = SegmentSpec(segment_by=("s",), label="y", features=(), candidates=(
        Candidate("a"), Candidate("b"), Candidate("c", "baseline", method="naive")))

    def result(means: dict[str, float | None], status: str = "ok") -> SegmentResult:
        scores = {n: ({"mean": m} if m is not None else {"mean": None, "error": "failed"}) for n, m in means.items()}
        return SegmentResult(0, status, 10, "f", cv_scores=json.dumps(scores))

    results = [result({"a": 1.0, "b": 2.0, "c": 3.0}),  # ratios a 1, b 2, c 3
               result({"a": 3000.0, "b": 1000.0, "c": 2000.0}),  # a 3, b 1, c 2: its scale does not matter
               result({"a": 2.0, "b": None, "c": 4.0}),  # b failed here: infinitely worse
               result({"a": 0.0, "b": 1.0, "c": 1.0}),  # an exact candidate: nothing to divide by, left out
               result({}, status="failed")]
    chosen, ratios = fleet_choice(results, spec)
    assert ratios == {"a": 1.0, "b": 2.0, "c": 2.0} and chosen == "a"
    tie, _ = fleet_choice([result({"a": 2.0, "b": 1.0, "c": 1.0})], spec)
    assert tie == "b"  # b and c both at 1: the first listed
    with pytest.raises(DataError, match="no sampled segment could be scored"):
        fleet_choice([result({}, status="failed")], spec)
