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


def test_the_regret_is_the_winners_holdout_error_minus_the_best_candidates() -> None:
    """`selection.regret`: per segment, from each candidate's holdout error in its scores; the fleet's median and
    mean, and how many segments chose the holdout's best; the report shows them; segments without holdout errors
    (not measured) count in none of it."""
    import pandas as pd

    from manymodels.jobs.selection import selection_summary
    from manymodels.registry import manifest as mf
    from manymodels.report.sections import selection_section
    from manymodels.segment.spec import Validation

    spec = SegmentSpec(segment_by=("s",), label="y", features=(), validation=Validation(kind="time", windows=2),
                       candidates=(Candidate("a"), Candidate("b")))
    scores = [{"a": {"mean": 1.0, "holdout": 2.0}, "b": {"mean": 1.5, "holdout": 1.5}},  # chose a: regret 0.5
              {"a": {"mean": 1.0, "holdout": 1.0}, "b": {"mean": 2.0, "holdout": 3.0}},  # chose a, the best: 0
              {"a": {"mean": 3.0, "holdout": 4.0}, "b": {"mean": 1.0, "holdout": 1.0}},  # chose b, the best: 0
              {"a": {"mean": 1.0}, "b": {"mean": 2.0}}]  # not measured
    manifest = pd.DataFrame({"s": list("wxyz"), mf.STATUS: "ok", mf.CANDIDATE: ["a", "a", "b", "a"],
                             mf.CV_SCORES: [json.dumps(s) for s in scores], mf.CV_MEAN: [1.0, 1.0, 1.0, 1.0],
                             mf.CV_STD: 0.0, mf.CV_BASELINE: float("nan"), mf.CV_FOLDS: 2, mf.PARAMS: "{}"})
    assert mf.selection_regrets(manifest).tolist()[:3] == [0.5, 0.0, 0.0]
    assert mf.selection_regrets(manifest).isna().tolist() == [False, False, False, True]
    summary = selection_summary(manifest, spec)
    assert summary["regret_p50"] == 0.0 and summary["regret_mean"] == pytest.approx(0.5 / 3)
    assert summary["segments_chose_best"] == 2.0
    section = selection_section(manifest)
    assert section is not None
    assert ("chose the holdout's best", "2 of 3") in section.facts
    assert "Selection's regret on the holdout" in json.dumps([c.figure for c in section.charts])


def test_the_report_and_the_summary_give_interval_coverage_per_level() -> None:
    """A forecast run's intervals on the holdout: the summary's median coverage per level and how many segments
    had one; the report's facts, saying how many had too few window errors for a level."""
    import pandas as pd

    from manymodels.jobs.selection import interval_summary
    from manymodels.registry import manifest as mf
    from manymodels.report.sections import forecast_section

    scores = [{"80": {"coverage": 0.75, "winkler": 10.0}, "95": {"coverage": None, "winkler": None}},
              {"80": {"coverage": 1.0, "winkler": 12.0}, "95": {"coverage": None, "winkler": None}},
              {"80": {"coverage": 0.5, "winkler": 20.0}, "95": {"coverage": None, "winkler": None}}]
    manifest = pd.DataFrame({"s": list("xyz"), mf.STATUS: "ok", mf.INTERVAL_SCORES: [json.dumps(s) for s in scores],
                             mf.STEP_METRIC: json.dumps([1.0, 2.0]), mf.HOLDOUT_NAIVE: 2.0, "rmse": 1.5})
    assert interval_summary(manifest) == {"coverage_80_p50": 0.75, "segments_with_interval_80": 3.0}
    section = forecast_section(manifest, "rmse")
    assert section is not None
    facts = dict(section.facts)
    assert facts["80% interval (holdout)"] == "median coverage 75%, median Winkler score 12"
    assert facts["95% interval (holdout)"] == "none: all 3 segments had too few window errors for it"
