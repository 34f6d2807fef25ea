"""Training on Spark through the Python API, with a session the caller already has (as in a notebook)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import manymodels as mm
from helpers import segment_frame, write_bundle


@pytest.mark.slow
def test_train_on_a_callers_spark_session_matches_the_local_engine(tmp_path: Path, spark: Any) -> None:
    frame = segment_frame(segments=6, rows=80)
    write_bundle(tmp_path, frame=frame)
    project = mm.load_bundle(tmp_path)
    on_spark = project.train("demand", spark=spark)
    local = project.train("demand", workers=1)
    assert spark.sparkContext._jsc is not None  # the caller's session is left running
    assert on_spark.summary["segments_ok"] == 6
    from mlflow.tracking import MlflowClient

    client = MlflowClient(project.tracking_uri)
    assert client.get_run(on_spark.run_id).data.params["engine"] == "spark"
    assert client.get_run(local.run_id).data.params["engine"] == "local"
    a = on_spark.metrics.sort_values("segment").reset_index(drop=True)
    b = local.metrics.sort_values("segment").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-9)
    inputs = frame.drop(columns=["label"])
    spark_scores = project.score("demand", inputs, run_id=on_spark.run_id)["prediction"]
    local_scores = project.score("demand", inputs, run_id=local.run_id)["prediction"]
    pd.testing.assert_series_equal(spark_scores, local_scores)


@pytest.mark.slow
def test_no_java_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from helpers import edit_bundle

    path = write_bundle(tmp_path, frame=segment_frame(segments=2, rows=30))
    edit_bundle(path, lambda doc: doc["targets"]["dev"].update(engine={"kind": "spark", "master": "local[1]"}))
    env = {**os.environ, "JAVA_HOME": str(tmp_path / "no-java-here")}
    done = subprocess.run([str(Path(sys.executable).with_name("manymodels")), "train", "demand"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot start Spark master local[1]:") and "Java 17+" in last
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".manymodels" / "mlflow.db").exists()  # nothing tracked: it failed before the run


@pytest.mark.slow
def test_score_on_spark_matches_local_scoring(tmp_path: Path, spark: Any) -> None:
    frame = segment_frame(segments=5, rows=60)
    write_bundle(tmp_path, frame=frame)
    project = mm.load_bundle(tmp_path)
    run = project.train("demand", workers=1)
    inputs = frame.drop(columns=["label"])
    unseen = inputs.head(7).assign(segment="never_seen", record_id=lambda f: f["record_id"] + 10_000)
    inputs = pd.concat([inputs, unseen], ignore_index=True)
    inputs.to_parquet(tmp_path / "to_score.parquet", index=False)
    written = project.score("demand", str(tmp_path / "to_score.parquet"), output=tmp_path / "spark_scores",
                            spark=spark, partition_by_segment=True)
    assert sorted(p.name for p in (tmp_path / "spark_scores").iterdir() if p.is_dir())[:1] == ["segment=never_seen"]
    on_spark = written.toPandas().sort_values("record_id").reset_index(drop=True)
    local = project.score("demand", inputs, run_id=run.run_id).sort_values("record_id").reset_index(drop=True)
    assert on_spark["prediction"].isna().sum() == 7
    pd.testing.assert_series_equal(on_spark["prediction"].astype("Float64"), local["prediction"],
                                   check_exact=False, atol=1e-12)
