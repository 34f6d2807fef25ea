"""Fallback models: thin, failed and unseen segments are predicted by a global or per-parent-group model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import manymodels as mm
from helpers import latest_pack, model_block, segment_frame, write_bundle
from manymodels.cli.main import app
from manymodels.registry import Pack

runner = CliRunner()
THIN = ["seg_005", "seg_006"]


def regional(rows: int = 80) -> pd.DataFrame:
    """Seven segments in two regions; THIN segments have 10 rows (below min_rows 30)."""
    frame = segment_frame(segments=7, rows=rows)
    frame["region"] = np.where(frame["segment"].isin(["seg_000", "seg_001", "seg_005"]), "north", "south")
    thin = frame["segment"].isin(THIN)
    keep = ~thin | (frame.groupby("segment").cumcount() < 10)
    return frame[keep].reset_index(drop=True)


def to_score(frame: pd.DataFrame) -> pd.DataFrame:
    """Known segments, plus an unseen one in a known region and one in an unknown region."""
    known = frame.drop(columns=["label"]).groupby("segment").head(4)
    unseen = known.head(3).assign(segment="seg_new", region="south")
    nowhere = known.head(2).assign(segment="seg_far", region="west")
    return pd.concat([known, unseen, nowhere], ignore_index=True)


def bundle(root: Path, fallback: Any, engine: dict[str, Any] | None = None) -> tuple[Path, pd.DataFrame]:
    frame = regional()
    models = {"demand": model_block(min_rows=30, fallback=fallback)}
    extra = {"targets": {"dev": {"default": True, **({"engine": engine} if engine else {})}}}
    return write_bundle(root, frame=frame, models=models, score_frame=to_score(frame), extra=extra), frame


def test_global_fallback_serves_thin_and_unseen_segments_and_says_so(tmp_path: Path) -> None:
    path, frame = bundle(tmp_path, "global")
    result = runner.invoke(app, ["--bundle", str(path), "train", "demand", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "fallback" in result.output and "1 ok / 0 failed of 1" in result.output
    result = runner.invoke(app, ["--bundle", str(path), "score", "demand", "--data", "to_score",
                                 "--out", str(tmp_path / "scores.parquet")])
    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    thin_or_new = scores["segment"].isin([*THIN, "seg_new", "seg_far"])
    assert set(scores.loc[thin_or_new, "model_source"]) == {"fallback"}
    assert set(scores.loc[~thin_or_new, "model_source"]) == {"segment"}
    assert scores["prediction"].notna().all()

    project = mm.load_bundle(path)
    pack = latest_pack(project)
    assert pack.fallback is not None and pack.fallback.segment_by == []
    assert int(pack.fallback.manifest["rows"].iloc[0]) == len(frame)  # one model on every row
    direct = pack.fallback.predict(scores.loc[thin_or_new])["prediction"].to_numpy()
    np.testing.assert_array_equal(scores.loc[thin_or_new, "prediction"].to_numpy(), direct)
    assert (pack.manifest.set_index("segment").loc[THIN, "status"] == "failed").all()  # below min_rows

    promoted = project.promote("demand")  # the champion version carries the fallback along
    assert promoted.version is not None
    served = project.score("demand", "to_score")
    assert served["model_source"].tolist() == scores["model_source"].tolist()
    np.testing.assert_array_equal(served["prediction"].to_numpy(), scores["prediction"].to_numpy())


def test_parent_group_fallback_predicts_by_region_and_leaves_unknown_regions_null(tmp_path: Path) -> None:
    path, frame = bundle(tmp_path, {"segment_by": ["region"]})
    project = mm.load_bundle(path)
    run = project.train("demand", workers=1)
    assert run.summary["fallback_ok"] == 2
    scores = project.score("demand", "to_score")
    by_segment = {seg: set(group.dropna()) or {None} for seg, group in scores.groupby("segment")["model_source"]}
    assert by_segment["seg_new"] == {"fallback"} and by_segment["seg_005"] == {"fallback"}
    assert by_segment["seg_far"] == {None}  # region west has no model either
    assert scores.loc[scores["segment"] == "seg_far", "prediction"].isna().all()
    pack = Pack(Path(str(latest_pack(project).root)))
    assert pack.fallback is not None
    south = pack.fallback.predict(scores[scores["segment"] == "seg_new"])["prediction"].to_numpy()
    np.testing.assert_array_equal(scores.loc[scores["segment"] == "seg_new", "prediction"].to_numpy(), south)


def test_a_fallback_column_missing_from_the_data_is_a_located_error(tmp_path: Path) -> None:
    path, _ = bundle(tmp_path, {"segment_by": ["regoin"]})
    result = runner.invoke(app, ["--bundle", str(path), "validate"])
    assert result.exit_code == 2
    assert "resources.models.demand.fallback.segment_by[0]: column 'regoin' is not in dataset 'train' " \
           "(did you mean 'region'?)" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("fallback", ["global", {"segment_by": ["region"]}], ids=["global", "region"])
def test_fallback_on_spark_matches_the_local_engine(tmp_path: Path, spark: Any, fallback: Any) -> None:
    path, _ = bundle(tmp_path, fallback)
    project = mm.load_bundle(path)
    on_spark_project = mm.load_bundle(path, spark=spark)
    on_spark = on_spark_project.train("demand")
    local = project.train("demand", workers=1)
    assert on_spark.summary["fallback_ok"] == local.summary["fallback_ok"] == (1 if fallback == "global" else 2)
    inputs = to_score(regional())
    a = project.score("demand", inputs, run_id=on_spark.run_id)
    b = project.score("demand", inputs, run_id=local.run_id)
    pd.testing.assert_frame_equal(a, b)
    out = tmp_path / "spark_scores"
    scored = on_spark_project.score("demand", "to_score", run_id=on_spark.run_id, output=out).toPandas()
    merged = scored.sort_values(["record_id", "segment"]).reset_index(drop=True)
    expected = a.sort_values(["record_id", "segment"]).reset_index(drop=True)
    np.testing.assert_allclose(merged["prediction"].to_numpy(dtype=float, na_value=np.nan),
                               expected["prediction"].to_numpy(dtype=float, na_value=np.nan))
    assert merged["model_source"].fillna("none").tolist() == expected["model_source"].fillna("none").tolist()
