"""A command killed or stopped mid-work, in a real process: its workers end with it, the run says what happened."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import manymodels as mm
from helpers import chunked_bundle
from manymodels.faults import ENV

MARK = "MANYMODELS_TEST_MARK"
MANYMODELS = str(Path(sys.executable).parent / "manymodels")  # the console script a user runs


def marked(mark: str) -> list[int]:
    """The live processes whose environment carries this mark (the command and every worker it started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"{MARK}={mark}".encode() in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


def start_training(root: Path, fault: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """`manymodels train` in a process of its own, its output in files (a worker outliving it would hold pipes
    open, and the test would wait for it instead of failing)."""
    mark = uuid.uuid4().hex
    env = {**os.environ, ENV: fault, MARK: mark, "COLUMNS": "200"}
    args = [MANYMODELS, "--bundle", str(root), "train", "demand", "--workers", "2"]
    with open(root / "out.txt", "w") as out, open(root / "err.txt", "w") as err:
        code = subprocess.run(args, stdout=out, stderr=err, timeout=300, env=env, check=False).returncode  # noqa: S603
    done = subprocess.CompletedProcess(args, code, (root / "out.txt").read_text(), (root / "err.txt").read_text())
    return done, mark


def gone_within(mark: str, seconds: float) -> list[int]:
    """The marked processes still alive after waiting up to `seconds` for them to end."""
    deadline = time.monotonic() + seconds
    while (left := marked(mark)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    # small chunks: when the first segment is done, other chunks are still being fitted by the workers
    return chunked_bundle(tmp_path, segments=40, rows=200, per_chunk=2)


@pytest.mark.slow
def test_kill_9_of_train_takes_its_workers_and_the_run_shows_dead(fleet: Path) -> None:
    # the workers then sleep in their chunks, as in a long fit: only the watchdog ends them within seconds
    done, mark = start_training(fleet, "train.fitting:kill,fit.segment:sleep")
    assert done.returncode == -9, done.stderr[-2000:]
    assert gone_within(mark, 5.0) == []  # before: workers lived on, one wrote its shard into the dead run 83 s later
    runs = mm.load_bundle(fleet).runs("demand")  # what `manymodels runs` lists
    assert [r.status for r in runs] == ["dead"]


@pytest.mark.slow
def test_sigterm_of_train_is_like_ctrl_c(fleet: Path) -> None:
    done, mark = start_training(fleet, "train.fitting:term,fit.segment:sleep")
    assert done.returncode == 143, done.stdout[-2000:] + done.stderr[-2000:]
    assert "terminated (SIGTERM)" in done.stderr and "Traceback" not in done.stderr
    assert "`manymodels train demand --resume " in done.stderr  # how to finish it
    assert gone_within(mark, 5.0) == []
    runs = mm.load_bundle(fleet).runs("demand")
    assert [r.status for r in runs] == ["failed"]
    assert "Terminated" in runs[0].tags.get("manymodels.error", "")


@pytest.mark.slow
def test_destroy_refuses_while_a_training_runs_and_not_after_it_died(fleet: Path) -> None:
    deployed = subprocess.run([MANYMODELS, "--bundle", str(fleet), "deploy"], capture_output=True, text=True,  # noqa: S603
                              timeout=120, check=False)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr  # the experiments destroy removes
    mark = uuid.uuid4().hex
    env = {**os.environ, ENV: "fit.segment:sleep", MARK: mark, "COLUMNS": "200"}
    with open(fleet / "train.txt", "w") as log:
        train = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            [MANYMODELS, "--bundle", str(fleet), "train", "demand", "--workers", "2"], stdout=log, stderr=log, env=env
        )
    try:
        project = mm.load_bundle(fleet)
        deadline = time.monotonic() + 120
        while not project.runs("demand") and time.monotonic() < deadline and train.poll() is None:
            time.sleep(0.2)
        assert [r.status for r in project.runs("demand")] == ["running"], (fleet / "train.txt").read_text()
        registry = project.target_context.registry("demand")
        with registry.lock("promote"):  # a live promotion too
            shown = subprocess.run(  # noqa: S603
                [MANYMODELS, "--bundle", str(fleet), "summary"], capture_output=True, text=True, timeout=120,
                env={**os.environ, "COLUMNS": "250"}, check=False)
            assert shown.returncode == 0 and "promote, since" in shown.stdout, shown.stdout + shown.stderr
            refused = subprocess.run(  # noqa: S603
                [MANYMODELS, "--bundle", str(fleet), "destroy", "--auto-approve"], capture_output=True, text=True,
                timeout=120, env={**os.environ, "COLUMNS": "250"}, check=False)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "destroy would lose work in progress" in refused.stderr and "is running (pid" in refused.stderr
        assert "is locked by" in refused.stderr
        assert [r.status for r in project.runs("demand")] == ["running"]  # nothing was removed
    finally:
        train.kill()
        train.wait()
    assert gone_within(mark, 5.0) == []
    done = subprocess.run(  # noqa: S603
        [MANYMODELS, "--bundle", str(fleet), "destroy", "--auto-approve"], capture_output=True, text=True,
        timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr  # the dead run does not block
    assert "experiment test-bundle/dev/demand" in done.stdout, done.stdout
