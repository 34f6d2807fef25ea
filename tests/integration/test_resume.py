"""`train --resume RUN`: a training run that died or was stopped is finished, keeping what it had fitted.

The segments it finished keep their models (where their rows, the spec and the models' bytes are unchanged),
the others are fitted into the same run, and the result predicts exactly as a training run that was never
stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

import manymodels as mm
from helpers import chunked_bundle, edit_bundle, segment_frame, stop_after, write_bundle
from manymodels.errors import BundleError
from manymodels.faults import ENV
from manymodels.registry.manifest import PackLayout

MANYMODELS = str(Path(sys.executable).parent / "manymodels")


def stopped_run(project: mm.Project, segments: int = 10) -> str:
    """Start a training (one process, 2 segments per chunk) and stop it after `segments`; its run id."""
    with pytest.raises(KeyboardInterrupt):
        project.train("demand", workers=1, on_progress=stop_after(segments))
    return project.runs("demand")[0].run_id


def shard_folder(project: mm.Project, run_id: str) -> Path:
    run = project.target_context.tracker.run(run_id)
    return Path(run.artifact_uri.removeprefix("file://")) / PackLayout.IN_RUN / PackLayout.SHARDS


def predictions(project: mm.Project, run_id: str, data: pd.DataFrame) -> pd.Series:
    scored = project.score("demand", data, run_id=run_id)
    assert set(scored["model_source"]) == {"segment"}
    return scored["prediction"].reset_index(drop=True)


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    return chunked_bundle(tmp_path, segments=20, rows=100, per_chunk=2)


@pytest.mark.slow
def test_kill_9_then_resume_finishes_the_run_as_if_never_stopped(fleet: Path) -> None:
    env = {**os.environ, ENV: "train.chunk@3:kill", "COLUMNS": "200"}
    args = [MANYMODELS, "--bundle", str(fleet), "train", "demand", "--workers", "2"]
    killed = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, check=False)  # noqa: S603
    assert killed.returncode == -9, killed.stderr[-2000:]
    project = mm.load_bundle(fleet)
    [run] = project.runs("demand")
    assert run.status == "dead"
    resumed = subprocess.run(  # noqa: S603
        [*args[:-2], "--resume", run.run_id], capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "200"}, check=False,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    line = next(x for x in resumed.stdout.splitlines() if "resumed" in x)
    kept = int(line.split("resumed")[1].split()[1])
    assert 6 <= kept < 20, line  # at least the 3 chunks gathered (2 segments each) were kept, not refitted
    assert f"{20 - kept} fitted now" in line
    [run] = project.runs("demand")  # the same run, now finished
    assert run.status == "ok" and run.metrics["segments_ok"] == 20 and run.tags["manymodels.resumed"] == "1"
    folder = shard_folder(project, run.run_id)
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("shard-")) == []  # no records left
    fresh = project.train("demand", workers=2).run_id
    data = pd.read_parquet(fleet / "data" / "train.parquet")
    assert predictions(project, run.run_id, data).equals(predictions(project, fresh, data))


def test_ctrl_c_then_resume_twice_keeps_what_each_process_finished(fleet: Path) -> None:
    project = mm.load_bundle(fleet)
    run_id = stopped_run(project, segments=5)
    assert project.runs("demand")[0].status == "failed"
    with pytest.raises(KeyboardInterrupt):  # stopped again, while resuming
        project.train("demand", resume=run_id, workers=1, on_progress=stop_after(6))
    names = sorted(p.name for p in shard_folder(project, run_id).iterdir())
    assert "shard-r00000.parquet" in names and "results-r.parquet" in names  # the first process's models, kept
    done = project.train("demand", resume=run_id, workers=1)
    assert done.run_id == run_id and done.summary["segments_ok"] == 20
    # what both stopped processes finished: the chunks (2 segments each) whose shard was written before each stop,
    # 4 of the first process's 5 segments and 4 of the second's 6 (its stop came in its third chunk's last fit)
    assert done.summary["segments_resumed"] == 8
    fresh = project.train("demand", workers=1).run_id
    data = pd.read_parquet(fleet / "data" / "train.parquet")
    assert predictions(project, run_id, data).equals(predictions(project, fresh, data))
    with pytest.raises(BundleError, match="finished: there is nothing to resume"):
        project.train("demand", resume=run_id)


def test_resume_refits_what_changed_or_was_damaged_and_refuses_other_settings(fleet: Path) -> None:
    project = mm.load_bundle(fleet)
    run_id = stopped_run(project, segments=10)
    folder = shard_folder(project, run_id)
    with pytest.raises(BundleError, match="give no --segments or --changed-only"):
        project.train("demand", resume=run_id, segments=["seg_000"])
    with pytest.raises(BundleError, match="other"):
        mm.load_bundle(fleet).train("other", resume=run_id)

    edit_bundle(fleet / "manymodels.yml", lambda doc: doc["resources"]["models"]["demand"]["estimator"]["params"]
                .update(num_leaves=7))
    with pytest.raises(BundleError, match=r"began with other settings \(estimator.params.num_leaves: .* now\)"):
        mm.load_bundle(fleet).train("demand", resume=run_id)
    edit_bundle(fleet / "manymodels.yml", lambda doc: doc["resources"]["models"]["demand"]["estimator"]["params"]
                .pop("num_leaves"))

    # The data of one finished segment changed since, and one finished model's shard was damaged on disk.
    records = pd.concat([pd.read_parquet(p) for p in sorted(folder.glob("results-*.parquet"))])
    finished = records.loc[records["status"] == "ok"]
    assert len(finished) >= 4
    changed = finished["segment"].iloc[0]
    frame = pd.read_parquet(fleet / "data" / "train.parquet")
    frame.loc[frame["segment"] == changed, "label"] += 1.0
    frame.to_parquet(fleet / "data" / "train.parquet", index=False)
    damaged_shard = finished["shard"].iloc[-1]
    damaged = finished.loc[finished["shard"] == damaged_shard, "segment"].tolist()
    assert changed not in damaged
    raw = (folder / damaged_shard).read_bytes()
    (folder / damaged_shard).write_bytes(raw[: len(raw) // 2])  # cut short: none of its models reads

    done = mm.load_bundle(fleet).train("demand", resume=run_id, workers=1)
    assert done.summary["segments_ok"] == 20
    assert done.summary["segments_resumed"] == len(finished) - 1 - len(damaged)
    fresh = mm.load_bundle(fleet).train("demand", workers=1).run_id
    assert predictions(project, run_id, frame).equals(predictions(project, fresh, frame))


def test_resume_refuses_runs_it_cannot_finish(fleet: Path) -> None:
    project = mm.load_bundle(fleet)
    with pytest.raises(mm.RegistryError, match="no run"):
        project.train("demand", resume=uuid.uuid4().hex)
    client = project.target_context.tracker.client
    run_id = stopped_run(project, segments=4)
    client.set_tag(run_id, "manymodels.status", "running")  # as if its process were alive on another host
    client.set_tag(run_id, "manymodels.host", "elsewhere")
    with pytest.raises(BundleError, match="still running .*on host elsewhere.* cannot tell whether"):
        project.train("demand", resume=run_id)
    client.set_tag(run_id, "manymodels.status", "failed")
    client.set_tag(run_id, "manymodels.segments", "20")  # as a run that ended, every segment failed, is tagged
    with pytest.raises(BundleError, match="ended with every segment tried"):
        project.train("demand", resume=run_id)
    client.delete_tag(run_id, "manymodels.segments")
    (shard_folder(project, run_id) / "resume.json").unlink()  # its record of what it was asked to fit is gone
    with pytest.raises(BundleError, match="left no record of its work"):
        project.train("demand", resume=run_id)


@pytest.mark.slow
def test_resume_on_a_tracking_server_uses_the_staged_files_and_sweeps_the_rest(
    tmp_path: Path, mlflow_server: str
) -> None:
    import tempfile

    write_bundle(tmp_path, frame=segment_frame(segments=12, rows=100), tracking_uri=mlflow_server)
    edit_bundle(tmp_path / "manymodels.yml", lambda doc: (
        doc["bundle"].update(name=f"resume-{uuid.uuid4().hex[:8]}"),
        doc["targets"]["dev"].update(engine={"max_chunk_rows": 200}),
    ))
    project = mm.load_bundle(tmp_path)
    run_id = stopped_run(project, segments=6)
    assert "manymodels.heartbeat" in project.target_context.tracker.run(run_id).tags  # it beat while it worked
    staged = list(Path(tempfile.gettempdir()).glob(f"manymodels-{run_id}-*"))
    assert len(staged) == 1  # kept for the resume (it used to be removed with the failed run)
    done = project.train("demand", resume=run_id, workers=1)
    assert done.summary["segments_ok"] == 12 and done.summary["segments_resumed"] >= 4
    assert not staged[0].exists()
    scored = project.score("demand", pd.read_parquet(tmp_path / "data" / "score.parquet"), run_id=run_id)
    assert set(scored["model_source"]) == {"segment"}
    # a stopped run that is not resumed: the model's next training starts afresh and removes its files
    again = stopped_run(project, segments=2)
    assert list(Path(tempfile.gettempdir()).glob(f"manymodels-{again}-*"))
    project.train("demand", workers=1)
    assert not list(Path(tempfile.gettempdir()).glob(f"manymodels-{again}-*"))


def test_a_changed_only_run_resumes_as_changed_only(fleet: Path) -> None:
    project = mm.load_bundle(fleet)
    project.train("demand", workers=1)
    project.promote("demand")
    frame = pd.read_parquet(fleet / "data" / "train.parquet")
    changed = [f"seg_{i:03d}" for i in range(0, 20, 2)]  # half the segments' rows change: 10 to train again
    frame.loc[frame["segment"].isin(changed), "label"] += 1.0
    frame.to_parquet(fleet / "data" / "train.parquet", index=False)
    with pytest.raises(KeyboardInterrupt):
        project.train("demand", workers=1, changed_only=True, on_progress=stop_after(5))
    run_id = project.runs("demand")[0].run_id
    done = project.train("demand", resume=run_id, workers=1)  # no --changed-only given: the run's own choice
    assert done.summary["segments_resumed"] == 4 and done.summary["segments_trained"] == 10
    assert done.summary["segments_carried"] == 10 and done.summary["segments_ok"] == 20
    fresh = project.train("demand", workers=1).run_id
    assert predictions(project, run_id, frame).equals(predictions(project, fresh, frame))


def test_a_run_stopped_after_its_fit_resumes_without_fitting(fleet: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped as it was being logged (every segment fitted): a resume keeps every model and only finishes it."""
    project = mm.load_bundle(fleet)
    monkeypatch.setenv(ENV, "tracking.finishing:raise")
    with pytest.raises(Exception, match="fault injected at tracking.finishing"):
        project.train("demand", workers=1)
    monkeypatch.delenv(ENV)
    [run] = project.runs("demand")
    assert run.status == "failed"
    done = project.train("demand", resume=run.run_id, workers=1)
    assert done.summary["segments_resumed"] == 20 and done.summary["segments_ok"] == 20
    assert project.runs("demand")[0].status == "ok"
    assert [p.name for p in shard_folder(project, run.run_id).iterdir() if not p.name.startswith("shard-")] == []
