"""`gc` and `destroy` on the embedded store: what goes is gone from disk, what serves stays."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import manymodels as mm
from helpers import model_block, segment_frame, serving, write_bundle
from manymodels.cli.main import app

runner = CliRunner()


def cli(root: Path, *args: str, answer: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["--bundle", str(root), *args], input=answer, env={"COLUMNS": "200"})
    return result.exit_code, result.output


def run_folders(root: Path) -> set[str]:
    """The run folders holding files in the embedded artifact store."""
    return {p.name for p in (root / ".manymodels" / "artifacts").glob("*/*") if any(p.rglob("*.parquet"))}


def test_gc_keeps_what_serves_and_the_newest_and_frees_the_rest(tmp_path: Path) -> None:
    write_bundle(tmp_path, frame=segment_frame(segments=3, rows=60))
    project = mm.load_bundle(tmp_path)
    first = project.train("demand", workers=1).run_id
    project.promote("demand")  # the first champion: a promote run of its own
    older = [project.train("demand", workers=1).run_id for _ in range(3)]
    newest = project.train("demand", workers=1).run_id
    champion = project.versions("demand")[0].run_id
    assert {first, *older, newest, champion} <= run_folders(tmp_path)

    code, out = cli(tmp_path, "gc", "demand", "--keep", "1", "--dry-run")
    assert code == 0 and "3 run(s) would be removed (--dry-run: nothing was)" in out, out
    assert len(run_folders(tmp_path)) == 6
    code, out = cli(tmp_path, "gc", "demand", "--keep", "1", answer="\n")  # no answer is no
    assert code == 1 and "nothing removed" in out, out
    assert len(run_folders(tmp_path)) == 6

    code, out = cli(tmp_path, "gc", "demand", "--keep", "1", answer="y\n")
    assert code == 0, out
    assert "removed 3 run(s)" in out and "removed from this machine's store" in out
    assert run_folders(tmp_path) == {first, champion, newest}  # challenger's run, champion, the newest
    assert not any((tmp_path / ".manymodels" / "artifacts").glob(f"*/{older[0]}"))  # no empty folder left
    client = MlflowClient(project.tracking_uri)
    left = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert {r.info.run_id for r in left} == {first, champion, newest}
    scores = project.score("demand", segment_frame(segments=3, rows=5).drop(columns=["label"]))
    assert scores["prediction"].notna().all()  # the champion still serves


def test_gc_and_destroy_never_delete_what_a_live_server_serves(tmp_path: Path) -> None:
    """Before: `serve --run` of an old run, then `gc --keep 0`, and the server's fallback rows got HTTP 500 (its shard
    file was gone). The server leases the run it serves; gc keeps it, destroy refuses, until the server stops."""
    write_bundle(tmp_path, frame=segment_frame(segments=3, rows=60), models={"demand": model_block(fallback="global")})
    project = mm.load_bundle(tmp_path)
    pinned = project.train("demand", workers=1).run_id
    project.train("demand", workers=1)
    project.promote("demand")  # the champion and the challenger are other runs: nothing but the server holds it
    rows = segment_frame(segments=2, rows=2).drop(columns=["label"]).assign(segment=["seg_000", "x", "seg_001", "y"])
    body = json.dumps({"dataframe_records": rows.to_dict(orient="records")}).encode()
    with serving(tmp_path, args=["--run", pinned, "--poll", "1"]) as url:
        code, out = cli(tmp_path, "gc", "demand", "--keep", "0", answer="y\n")
        assert code == 0 and pinned in out and "served by" in out, out
        assert pinned in run_folders(tmp_path)
        request = urllib.request.Request(f"{url}/invocations", data=body,  # noqa: S310 - our own loopback server
                                         headers={"Content-Type": "application/json"})
        # A file it needs does not read (the fallback's shard moved away before its first request): a 503 naming
        # the version, /health and /metrics say so, and once the file is back the version is loaded again
        (shard,) = (tmp_path / ".manymodels" / "artifacts").glob(f"*/{pinned}/artifacts/model/pack/fallback/shards/*")
        aside = tmp_path / "aside.parquet"
        shard.rename(aside)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)  # noqa: S310 - our own loopback server
        said = json.loads(refused.value.read())
        assert refused.value.code == 503 and f"(run {pinned})" in said["message"], said
        health = json.loads(urllib.request.urlopen(f"{url}/health", timeout=30).read())  # noqa: S310 - ours
        assert health["status"] == "degraded" and shard.name in health["files"]["error"], health
        assert "manymodels_serve_files_readable 0.0" in urllib.request.urlopen(  # noqa: S310 - ours
            f"{url}/metrics", timeout=30).read().decode()
        aside.rename(shard)  # back: the version is loaded again, and serves
        deadline = time.monotonic() + 60
        while health["status"] != "ok" and time.monotonic() < deadline:
            time.sleep(0.5)
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(request, timeout=30)  # noqa: S310 - our own loopback server
            health = json.loads(urllib.request.urlopen(f"{url}/health", timeout=30).read())  # noqa: S310 - ours
        assert health["status"] == "ok", health
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - our own loopback server
            sources = [p["model_source"] for p in json.loads(answer.read())["predictions"]]
        assert sources == ["segment", "fallback", "segment", "fallback"]
        code, out = cli(tmp_path, "destroy", "--auto-approve")
        assert code == 1 and f"run {pinned} in" in out and "is served by" in out, out
    code, out = cli(tmp_path, "gc", "demand", "--keep", "0", answer="y\n")
    assert code == 0 and pinned not in run_folders(tmp_path), out


def test_destroy_removes_the_embedded_store_files_of_the_target(tmp_path: Path) -> None:
    write_bundle(tmp_path, frame=segment_frame(segments=3, rows=60))
    code, out = cli(tmp_path, "deploy")
    assert code == 0, out
    run_id = mm.load_bundle(tmp_path).train("demand", workers=1).run_id
    assert run_id in run_folders(tmp_path)
    code, out = cli(tmp_path, "destroy", "--auto-approve")
    assert code == 0, out
    assert "their runs and files were removed from this machine's store" in out
    assert run_folders(tmp_path) == set()


def test_gc_keeps_a_run_whose_shards_a_kept_changed_only_run_refers_to(tmp_path: Path) -> None:
    frame = segment_frame(segments=4, rows=60)
    write_bundle(tmp_path, frame=frame)
    project = mm.load_bundle(tmp_path)
    project.train("demand", workers=1)
    first_champion = project.promote("demand").run_id
    changed = frame.assign(label=frame["label"].where(frame["segment"] != "seg_000", frame["label"] + 1.0))
    write_bundle(tmp_path, frame=changed)
    project = mm.load_bundle(tmp_path)
    refers = project.train("demand", workers=1, changed_only=True)
    assert refers.summary["segments_carried"] == 3
    for _ in range(2):  # two promotions later the first champion is neither champion nor previous
        project.promote("demand", run_id=project.train("demand", workers=1).run_id, take_all=True, force=True)

    code, out = cli(tmp_path, "gc", "demand", "--keep", "3", "--auto-approve")
    assert code == 0, out
    assert f"keep   run {first_champion}: its models are carried by reference by run {refers.run_id}" in out
    assert first_champion in run_folders(tmp_path)
    inputs = changed.drop(columns=["label"])
    scores = project.score("demand", inputs, run_id=refers.run_id)
    assert scores["prediction"].notna().all()  # its carried models read from the kept run's files

    code, out = cli(tmp_path, "gc", "demand", "--keep", "0", "--auto-approve")
    assert code == 0, out
    assert refers.run_id not in run_folders(tmp_path) and first_champion not in run_folders(tmp_path)
