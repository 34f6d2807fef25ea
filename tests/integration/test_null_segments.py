"""Rows with a null segment key: dropped and said (the default), a segment of their own, or a failure; never
pooled silently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import manymodels as mm
from helpers import edit_bundle, segment_frame, write_bundle
from manymodels.errors import DataError


def fleet(root: Path, policy: str | None) -> mm.Project:
    frame = segment_frame(segments=4, rows=40)
    frame.loc[frame["segment"] == "seg_003", "segment"] = None  # 40 rows with no key
    write_bundle(root, frame=frame)
    if policy is not None:
        edit_bundle(root / "manymodels.yml",
                    lambda doc: doc["resources"]["models"]["demand"].update(null_segments=policy))
    return mm.load_bundle(root)


def test_null_keys_are_dropped_and_said_by_default(tmp_path: Path) -> None:
    outcome = fleet(tmp_path, None).train("demand", workers=1)
    assert len(outcome.manifest) == 3 and outcome.manifest["segment"].notna().all()
    assert any("40 rows with a null in segment column(s) segment were left out" in line for line in outcome.warnings)


def test_null_keys_as_a_segment_of_their_own(tmp_path: Path) -> None:
    outcome = fleet(tmp_path, "own").train("demand", workers=1)
    assert len(outcome.manifest) == 4 and int(outcome.manifest["segment"].isna().sum()) == 1
    assert np.isfinite(outcome.manifest.loc[outcome.manifest["segment"].isna(), "rmse"]).all()


def test_null_keys_fail_the_training_with_its_line(tmp_path: Path) -> None:
    project = fleet(tmp_path, "fail")
    with pytest.raises(DataError, match=r"manymodels.yml:\d+: 40 rows of 'train' have a null in segment column"):
        project.train("demand", workers=1)
    assert project.runs("demand") == []  # before any run


def test_the_bundle_refuses_another_policy(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="null_segments"):
        fleet(tmp_path, "pool")
