"""Against a real `mlflow server` on 127.0.0.1: one run per training, read back with MLflow's own client."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import manymodels as mm
from helpers import (
    PICKLE_TRUSTED,
    count_tracking_calls,
    edit_bundle,
    model_block,
    segment_frame,
    tracking_only,
    write_bundle,
)
from manymodels.serve.server import Choice, Limits, Server


def git_repo(root: Path) -> str:
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.slow
def test_one_run_read_back_with_mlflows_own_client(tmp_path: Path, mlflow_server: str) -> None:
    frame = segment_frame(segments=6, rows=80)
    write_bundle(tmp_path, frame=frame, tracking_uri=mlflow_server)
    commit = git_repo(tmp_path)
    project = mm.load_bundle(tmp_path)
    run = project.train("demand", workers=1)
    assert isinstance(run.metrics, pd.DataFrame) and len(run.metrics) == 6
    assert list(run.metrics.columns[:3]) == ["segment", "status", "rows"]

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("test-bundle/dev/demand")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [run.run_id]  # ONE MLflow run for the whole fleet
    got = runs[0]
    assert got.info.status == "FINISHED"
    tags = got.data.tags
    assert (tags["manymodels.bundle"], tags["manymodels.target"], tags["manymodels.model"]) == \
        ("test-bundle", "dev", "demand")
    assert tags["mlflow.source.git.commit"] == commit
    params = got.data.params
    assert params["segment_by"] == "segment" and params["label"] == "label" and params["features"] == "f0,f1,f2"
    assert params["estimator.params.num_boost_round"] == "20"
    metrics = got.data.metrics
    assert metrics["segments_ok"] == 6 and metrics["segments_failed"] == 0
    assert metrics["rmse_p50"] == pytest.approx(run.metrics["rmse"].median())

    top = {a.path for a in client.list_artifacts(run.run_id)}
    assert top == {"model", "segment_metrics.parquet", "report.html"}
    pack = {a.path for a in client.list_artifacts(run.run_id, "model/pack")}
    assert {"model/pack/manifest.parquet", "model/pack/pack.json",
            "model/pack/shards"} <= pack
    manifest = pd.read_parquet(client.download_artifacts(run.run_id, "model/pack/manifest.parquet",
                                                         str(tmp_path / "dl")))
    assert sorted(manifest["segment"]) == sorted(frame["segment"].unique())

    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model(f"runs:/{run.run_id}/model")
    inputs = frame.drop(columns=["label"])
    via_mlflow = model.predict(inputs)["prediction"].to_numpy()
    via_score = project.score("demand", inputs)["prediction"].to_numpy()
    assert (via_mlflow == via_score).all()


@pytest.mark.slow
def test_tracking_calls_do_not_grow_with_the_fleet(tmp_path: Path, mlflow_server: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # the machine's temporary folder may hold other runs' staging folders (each one asked about at the start of a
    # training): this test's own count must not depend on them
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    calls = count_tracking_calls(monkeypatch)
    counts = []
    for segments in (5, 150):
        root = tmp_path / f"fleet{segments}"
        models = {"demand": model_block(estimator={"type": "lightgbm", "params": {"num_boost_round": 2}})}
        write_bundle(root, frame=segment_frame(segments=segments, rows=20), tracking_uri=mlflow_server,
                     models=models)
        project = mm.load_bundle(root)
        context = project.target_context
        context.tracker.experiment_id(context.experiment("demand"))  # as training makes it, if no test did before
        calls.clear()  # so every count finds the experiment there: the same calls in any order of tests
        run = project.train("demand", workers=1)
        assert run.summary["segments_ok"] == segments
        counts.append(len(tracking_only(calls)))
    assert counts[0] == counts[1], counts
    assert counts[0] <= 40, calls


@pytest.mark.slow
def test_a_crashed_run_is_never_the_one_scored(tmp_path: Path, mlflow_server: str) -> None:
    frame = segment_frame(segments=3, rows=60)
    path = write_bundle(tmp_path, frame=frame, tracking_uri=mlflow_server,
                        extra={"bundle": {"name": "crash-test"}})
    project = mm.load_bundle(path)
    good = project.train("demand", workers=1)
    (tmp_path / "crashy.py").write_text("def fit(X, y):\n    raise KeyboardInterrupt\n")
    write_bundle(tmp_path, frame=frame, tracking_uri=mlflow_server, extra={"bundle": {"name": "crash-test"}},
                 models={"demand": model_block(estimator={"type": "python", "entry": "crashy:fit"})},
                 target=PICKLE_TRUSTED)
    with pytest.raises(KeyboardInterrupt):
        mm.load_bundle(path).train("demand", workers=1)
    runs = project.runs("demand")
    assert [r.status for r in runs] == ["failed", "ok"]
    crashed = MlflowClient(mlflow_server).get_run(runs[0].run_id)
    assert crashed.info.status == "FAILED" and "KeyboardInterrupt" in crashed.data.tags["manymodels.error"]

    assert project.target_context.resolve_run("demand").run_id == good.run_id
    with pytest.raises(mm.RegistryError, match="did not finish successfully"):
        project.score("demand", frame, run_id=runs[0].run_id)


API_SCRIPT = """
import manymodels as mm
project = mm.load_bundle(".")
run = project.train("demand", workers=1)
project.evaluate("demand")
project.promote("demand")
print("segments ok:", int(run.summary["segments_ok"]))
"""


@pytest.mark.slow
def test_no_mlflow_info_or_run_links_in_our_output(tmp_path: Path, mlflow_server: str) -> None:
    """MLflow's INFO lines, "🏃 View run" links and artifact progress bars stay out of our output (CLI and API)."""
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHON"))}
    for name, uri in (("served", mlflow_server), ("embedded", None)):  # a server; a new sqlite store
        root = tmp_path / name
        write_bundle(root, frame=segment_frame(segments=3, rows=60), tracking_uri=uri)
        cli = subprocess.run([str(Path(sys.executable).with_name("manymodels")), "train", "demand"], cwd=root,
                             env=env, capture_output=True, text=True, timeout=300, check=False)
        api = subprocess.run([sys.executable, "-c", API_SCRIPT], cwd=root, env=env, capture_output=True, text=True,
                             timeout=300, check=False)
        for done in (cli, api):
            assert done.returncode == 0, done.stderr[-2000:]
            both = done.stdout + done.stderr
            assert "View run" not in both and "View experiment" not in both, both
            assert "INFO" not in both and "Downloading artifacts" not in both, both
        assert api.stdout.strip() == "segments ok: 3"


@pytest.mark.slow
def test_a_changed_only_run_refers_to_the_champions_files_and_reads_them_from_a_fresh_machine(
        tmp_path: Path, mlflow_server: str) -> None:
    frame = segment_frame(segments=4, rows=60)
    extra = {"bundle": {"name": "refer-test"}}
    write_bundle(tmp_path, frame=frame, tracking_uri=mlflow_server, extra=extra)
    project = mm.load_bundle(tmp_path)
    first = project.train("demand", workers=1)
    champion_run = project.promote("demand").run_id
    changed = frame.assign(label=frame["label"].where(frame["segment"] != "seg_000", frame["label"] + 1.0))
    write_bundle(tmp_path, frame=changed, tracking_uri=mlflow_server, extra=extra)
    project = mm.load_bundle(tmp_path)
    run = project.train("demand", workers=1, changed_only=True)
    assert (run.summary["segments_trained"], run.summary["segments_carried"]) == (1, 3)

    client = MlflowClient(mlflow_server)
    uploaded = [a.path for a in client.list_artifacts(run.run_id, "model/pack/shards")]
    assert uploaded == ["model/pack/shards/shard-00000.parquet"]  # only the model it trained went up
    inputs = changed.drop(columns=["label"])
    carried = inputs["segment"] != "seg_000"
    before = project.score("demand", inputs, run_id=first.run_id)["prediction"].to_numpy()

    shutil.rmtree(tmp_path / ".manymodels" / "cache")  # as on another machine: nothing downloaded yet
    after = mm.load_bundle(tmp_path).score("demand", inputs, run_id=run.run_id)["prediction"].to_numpy()
    assert (after[carried] == before[carried]).all() and not (after[~carried] == before[~carried]).all()
    assert (tmp_path / ".manymodels" / "cache" / champion_run).is_dir()  # fetched beside the run's own pack
    server = Server(mm.load_bundle(tmp_path).target_context, Choice("demand", run_id=run.run_id), Limits())
    live = server.load(run.run_id, None)  # what `serve --run` loads: its own pack and the champion's, checked
    served = live.pack.predict(inputs)["prediction"].to_numpy()
    assert (served == after).all()
    assert (tmp_path / ".manymodels" / "cache" / "serve" / champion_run / "model" / "pack" / "pack.json").exists()

    mlflow.set_tracking_uri(mlflow_server)  # MLflow alone: the pyfunc fetches the champion's pack itself
    via_mlflow = mlflow.pyfunc.load_model(f"runs:/{run.run_id}/model").predict(inputs)["prediction"].to_numpy()
    assert (via_mlflow == after).all()


def test_a_version_signed_after_the_fact_on_a_server_verifies_from_a_fresh_machine(
        tmp_path: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sign` on a tracking server: the signature is logged into the run's artifacts, so another machine (an empty
    .manymodels/) downloads it with the pack and checks it; a pyfunc with MANYMODELS_SIGNING_KEY checks it too."""
    import secrets

    extra = {"bundle": {"name": f"signed-{uuid.uuid4().hex[:6]}"}}
    write_bundle(tmp_path, frame=segment_frame(segments=3, rows=40), tracking_uri=mlflow_server, extra=extra)
    project = mm.load_bundle(tmp_path)
    project.train("demand", workers=1)
    promoted = project.promote("demand")  # written before any key
    key = secrets.token_hex(32)
    monkeypatch.setenv("MM_SERVER_SIGNING_KEY", key)
    edit_bundle(tmp_path / "manymodels.yml",
                lambda doc: doc["targets"]["dev"].update({"signing_key": {"env": "MM_SERVER_SIGNING_KEY"}}))
    signed = mm.load_bundle(tmp_path)
    with pytest.raises(mm.RegistryError, match="not signed"):
        signed.verify("demand")
    from manymodels.jobs.verify import sign_version

    done = sign_version(signed.target_context, "demand")
    assert done.version == promoted.version
    shutil.rmtree(tmp_path / ".manymodels")  # another machine: nothing downloaded yet
    checked = mm.load_bundle(tmp_path).verify("demand")
    assert checked.key is not None and checked.models == 3
    monkeypatch.setenv("MANYMODELS_SIGNING_KEY", key)
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model(f"models:/{project.registered_model('demand')}@champion")
    assert model.predict(segment_frame(segments=3, rows=2).drop(columns=["label"]))["prediction"].notna().all()
