"""Training on Spark through the Python API, with a session the caller already has (as in a notebook)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import manymodels as mm
from helpers import model_block, segment_frame, with_channel, write_bundle
from manymodels.estimators import allow_pickle


@pytest.mark.slow
def test_train_on_a_callers_spark_session_matches_the_local_engine(tmp_path: Path, spark: Any) -> None:
    frame = segment_frame(segments=6, rows=80)
    write_bundle(tmp_path, frame=frame)
    project = mm.load_bundle(tmp_path)
    on_spark = mm.load_bundle(tmp_path, spark=spark).train("demand")
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
    written = mm.load_bundle(tmp_path, spark=spark).score(
        "demand", str(tmp_path / "to_score.parquet"), output=tmp_path / "spark_scores", partition_by_segment=True)
    assert sorted(p.name for p in (tmp_path / "spark_scores").iterdir() if p.is_dir())[:1] == ["segment=never_seen"]
    on_spark = written.toPandas().sort_values("record_id").reset_index(drop=True)
    local = project.score("demand", inputs, run_id=run.run_id).sort_values("record_id").reset_index(drop=True)
    assert on_spark["prediction"].isna().sum() == 7
    pd.testing.assert_series_equal(on_spark["prediction"].astype("Float64"), local["prediction"],
                                   check_exact=False, atol=1e-12)


@pytest.mark.slow
def test_text_categories_and_missing_values_train_and_score_on_spark_as_locally(tmp_path: Path, spark: Any) -> None:
    frame = with_channel(segment_frame(segments=4, rows=120))
    write_bundle(tmp_path, frame=frame, models={"demand": model_block(features=["f0", "f1", "f2", "channel"])})
    project = mm.load_bundle(tmp_path)
    on_spark_project = mm.load_bundle(tmp_path, spark=spark)
    run = on_spark_project.train("demand")
    local = project.train("demand", workers=1)
    a = run.metrics.sort_values("segment").reset_index(drop=True)
    b = local.metrics.sort_values("segment").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-9)
    inputs = frame.drop(columns=["label"])
    inputs.loc[inputs.index % 5 == 0, "channel"] = "mail"  # a category no segment saw
    inputs.to_parquet(tmp_path / "to_score.parquet", index=False)
    written = on_spark_project.score("demand", str(tmp_path / "to_score.parquet"), output=tmp_path / "spark_scores",
                                     run_id=run.run_id)
    on_spark = written.toPandas().sort_values("record_id").reset_index(drop=True)
    here = project.score("demand", inputs, run_id=run.run_id).sort_values("record_id").reset_index(drop=True)
    assert on_spark["prediction"].notna().all()
    pd.testing.assert_series_equal(on_spark["prediction"].astype("Float64"), here["prediction"],
                                   check_exact=False, atol=1e-12)


def test_chunk_labels_get_a_shuffle_partition_each(spark: Any) -> None:
    """Chunk numbers themselves collide under Spark's hash partitioning; the labels must not."""
    from pyspark.sql import functions as F

    from manymodels.engines.spark_session import partition_labels

    for n in (1, 7, 10, 16, 64):
        labels = partition_labels(spark, n)
        assert len(set(labels.tolist())) == n
        frame = spark.createDataFrame(pd.DataFrame({"label": labels}))
        used = frame.repartition(n, "label").select(F.spark_partition_id().alias("p")).distinct().count()
        assert used == n, n
    collide = spark.range(0, 10).repartition(10, "id").select(F.spark_partition_id()).distinct().count()
    assert collide < 10  # why labels are needed: plain 0..9 share partitions


@pytest.mark.slow
def test_unreachable_master_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from helpers import edit_bundle

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write_bundle(tmp_path, frame=segment_frame(segments=2, rows=30))
    for engine, what in (({"kind": "spark", "master": f"spark://127.0.0.1:{port}"}, "Spark master"),
                         ({"kind": "spark", "remote": f"sc://127.0.0.1:{port}"}, "Spark Connect server")):
        edit_bundle(path, lambda doc, e=engine: doc["targets"]["dev"].update(engine=e))
        done = subprocess.run([str(Path(sys.executable).with_name("manymodels")), "train", "demand"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 2, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: cannot reach {what} ") and f"127.0.0.1:{port}" in last, last
        assert "Traceback" not in done.stderr
    assert not (tmp_path / ".manymodels" / "mlflow.db").exists()


@pytest.mark.slow
def test_a_job_runs_on_spark_connect_from_the_cli(tmp_path: Path, local_connect: None) -> None:
    """`manymodels run` on a Spark Connect target: train and score on one session, scores as on the local engine."""
    import subprocess
    import sys

    from helpers import edit_bundle

    frame = segment_frame(segments=4, rows=60)
    path = write_bundle(tmp_path, frame=frame)
    edit_bundle(path, lambda doc: doc["targets"].update(connect={"engine": {"kind": "spark", "remote": "local[2]"}}))
    cli = str(Path(sys.executable).with_name("manymodels"))
    done = subprocess.run([cli, "run", "weekly", "-t", "connect"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    on_connect = pd.read_parquet(tmp_path / "out" / "scores.parquet")  # a folder Spark wrote
    assert (tmp_path / "out" / "scores.parquet").is_dir()
    project = mm.load_bundle(tmp_path, target="connect")
    run = project.runs("demand", limit=1)[0]
    from mlflow.tracking import MlflowClient

    assert MlflowClient(project.tracking_uri).get_run(run.run_id).data.params["engine"] == "spark"
    local = mm.load_bundle(tmp_path).score("demand", frame.drop(columns=["label"]), run_id=run.run_id)
    a = on_connect.sort_values("record_id").reset_index(drop=True)
    b = local.sort_values("record_id").reset_index(drop=True)
    assert len(a) == len(frame) and a["prediction"].notna().all()
    pd.testing.assert_series_equal(a["prediction"].astype("Float64"), b["prediction"], check_exact=False, atol=1e-12)


@pytest.mark.slow
def test_progress_is_reported_while_the_spark_stage_runs(tmp_path: Path, spark: Any) -> None:
    from manymodels.engines import Dataset
    from manymodels.engines.spark import SparkEngine
    from manymodels.segment import SegmentSpec

    (tmp_path / "slow.py").write_text(
        "import time\n"
        "from sklearn.linear_model import Ridge\n\n"
        "def fit(X, y):\n"
        "    time.sleep(0.5)\n"
        "    return Ridge().fit(X, y)\n"
    )
    segment_frame(segments=8, rows=30).to_parquet(tmp_path / "fleet.parquet", index=False)
    spec = SegmentSpec(segment_by=("segment",), label="label", features=("f0", "f1", "f2"), estimator="python",
                       entry="slow:fit", import_roots=(str(tmp_path),))
    allow_pickle(True)  # its models are pickled: what its target would trust (executors are handed it)
    engine = SparkEngine(session=spark, max_chunk_rows=30)  # one segment per chunk: 8 tasks on 2 cores
    data = engine.load(Dataset(tmp_path / "fleet.parquet", "parquet"), spec)
    steps: list[int] = []
    results = engine.fit(data, spec, str(tmp_path), steps.append)
    assert len(results) == 8 and sum(steps) == 8 and all(step > 0 for step in steps)
    assert len(steps) > 1, steps  # some reported before the end
    assert spark.sparkContext.getLocalProperty("spark.jobGroup.id") is None  # the caller's session left as it was


@pytest.mark.slow
def test_executors_stage_shards_in_engine_staging_for_a_remote_artifact_store(
    tmp_path: Path, spark: Any, mlflow_server: str
) -> None:
    """Proxied artifacts (mlflow-artifacts:) cannot be written by executors: they write to engine.staging,
    here an fsspec URL; the driver logs the run; the staging folder is cleaned up."""
    import mlflow

    from helpers import edit_bundle

    frame = segment_frame(segments=5, rows=60)
    path = write_bundle(tmp_path / "project", frame=frame, tracking_uri=mlflow_server)
    staging = tmp_path / "shared-staging"
    edit_bundle(path, lambda doc: doc["targets"]["dev"].update(
        engine={"kind": "spark", "master": "local[2]", "staging": staging.as_uri()}))
    project = mm.load_bundle(tmp_path / "project")
    run = mm.load_bundle(tmp_path / "project", spark=spark).train("demand")
    assert run.summary["segments_ok"] == 5
    assert staging.is_dir() and list(staging.iterdir()) == []  # the run's staging folder removed
    mlflow.set_tracking_uri(mlflow_server)
    rows = frame.drop(columns=["label"])
    served = mlflow.pyfunc.load_model(f"runs:/{run.run_id}/model").predict(rows)
    served = served.assign(segment=rows["segment"], record_id=rows["record_id"])
    on_target = project.score("demand", rows, run_id=run.run_id).toPandas()  # the target's engine: Spark
    order = ["segment", "record_id"]
    np.testing.assert_allclose(on_target.sort_values(order)["prediction"].to_numpy(dtype=float),
                               served.sort_values(order)["prediction"].to_numpy(dtype=float), atol=1e-12)


@pytest.mark.slow
def test_a_delta_table_on_a_session_without_delta_lake_is_one_clear_error(tmp_path: Path, spark: Any) -> None:
    """This machine cannot fetch Delta's jars (Maven Central): what a user sees when their session lacks them."""
    from helpers import write_delta_bundle

    write_delta_bundle(tmp_path, segment_frame(segments=2, rows=30))
    project = mm.load_bundle(tmp_path)
    with pytest.raises(mm.DataError, match=r"train_delta: reading a Delta table on Spark needs Delta Lake"):
        mm.load_bundle(tmp_path, spark=spark).train("demand")
    assert project.runs("demand") == []


@pytest.mark.slow
def test_spark_types_a_csv_as_the_local_reader_does(tmp_path: Path, spark: Any) -> None:
    """Spark's CSV reader takes only "" as missing: a number column with "N/A" (the local reader's own marker) or a
    declared "-" was text there and numbers locally. Now both read numbers, with the same gaps, whatever the name."""
    from manymodels.data import read_frame
    from manymodels.engines.spark_session import read_with_spark

    path = tmp_path / "d.csv"
    path.write_text("seg,price.usd,kind,n\na,1.5,x,1\nb,-,-,2\nc,N/A,N/A,3\nd,4,y,4\n")
    local = read_frame(path, "csv", na_values=["-"])
    remote = read_with_spark(spark, path, "csv", ("-",)).toPandas()
    assert list(remote.columns) == list(local.columns)
    for column in ("price.usd", "n"):
        np.testing.assert_array_equal(remote[column].to_numpy(float), local[column].to_numpy(float))
    assert remote["kind"].tolist()[:1] == ["x"] and remote["kind"].isna().tolist() == local["kind"].isna().tolist()
    assert remote["kind"].tolist()[2:] == local["kind"].tolist()[2:] == ["N/A", "y"]  # text keeps its "N/A"
    chosen = read_with_spark(spark, path, "csv", (), columns=["price.usd", "seg"]).toPandas()
    undeclared = read_frame(path, "csv", ["price.usd", "seg"])
    assert list(chosen.columns) == ["price.usd", "seg"]  # "-" undeclared: text, with its "N/A" as text too
    assert chosen["price.usd"].tolist() == undeclared["price.usd"].tolist() == ["1.5", "-", "N/A", "4"]
