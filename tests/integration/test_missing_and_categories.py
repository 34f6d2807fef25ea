"""Real data has holes and words: missing feature values and text categories, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import manymodels as mm
from helpers import model_block, segment_frame, with_channel, write_bundle


def test_lightgbm_takes_text_categories_and_missing_values(tmp_path: Path) -> None:
    frame = with_channel(segment_frame(segments=3, rows=200))
    block = model_block(features=["f0", "f1", "f2", "channel"])
    write_bundle(tmp_path, frame=frame, models={"demand": block})
    project = mm.load_bundle(tmp_path)
    assert project.validate() == []
    run = project.train("demand", workers=1)
    assert run.summary["segments_ok"] == 3 and run.summary["segments_constant"] == 0
    assert run.metrics["rmse"].max() < 3.0  # the channel's +-6 was learnt

    rows = frame.drop(columns=["label"]).groupby("segment").head(1).reset_index(drop=True)
    known = project.score("demand", rows)["prediction"].astype(float)
    unseen = project.score("demand", rows.assign(channel="mail"))["prediction"].astype(float)
    missing = project.score("demand", rows.assign(channel=None))["prediction"].astype(float)
    assert known.notna().all() and unseen.notna().all()
    np.testing.assert_array_equal(unseen.to_numpy(), missing.to_numpy())  # an unseen category is missing
    web = project.score("demand", rows.assign(channel="web"))["prediction"].astype(float)
    phone = project.score("demand", rows.assign(channel="phone"))["prediction"].astype(float)
    assert (web - phone).min() > 6.0  # each segment's own codes: web and phone are 12 apart in truth


def test_missing_values_for_an_estimator_that_cannot_take_them_fail_that_segment_by_name(tmp_path: Path) -> None:
    frame = segment_frame(segments=3, rows=60)
    frame.loc[(frame["segment"] == "seg_001") & (frame.index % 4 == 0), "f2"] = np.nan
    gaps = int(frame.loc[frame["segment"] == "seg_001", "f2"].isna().sum())
    ridge = model_block(estimator={"type": "sklearn", "entry": "sklearn.linear_model.Ridge"})
    write_bundle(tmp_path, frame=frame, models={"demand": ridge})
    run = mm.load_bundle(tmp_path).train("demand", workers=1)
    assert run.summary["segments_ok"] == 2
    (error,) = run.failed["error"].tolist()
    assert error == (f"missing values in feature(s) 'f2' ({gaps} of 60), which sklearn.linear_model.Ridge may not "
                     "take: set impute (median or zero), fill them in a feature step (a python task), or use "
                     "estimator type lightgbm")


def test_impute_fills_missing_values_for_sklearn_in_training_and_scoring(tmp_path: Path) -> None:
    frame = segment_frame(segments=3, rows=60)
    frame.loc[frame.index % 4 == 0, "f2"] = np.nan
    ridge = {"type": "sklearn", "entry": "sklearn.linear_model.Ridge"}
    write_bundle(tmp_path, frame=frame, models={"demand": model_block(estimator=ridge, impute="zero")})
    project = mm.load_bundle(tmp_path)
    run = project.train("demand", workers=1)
    assert run.summary["segments_ok"] == 3
    rows = frame.drop(columns=["label"]).head(12).assign(f2=np.nan)
    holes = project.score("demand", rows)["prediction"].astype(float)
    zeros = project.score("demand", rows.assign(f2=0.0))["prediction"].astype(float)
    np.testing.assert_array_equal(holes.to_numpy(), zeros.to_numpy())  # filled as training filled: with 0

    write_bundle(tmp_path / "median", frame=frame, models={"demand": model_block(estimator=ridge, impute="median")})
    median = mm.load_bundle(tmp_path / "median")
    assert median.train("demand", workers=1).summary["segments_ok"] == 3
    assert median.score("demand", rows)["prediction"].notna().all()


def test_impute_with_lightgbm_is_a_bundle_error(tmp_path: Path) -> None:
    write_bundle(tmp_path, models={"demand": model_block(impute="median")})
    with pytest.raises(mm.BundleError, match="impute is for sklearn and python estimators; LightGBM takes missing "
                                              "values as they are: remove it"):
        mm.load_bundle(tmp_path)
