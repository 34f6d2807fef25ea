"""A small job of a fresh command: one worker imports the model libraries while the driver imports MLflow, then
does the work; a worker that cannot start leaves the work to the driver."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import Future

import pytest

from manymodels.engines.local import LocalEngine

FRESH = """
import os, sys
from manymodels.engines.local import LocalEngine
engine = LocalEngine(workers=2)
engine.start(rows=10, overlap=True)
pids = list(engine._map(os.getpid, [(), ()], 2))
print(all(pid != os.getpid() for pid in pids), "lightgbm" in sys.modules)
engine.close()
engine = LocalEngine(workers=2)
engine.start(rows=10)  # no overlap asked: the job stays here
print(list(engine._map(os.getpid, [()], 1)) == [os.getpid()])
"""


def test_a_small_job_runs_on_one_worker_and_the_driver_imports_no_model_library() -> None:
    out = subprocess.run([sys.executable, "-c", FRESH], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.split() == ["True", "False", "True"], out.stdout + out.stderr


def test_a_worker_that_cannot_start_leaves_the_small_job_to_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for imported in ("lightgbm", "mlflow"):  # as in a command's fresh process
        monkeypatch.delitem(sys.modules, imported, raising=False)
    engine = LocalEngine(workers=2)
    engine.start(rows=10, overlap=True)
    assert engine._pool is not None
    failed: Future[None] = Future()
    failed.set_exception(OSError("cannot start"))
    engine._warming = [failed]
    assert list(engine._map(os.getpid, [()], 1)) == [os.getpid()]
    assert engine._pool is None
    engine.close()
