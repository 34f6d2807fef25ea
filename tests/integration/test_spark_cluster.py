"""A real Spark standalone cluster on 127.0.0.1 (a master and a worker JVM, executors in their own
processes), driven through the CLI: not local mode, so executors are treated as remote machines."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import manymodels as mm
from helpers import edit_bundle, segment_frame, stop_process, write_bundle


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited early: {log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"port {port} never opened: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def standalone_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`spark://127.0.0.1:PORT`: Spark's own Master and Worker classes from the installed pyspark."""
    import pyspark

    home = Path(pyspark.__file__).parent
    java = shutil.which("java", path=os.path.join(os.environ["JAVA_HOME"], "bin")) if "JAVA_HOME" in os.environ \
        else shutil.which("java")
    assert java, "Java 17 is needed for Spark"
    root = tmp_path_factory.mktemp("spark-cluster")
    scala = next((home / "jars").glob("spark-core_*.jar")).name.split("_")[1].split("-")[0]  # e.g. 2.13
    env = {**os.environ, "SPARK_HOME": str(home), "PYSPARK_PYTHON": sys.executable, "SPARK_SCALA_VERSION": scala,
           "SPARK_WORKER_DIR": str(root / "work"), "SPARK_LOCAL_IP": "127.0.0.1"}
    classpath = f"{home / 'jars'}/*"
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for name, args in (("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                       "--port", str(port), "--webui-port", str(free_port())]),
                           ("worker", ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "2",
                                       "--memory", "2g", "--webui-port", str(free_port()),
                                       f"spark://127.0.0.1:{port}"])):
            log = root / f"{name}.log"
            logs.append(log.open("wb"))
            proc = subprocess.Popen([java, "-Xmx512m", "-cp", classpath, *args], env=env,  # noqa: S603 - fixed args
                                    stdout=logs[-1], stderr=subprocess.STDOUT)
            procs.append(proc)
            if name == "master":
                wait_for_port(port, proc, log)
        deadline = time.monotonic() + 90
        while "Successfully registered with master" not in (root / "worker.log").read_text():
            assert time.monotonic() < deadline, (root / "worker.log").read_text()[-3000:]
            time.sleep(0.5)
        yield f"spark://127.0.0.1:{port}"
    finally:
        for proc in reversed(procs):
            stop_process(proc)
        for handle in logs:
            handle.close()


@pytest.mark.slow
def test_a_cluster_trains_and_scores_through_engine_staging(tmp_path: Path, standalone_master: str,
                                                            mlflow_server: str) -> None:
    frame = segment_frame(segments=4, rows=60)
    path = write_bundle(tmp_path / "project", frame=frame, tracking_uri=mlflow_server)
    cluster = {"kind": "spark", "master": standalone_master,
               "conf": {"spark.executor.memory": "1g", "spark.cores.max": 2}}
    edit_bundle(path, lambda doc: doc["targets"].update(cluster={"tracking_uri": mlflow_server, "engine": cluster}))
    cli = str(Path(sys.executable).with_name("manymodels"))

    def manymodels(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([cli, *args, "-t", "cluster"], cwd=path.parent, capture_output=True, text=True,
                              timeout=400, check=False)

    # Artifacts go to the MLflow server: the cluster's executors need somewhere to write, said before any run.
    refused = manymodels("train", "demand")
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "set the target's engine.staging" in refused.stderr.strip().splitlines()[-1]
    project = mm.load_bundle(path.parent, target="cluster")
    assert project.runs("demand") == []

    staging = tmp_path / "shared"
    edit_bundle(path, lambda doc: doc["targets"]["cluster"]["engine"].update(staging=staging.as_uri()))
    trained = manymodels("train", "demand")
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = project.runs("demand", limit=1)[0]
    assert run.status == "ok" and list(staging.iterdir()) == []  # the run's staging folder removed
    scored = manymodels("score", "demand", "--data", "to_score", "--out", str(tmp_path / "scores"))
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert (staging / "packs" / run.run_id / "pack.json").is_file()  # the pack the executors read
    evaluated = manymodels("evaluate", "demand")  # on the executors too, from the same published pack
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "4 new" in evaluated.stdout, evaluated.stdout
    order = ["segment", "record_id"]
    on_cluster = pd.read_parquet(tmp_path / "scores").sort_values(order).reset_index(drop=True)
    local = mm.load_bundle(path.parent).score("demand", frame.drop(columns=["label"]), run_id=run.run_id)  # local
    local = local.sort_values(order).reset_index(drop=True)
    pd.testing.assert_series_equal(on_cluster["prediction"].astype("Float64"), local["prediction"],
                                   check_exact=False, atol=1e-12)
