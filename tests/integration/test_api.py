"""The Python API on the shapes users bring: several segment columns, CSV data, binary labels, time splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import manymodels as mm
from helpers import edit_bundle, model_block, segment_frame, write_bundle


def test_several_segment_columns_train_score_and_select(tmp_path: Path) -> None:
    frame = segment_frame(segments=4, rows=60)
    frame["region"] = np.where(frame["segment"].isin(["seg_000", "seg_001"]), "north", "south")
    frame["store"] = frame["segment"].str[-1].astype(int)  # an integer segment column
    models = {"demand": model_block(segment_by=["region", "store"])}
    write_bundle(tmp_path, frame=frame, models=models)
    project = mm.load_bundle(tmp_path)
    run = project.train("demand", workers=1)
    assert list(run.metrics.columns[:2]) == ["region", "store"]
    assert len(run.metrics) == 4 and (run.metrics["status"] == "ok").all()
    scored = project.score("demand", frame.drop(columns=["label"]))
    assert scored["prediction"].notna().all()
    # the integer key column arriving as text still finds its model
    as_text = frame.drop(columns=["label"]).assign(store=lambda f: f["store"].astype(str))
    assert project.score("demand", as_text)["prediction"].notna().all()
    only = project.train("demand", segments=["north|1"], workers=1)
    assert only.metrics[["region", "store"]].values.tolist() == [["north", 1]]


def test_csv_dataset(tmp_path: Path) -> None:
    write_bundle(tmp_path)
    frame = segment_frame(segments=3, rows=50)
    frame.to_csv(tmp_path / "data" / "train.csv", index=False)
    edit_bundle(tmp_path / "manymodels.yml", lambda doc: doc["resources"]["datasets"]["train"].update(
        format="csv", path="${var.data_root}/train.csv"))
    project = mm.load_bundle(tmp_path)
    assert project.config.resolved.resources.datasets["train"].format == "csv"
    assert project.validate() == []
    summary = project.train("demand", workers=1).summary
    assert summary["segments_ok"] == 3 and f"{summary['segments_ok']} of {summary['segments_total']}" == "3 of 3"
    assert isinstance(summary["rows_total"], int) and isinstance(summary["wall_seconds"], float)  # counts print as 3


def test_binary_classification_end_to_end(tmp_path: Path) -> None:
    frame = segment_frame(segments=3, rows=200)
    frame["label"] = (frame["f0"] > 0.5).astype(int)
    models = {"churn": model_block(task="binary", metric="auc")}
    path = write_bundle(tmp_path, frame=frame, models=models)
    edit_bundle(path, lambda doc: doc["resources"].pop("jobs"))
    project = mm.load_bundle(tmp_path)
    run = project.train("churn", workers=1)
    assert set(run.summary) >= {"auc_mean", "logloss_p50", "accuracy_p95"}
    assert run.metrics["auc"].min() > 0.9
    scored = project.score("churn", frame.drop(columns=["label"]))
    assert scored["prediction"].between(0, 1).all()


def test_time_split_from_the_bundle(tmp_path: Path) -> None:
    frame = segment_frame(segments=2, rows=100)
    frame["day"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(frame.groupby("segment").cumcount(), unit="D")
    write_bundle(tmp_path, frame=frame, models={"demand": model_block(split={"by": "day", "cutoff": "2026-03-22"})})
    run = mm.load_bundle(tmp_path).train("demand", workers=1)
    assert run.manifest["n_test"].tolist() == [20, 20]


def test_metric_that_does_not_fit_the_task(tmp_path: Path) -> None:
    write_bundle(tmp_path, models={"demand": model_block(metric="auc")})
    with pytest.raises(mm.BundleError, match="metric 'auc' does not fit task regression; use one of rmse, mae"):
        mm.load_bundle(tmp_path)


def test_unknown_model_and_job_names(tmp_path: Path) -> None:
    write_bundle(tmp_path)
    project = mm.load_bundle(tmp_path)
    with pytest.raises(mm.BundleError, match=r"no model 'demnd' in resources.models \(did you mean 'demand'\?\)"):
        project.train("demnd")
    with pytest.raises(mm.BundleError, match=r"no job 'weekley' in resources.jobs \(did you mean 'weekly'\?\)"):
        project.run("weekley")


def test_score_a_file_path_and_a_missing_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = segment_frame(segments=2, rows=40)
    write_bundle(tmp_path, frame=frame)
    project = mm.load_bundle(tmp_path)
    project.train("demand", workers=1)
    frame.drop(columns=["label"]).to_csv(tmp_path / "fresh.csv", index=False)
    monkeypatch.chdir(tmp_path)
    scored = project.score("demand", "fresh.csv", output=tmp_path / "out.parquet")
    assert scored["prediction"].notna().all()
    assert pd.read_parquet(tmp_path / "out.parquet")["prediction"].notna().all()
    with pytest.raises(mm.DataError, match="neither a dataset of the bundle"):
        project.score("demand", "nope.parquet")
    with pytest.raises(mm.DataError, match=r"input lacks column\(s\) f2"):
        project.score("demand", frame.drop(columns=["f2"]))


def test_a_pack_scores_the_same_in_batches_as_in_one_call(tmp_path: Path) -> None:
    """How a Spark executor scores: one batch of rows at a time, with only a few models kept loaded."""
    from helpers import latest_pack
    from manymodels.registry import Pack

    frame = segment_frame(segments=6, rows=40)
    write_bundle(tmp_path, frame=frame)
    project = mm.load_bundle(tmp_path)
    project.train("demand", workers=1)
    root = latest_pack(project).root
    inputs = frame.drop(columns=["label"]).sort_values("segment", kind="stable").reset_index(drop=True)
    whole = Pack(root).predict(inputs)["prediction"]
    pack = Pack(root, cache_models=2)
    parts = [pack.predict(inputs.iloc[lo : lo + 37])["prediction"] for lo in range(0, len(inputs), 37)]
    assert len(pack._models) <= 2
    pd.testing.assert_series_equal(pd.concat(parts), whole)


def test_a_delta_table_trains_and_scores_on_the_local_engine(tmp_path: Path) -> None:
    """format: delta, read with deltalake (no Spark): the same models as from the same rows in Parquet."""
    from deltalake import write_deltalake

    from helpers import write_delta_bundle

    frame = segment_frame(segments=4, rows=50)
    write_delta_bundle(tmp_path, frame)
    project = mm.load_bundle(tmp_path)
    assert project.validate() == []
    on_delta = project.train("demand", workers=1)
    assert on_delta.summary["segments_ok"] == 4
    write_deltalake(str(tmp_path / "to_score_delta"), frame.drop(columns=["label"]))
    scored = project.score("demand", str(tmp_path / "to_score_delta"))  # a Delta folder given as a path
    assert scored["prediction"].notna().all() and len(scored) == len(frame)
    edit_bundle(tmp_path / "manymodels.yml", lambda doc: doc["resources"]["datasets"].update(
        train={"format": "parquet", "path": "data/train.parquet"}))
    on_parquet = mm.load_bundle(tmp_path).train("demand", workers=1)
    pd.testing.assert_frame_equal(on_delta.metrics, on_parquet.metrics)


def test_a_folder_that_is_not_a_delta_table_is_named(tmp_path: Path) -> None:
    write_bundle(tmp_path)
    (tmp_path / "data" / "not_delta").mkdir()
    edit_bundle(tmp_path / "manymodels.yml", lambda doc: doc["resources"]["datasets"].update(
        train={"format": "delta", "path": "data/not_delta"}))
    with pytest.raises(mm.DataError, match=r"not_delta: delta table not found \(no _delta_log folder\)"):
        mm.load_bundle(tmp_path).train("demand", workers=1)
