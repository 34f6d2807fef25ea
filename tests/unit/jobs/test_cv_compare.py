"""Champion against challenger on the challenger run's folds: the comparison, and the majority-of-folds rule."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from manymodels.bundle.schema import ModelSpec
from manymodels.jobs.decide import decide
from manymodels.jobs.selection import cv_comparison
from manymodels.segment import SegmentSpec
from manymodels.segment.spec import Candidate, Validation

SPEC = SegmentSpec(
    segment_by=("segment",), label="y", features=("x",), validation=Validation(folds=4),
    candidates=(Candidate("ridge", "sklearn", "sklearn.linear_model.Ridge", {"alpha": 1.0}),
                Candidate("lgbm", space={"num_leaves": {"choices": [4, 8]}}, trials=2),
                Candidate("mean", "baseline", method="mean")),
)


def manifest(rows: list[tuple[str, str, dict[str, Any], dict[str, Any]]]) -> pd.DataFrame:
    """Manifest rows: segment, winning candidate, its params, every candidate's CV summary."""
    return pd.DataFrame({
        "segment": [r[0] for r in rows],
        "status": "ok",
        "candidate": [r[1] for r in rows],
        "params": [json.dumps(r[2]) for r in rows],
        "cv_scores": [json.dumps(r[3]) for r in rows],
    })


def test_the_champions_configuration_is_read_from_the_challengers_folds() -> None:
    scores = {
        "ridge": {"folds": [1.0, 1.0, 1.0, 1.0], "mean": 1.0},
        "lgbm": {"folds": [0.5, 0.9, 1.2, 1.3], "mean": 0.975, "params": {"num_leaves": 8}, "trials": 2},
        "mean": {"folds": [3.0, 3.0, 3.0, 3.0], "mean": 3.0},
    }
    challenger = manifest([
        ("a", "lgbm", {"num_leaves": 8}, scores),  # champion was ridge, alpha 1: on these folds 1.0 each
        ("b", "lgbm", {"num_leaves": 8}, scores),  # champion was lgbm with params this run never tried
        ("c", "ridge", {"alpha": 1.0}, scores),  # champion was ridge with another alpha
        ("d", "lgbm", {"num_leaves": 8}, scores),  # a new segment
    ])
    champion = manifest([
        ("a", "ridge", {"alpha": 1.0}, {}),
        ("b", "lgbm", {"num_leaves": 4}, {}),
        ("c", "ridge", {"alpha": 2.0}, {}),
    ])
    out = cv_comparison(challenger, champion, SPEC).set_index("segment")
    assert list(out.index) == ["a", "b", "c"]
    assert out.loc["a", "cv_champion"] == 1.0 and out.loc["a", "cv_challenger"] == pytest.approx(0.975)
    assert out.loc["a", "cv_folds_won"] == 2 and out.loc["a", "cv_folds"] == 4  # better on 2 folds of 4
    assert np.isnan(out.loc["b", "cv_champion"]) and np.isnan(out.loc["b", "cv_folds_won"])
    assert np.isnan(out.loc["c", "cv_champion"])
    assert cv_comparison(challenger, None, SPEC).empty


def test_a_win_on_the_mean_needs_most_folds() -> None:
    model = ModelSpec(dataset="d", segment_by=["segment"], label="y", validation={"folds": 4})
    table = pd.DataFrame({
        "segment": ["mean_only", "most_folds", "no_folds"],
        "run_status": "ok", "error": None, "train_rows": 100, "rows": 20,
        "challenger": [0.9, 0.9, 0.9], "champion": [1.0, 1.0, 1.0], "has_champion": True,
        "cv_folds_won": [2.0, 3.0, np.nan], "cv_folds": [4, 4, 4],
    })
    out = decide(table, model, "rmse").set_index("segment")
    assert out["status"].to_dict() == {"mean_only": "won", "most_folds": "won", "no_folds": "won"}
    assert out["decision"].to_dict() == {"mean_only": "keep", "most_folds": "promote", "no_folds": "promote"}
    assert "on only 2 of 4 folds against the champion's configuration" in out.loc["mean_only", "reason"]
