"""The promotion policy, segment by segment: status, decision and the reason given."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from manymodels.bundle.schema import ModelSpec
from manymodels.jobs.decide import decide, gate_problems, worst_first

NAN = float("nan")
COLUMNS = ["segment", "run_status", "error", "train_rows", "rows", "challenger", "champion", "has_champion"]


def model(task: str = "regression", metric: str = "rmse", **promotion: Any) -> ModelSpec:
    return ModelSpec(dataset="d", segment_by=["segment"], label="y", task=task, metric=metric, promotion=promotion)


def judged(rows: list[tuple[Any, ...]], spec: ModelSpec) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=COLUMNS)
    return decide(table, spec, spec.promotion_metric).set_index("segment")


def test_each_status_and_decision_with_its_reason() -> None:
    out = judged([
        ("won", "ok", None, 100, 20, 0.9, 1.0, True),
        ("lost", "ok", None, 100, 20, 1.1, 1.0, True),
        ("tied", "ok", None, 100, 20, 1.0, 1.0, True),
        ("new", "ok", None, 100, 20, 1.0, NAN, False),
        ("failed_kept", "failed", "label is constant", 100, 20, NAN, 1.0, True),
        ("failed_none", "failed", "too few rows", 3, 0, NAN, NAN, False),
        ("no_data", "ok", None, 100, 0, NAN, NAN, True),
        ("absent", None, None, NAN, 0, NAN, NAN, True),
    ], model())
    assert out["status"].to_dict() == {
        "won": "won", "lost": "lost", "tied": "tied", "new": "new", "failed_kept": "failed",
        "failed_none": "failed", "no_data": "no_data", "absent": "absent"}
    assert out["decision"].to_dict() == {
        "won": "promote", "lost": "keep", "tied": "keep", "new": "promote", "failed_kept": "keep",
        "failed_none": "none", "no_data": "keep", "absent": "keep"}
    assert out.loc["won", "change"] == pytest.approx(-0.1)
    assert "challenger worse" in out.loc["lost", "reason"] and "+10.00%" in out.loc["lost", "reason"]
    assert out.loc["failed_kept", "reason"] == "challenger failed: label is constant"
    assert np.isnan(out.loc["new", "change"])


def test_min_improvement_is_relative_and_a_small_gain_is_a_tie() -> None:
    out = judged([
        ("small", "ok", None, 100, 20, 0.99, 1.0, True),  # 1% better
        ("big", "ok", None, 100, 20, 0.95, 1.0, True),  # 5% better
    ], model(min_improvement=0.02))
    assert out["status"].to_dict() == {"small": "tied", "big": "won"}
    assert "below min_improvement 0.02" in out.loc["small", "reason"]


def test_higher_is_better_metrics_win_upwards() -> None:
    out = judged([
        ("up", "ok", None, 100, 20, 0.8, 0.7, True),
        ("down", "ok", None, 100, 20, 0.6, 0.7, True),
    ], model(metric="r2"))
    assert out["status"].to_dict() == {"up": "won", "down": "lost"}


def test_the_quality_gate_stops_winners_and_new_segments() -> None:
    out = judged([
        ("too_bad", "ok", None, 100, 20, 2.5, 3.0, True),
        ("thin", "ok", None, 10, 5, 0.5, 1.0, True),
        ("new_bad", "ok", None, 100, 20, 2.5, NAN, False),
        ("fine", "ok", None, 100, 20, 1.5, 3.0, True),
    ], model(max_metric=2.0, min_rows=50))
    assert out["decision"].to_dict() == {"too_bad": "keep", "thin": "keep", "new_bad": "none", "fine": "promote"}
    assert out.loc["too_bad", "reason"] == "gate: rmse 2.5 > promotion.max_metric 2"
    assert out.loc["thin", "reason"] == "gate: 10 rows < promotion.min_rows 50"
    assert out.loc["too_bad", "status"] == "won"  # it did win; the gate keeps it out


def test_nothing_improved_passes_the_gate_with_nothing_to_promote() -> None:
    spec = model(max_failed_fraction=0.25)
    ties = judged([("a", "ok", None, 100, 20, 1.0, 1.0, True), ("b", "ok", None, 100, 20, 1.0, 1.0, True)], spec)
    assert gate_problems(ties, spec) == []
    assert (ties["decision"] == "keep").all()


def test_gate_fails_on_too_many_regressions_or_quality_gate_breaks() -> None:
    spec = model(max_failed_fraction=0.25)
    mixed = judged([
        ("a", "ok", None, 100, 20, 0.5, 1.0, True),
        ("b", "ok", None, 100, 20, 0.5, 1.0, True),
        ("c", "ok", None, 100, 20, 1.5, 1.0, True),
        ("d", "failed", "boom", 100, 20, NAN, 1.0, True),
    ], spec)
    assert gate_problems(mixed, spec) == [
        "2 of 4 segments regress (1 lost, 1 failed: 50.0%), more than promotion.max_failed_fraction 25.0%"]
    assert gate_problems(mixed, model(max_failed_fraction=0.5)) == []
    # Challengers that won but break max_metric need a look too: the gate counts them.
    strict = model(max_failed_fraction=0.25, max_metric=0.4)
    over = judged([
        ("a", "ok", None, 100, 20, 0.5, 1.0, True),
        ("b", "ok", None, 100, 20, 0.5, 1.0, True),
        ("c", "ok", None, 100, 20, 0.3, 1.0, True),
    ], strict)
    assert over[["status", "decision", "over_quality_gate"]].to_dict("index")["a"] == {
        "status": "won", "decision": "keep", "over_quality_gate": True}
    assert gate_problems(over, strict) == [
        "2 of 3 segments regress (0 lost, 0 failed, 2 over the quality gate: 66.7%), more than "
        "promotion.max_failed_fraction 25.0%"]


def test_too_few_evaluation_rows_is_insufficient_not_a_loss() -> None:
    out = judged([
        ("two_rows", "ok", None, 10, 2, 3.0, 1.0, True),
        ("five_rows", "ok", None, 30, 5, 3.0, 1.0, True),
        ("new_thin", "ok", None, 10, 2, 3.0, NAN, False),
    ], model())
    assert out["status"].to_dict() == {"two_rows": "insufficient", "five_rows": "lost", "new_thin": "new"}
    assert out.loc["two_rows", "decision"] == "keep"
    assert "2 evaluation row(s) < promotion.min_eval_rows 5" in out.loc["two_rows", "reason"]
    assert gate_problems(out, model(max_failed_fraction=0.4)) == []  # 1 lost of 3; insufficient is no loss
    fewer = judged([("two_rows", "ok", None, 10, 2, 3.0, 1.0, True)], model(min_eval_rows=2))
    assert fewer.loc["two_rows", "status"] == "lost"


def test_the_table_lists_the_worst_regressions_first() -> None:
    out = worst_first(judged([
        ("tie", "ok", None, 100, 20, 1.0, 1.0, True),
        ("small_loss", "ok", None, 100, 20, 1.05, 1.0, True),
        ("big_win", "ok", None, 100, 20, 0.5, 1.0, True),
        ("big_loss", "ok", None, 100, 20, 2.0, 1.0, True),
        ("failed", "failed", "boom", 100, 20, NAN, 1.0, True),
        ("small_win", "ok", None, 100, 20, 0.9, 1.0, True),
    ], model()).reset_index())
    assert out["segment"].tolist() == ["big_loss", "small_loss", "failed", "big_win", "small_win", "tie"]
    higher = worst_first(judged([
        ("small_loss", "ok", None, 100, 20, 0.69, 0.7, True),
        ("big_loss", "ok", None, 100, 20, 0.3, 0.7, True),
    ], model(metric="r2")).reset_index())
    assert higher["segment"].tolist() == ["big_loss", "small_loss"]


def test_a_forecast_fleet_that_loses_to_naive_on_the_holdout_says_so() -> None:
    from manymodels.jobs.selection import NAIVE_WORSE, naive_summary, naive_warning
    from manymodels.segment.spec import ForecastPlan, SegmentSpec

    spec = SegmentSpec(segment_by=("s",), label="y", features=(), forecast=ForecastPlan(time="t", horizon=4))
    manifest = pd.DataFrame({"s": ["a", "b", "c"], "status": ["ok", "ok", "failed"], "rmse": [3.0, 1.0, np.nan],
                             "holdout_naive": [2.0, 2.5, np.nan]})
    summary = {**naive_summary(manifest, spec), "rmse_p50": 2.0}
    assert summary[NAIVE_WORSE] == 1 and summary["naive_rmse_p50"] == 2.25
    assert naive_warning(summary, spec) is None  # 1 of 2, and the median beats naive's
    worse = {**naive_summary(manifest.assign(rmse=[3.0, 3.0, np.nan]), spec), "rmse_p50": 3.0}
    line = naive_warning(worse, spec)
    assert line is not None and "worse than naive (the last value) on the holdout of 2 of 2 segments" in line
    assert naive_summary(manifest, SegmentSpec(segment_by=("s",), label="y", features=())) == {}


def test_the_holdout_against_naive_is_judged_in_the_primary_metrics_direction() -> None:
    """r2 is better higher, whatever metric selection chose by (rmse here): a higher r2 than naive's is no loss."""
    from manymodels.jobs.selection import NAIVE_WORSE, naive_summary
    from manymodels.segment.spec import ForecastPlan, SegmentSpec, Validation

    spec = SegmentSpec(segment_by=("s",), label="y", features=(), metric="r2",
                       forecast=ForecastPlan(time="t", horizon=4),
                       validation=Validation(kind="time", metric="rmse", maximize=False))
    manifest = pd.DataFrame({"s": ["a", "b"], "status": ["ok", "ok"], "r2": [0.9, 0.1], "holdout_naive": [0.5, 0.5]})
    assert naive_summary(manifest, spec)[NAIVE_WORSE] == 1  # b
    better = manifest.assign(r2=[0.9, 0.8])
    assert naive_summary(better, spec)[NAIVE_WORSE] == 0  # both beat naive's r2
