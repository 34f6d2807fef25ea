"""A promotion killed or failing at each step leaves the champion, `previous` and the versions as they were, or
marked so the next promotion cleans up; a rollback to a version whose files are gone is refused before it moves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import manymodels as mm
from helpers import segment_frame, write_bundle
from manymodels.faults import ENV

MANYMODELS = str(Path(sys.executable).with_name("manymodels"))


def cli(root: Path, *args: str, fault: str | None = None) -> tuple[int, str]:
    env = {**os.environ, "COLUMNS": "200", **({ENV: fault} if fault else {})}
    done = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [MANYMODELS, "--bundle", str(root), *args], capture_output=True, text=True, timeout=300, env=env, check=False
    )
    return done.returncode, done.stdout + done.stderr


def state(project: mm.Project) -> dict[int, tuple[str, ...]]:
    """Each version's aliases (training registers versions too, alias `challenger`)."""
    return {v.version: v.aliases for v in project.versions("demand")}


def holder(project: mm.Project, alias: str) -> int | None:
    return next((v.version for v in project.versions("demand") if alias in v.aliases), None)


@pytest.mark.slow
def test_promotion_faults_leave_nothing_half_done(tmp_path: Path) -> None:
    write_bundle(tmp_path, frame=segment_frame(segments=4, rows=60))
    project = mm.load_bundle(tmp_path)
    project.train("demand", workers=1)
    project.promote("demand")
    project.train("demand", workers=1)
    first = holder(project, "champion")
    assert first is not None and holder(project, "previous") is None
    before = state(project)

    # killed between registering the version and moving any alias: the version is marked incomplete
    code, out = cli(tmp_path, "promote", "demand", "--all", fault="promote.registered:kill")
    assert code == -9, out
    orphan = project.versions("demand")[0]
    assert orphan.version not in before and orphan.aliases == () and orphan.tags["manymodels.complete"] == "false"
    assert {v: a for v, a in state(project).items() if v != orphan.version} == before
    code, out = cli(tmp_path, "models", "demand")
    assert code == 0 and "incomplete: its promotion died" in out, out

    # the next promotion removes it, then promotes
    code, out = cli(tmp_path, "promote", "demand", "--all")
    assert code == 0 and f"removed version {orphan.version}" in out, out
    assert orphan.version not in state(project)
    second = holder(project, "champion")
    assert second != first and holder(project, "previous") == first
    assert project.versions("demand")[0].tags["manymodels.complete"] == "true"
    before = state(project)

    # failing after `previous` moved: previous is what it was (before: previous == champion, rollback lost)
    code, out = cli(tmp_path, "promote", "demand", "--all", fault="promote.previous_moved:raise")
    assert code == 1 and "fault injected at promote.previous_moved" in out, out
    assert state(project) == before
    rolled = project.rollback("demand")
    assert (rolled.before, rolled.after) == (second, first)
    project.rollback("demand")  # and back
    assert state(project) == before

    # killed after `previous` moved onto the champion: a rollback still finds the real previous
    code, out = cli(tmp_path, "promote", "demand", "--all", fault="promote.previous_moved:kill")
    assert code == -9, out
    assert holder(project, "previous") == second == holder(project, "champion")
    rolled = project.rollback("demand")
    assert (rolled.before, rolled.after) == (second, first)
    project.rollback("demand")
    assert state(project) == before

    # a rollback to a version whose files are gone is refused before the alias moves
    run = next(v.run_id for v in project.versions("demand") if v.version == first)
    packs = list((tmp_path / ".manymodels" / "artifacts").glob(f"*/{run}/artifacts/model/pack"))
    assert len(packs) == 1
    shutil.rmtree(packs[0] / "shards")
    code, out = cli(tmp_path, "rollback", "demand")
    assert code == 1 and f"version {first} of" in out and "cannot serve" in out, out
    assert f"still version {second}" in out, out
    assert state(project) == before

    # killed while it wrote its pack: a run left RUNNING with a partial pack, which gc lists as dead and the next
    # promotion removes, files and all (before: no command listed or removed it)
    code, out = cli(tmp_path, "promote", "demand", "--all", fault="promote.composed:kill")
    assert code == -9, out
    assert state(project) == before
    (dead,) = [r for r in project.target_context.tracker.runs(project.target_context.experiment("demand"), "demand",
                                                               kind="promote") if r.status == "dead"]
    (folder,) = (tmp_path / ".manymodels" / "artifacts").glob(f"*/{dead.run_id}")
    assert any(folder.rglob("*.parquet"))
    code, out = cli(tmp_path, "gc", "demand", "--keep", "100", "--dry-run")
    assert code == 0 and f"run {dead.run_id} (promote, dead: its process was killed before it finished)" in out, out
    code, out = cli(tmp_path, "promote", "demand", "--all")
    assert code == 0 and f"removed run {dead.run_id}: a promotion killed before it finished" in out, out
    assert not folder.exists()
    assert not [r for r in project.target_context.tracker.runs(project.target_context.experiment("demand"),
                                                                 "demand", kind="promote") if r.status == "dead"]
