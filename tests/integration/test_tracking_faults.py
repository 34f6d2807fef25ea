"""The tracking server failing: unreachable at start is one line in seconds (exit 2); failing as a training run is
finished loses nothing: the fitted pack is kept on disk and `upload` logs it once the server is back."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import TcpRelay, edit_bundle, segment_frame, write_bundle
from manymodels.faults import ENV, GATE

MANYMODELS = str(Path(sys.executable).with_name("manymodels"))


def cli(root: Path, *args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [MANYMODELS, "--bundle", str(root), *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "200"}, check=False,
    )
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


@pytest.mark.slow
def test_the_server_failing_at_the_end_of_a_training_loses_nothing(tmp_path: Path, mlflow_server: str) -> None:
    relay = TcpRelay(mlflow_server)
    write_bundle(tmp_path, frame=segment_frame(segments=4, rows=60), tracking_uri=relay.url)
    edit_bundle(tmp_path / "manymodels.yml", lambda doc: (
        doc["bundle"].update(name=f"faults-{tmp_path.name[-12:]}"),
        doc["targets"]["dev"].update(tracking={"timeout_s": 3, "retries": 2}),
    ))
    relay.cut()  # unreachable at start: one line, exit 2, nothing started
    code, out, seconds = cli(tmp_path, "train", "demand", "--workers", "1")
    assert code == 2 and "is not reachable (connection refused)" in out and seconds < 30, out
    relay.mend()

    gate = tmp_path / "gate"
    env = {**os.environ, ENV: "tracking.finishing:pause", GATE: str(gate), "COLUMNS": "200"}
    with open(tmp_path / "train.txt", "w") as log:
        train = subprocess.Popen(  # noqa: S603
            [MANYMODELS, "--bundle", str(tmp_path), "train", "demand", "--workers", "1"], stdout=log, stderr=log,
            env=env)
    try:
        deadline = time.monotonic() + 120
        while not Path(f"{gate}.paused").exists() and train.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert Path(f"{gate}.paused").exists(), (tmp_path / "train.txt").read_text()
        relay.cut()  # the server goes away as the fitted run is being logged
        started = time.monotonic()
        gate.touch()
        train.wait(timeout=120)
        waited = time.monotonic() - started
    finally:
        if train.poll() is None:
            train.kill()
    out = (tmp_path / "train.txt").read_text()
    assert train.returncode == 1, out
    assert "cannot finish run" in out and "manymodels upload" in out and "Traceback" not in out, out
    assert waited < 60, waited
    kept = list((tmp_path / ".manymodels" / "unsent").iterdir())
    assert len(kept) == 1 and (kept[0] / "artifacts" / "model" / "pack" / "manifest.parquet").exists()
    run_id = kept[0].name

    relay.mend()
    import manymodels as mm
    from manymodels.errors import BundleError

    with pytest.raises(BundleError, match=f"`manymodels upload {run_id}` logs it"):  # not a resume: it was fitted
        mm.load_bundle(tmp_path).train("demand", resume=run_id)
    code, out, _ = cli(tmp_path, "upload")
    assert code == 0 and f"run {run_id}: logged and finished" in out, out
    assert not kept[0].exists()
    code, out, _ = cli(tmp_path, "score", "demand", "--data", "to_score", "--out", str(tmp_path / "s.parquet"))
    assert code == 0 and run_id in out, out


def test_staging_folders_of_dead_runs_are_swept(tmp_path: Path, mlflow_server: str) -> None:
    """A command killed with SIGKILL leaves its staging folder in the temporary folder; the next training sweeps
    the ones whose run is over or whose process is gone, and leaves a live run's and unknown runs' alone."""
    import tempfile
    import uuid

    from mlflow.tracking import MlflowClient

    from manymodels.registry import Tracker
    from manymodels.registry.staging import sweep_staging

    client = MlflowClient(mlflow_server)
    exp = client.create_experiment(f"sweep-{uuid.uuid4().hex[:8]}")
    here = {"manymodels.host": socket.gethostname(), "manymodels.bundle": "b"}
    dead = {**here, "manymodels.status": "running", "manymodels.pid": str(dead_pid())}
    gone = client.create_run(exp, tags={**dead, "manymodels.model": "m"}).info.run_id
    other = client.create_run(exp, tags={**dead, "manymodels.model": "other"}).info.run_id
    done = client.create_run(exp, tags={**here, "manymodels.status": "ok", "manymodels.model": "other"}).info.run_id
    alive = client.create_run(exp, tags={**here, "manymodels.status": "running", "manymodels.model": "m",
                                         "manymodels.pid": str(os.getpid())}).info.run_id
    folders = {name: Path(tempfile.mkdtemp(prefix=f"manymodels-{run}-")) for name, run in
               (("gone", gone), ("other", other), ("done", done), ("alive", alive), ("unknown", uuid.uuid4().hex))}
    try:
        removed = sweep_staging(Tracker(mlflow_server), "b", "m")
        assert set(removed) == {folders["gone"], folders["done"]}
        assert not folders["gone"].exists() and not folders["done"].exists()
        # another model's dead run keeps its files for `train --resume` until that model trains again
        assert folders["alive"].exists() and folders["unknown"].exists() and folders["other"].exists()
    finally:
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])  # noqa: S607 - a process that is gone once waited for
    proc.wait()
    return proc.pid


def test_a_run_on_another_host_is_dead_once_its_heartbeat_stops(mlflow_server: str) -> None:
    """A run's pid says nothing on another host; its heartbeat does: missed for 5 beats, the run is shown dead."""
    import uuid

    from manymodels.registry import Tracker

    tracker = Tracker(mlflow_server)
    exp = tracker.client.create_experiment(f"beat-{uuid.uuid4().hex[:8]}")
    tags = {"manymodels.status": "running", "manymodels.host": "another-host", "manymodels.pid": "1"}
    run_id = tracker.client.create_run(exp, tags=tags).info.run_id
    assert tracker.run(run_id).status == "running"  # no heartbeat (an older run): it cannot be told dead
    with tracker.heartbeat(run_id, every=0.2):
        time.sleep(0.7)
        seen = tracker.run(run_id)
        assert seen.status == "running" and time.time() - float(seen.tags["manymodels.heartbeat"]) < 1.0
    time.sleep(1.5)  # more than 5 beats of 0.2 s missed: its process is taken for gone
    assert tracker.run(run_id).status == "dead"
