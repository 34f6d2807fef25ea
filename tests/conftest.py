"""Shared fixtures: a real MLflow tracking server on 127.0.0.1, a real headless Chromium, a Spark session."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# MLflow 3's client reports usage to mlflow-telemetry.io from a thread: not from tests (a call counted or not by the
# machine's speed, and no test leaves the machine)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# The commands' tables as a 200-column terminal draws them, wherever pytest runs: piped, rich falls back to 80 columns,
# where a longer temporary path (pytest's --basetemp, pytest-xdist's `popen-gwN/`) wraps a table's cells differently
# and a test asserting a phrase in one would depend on where it ran. A test about narrow output sets COLUMNS itself.
os.environ["COLUMNS"] = "200"

from helpers import free_port, stop_process, wait_until_up

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _trust_as_the_environment_says() -> Iterator[None]:
    """Each test starts and ends with this process trusting as its environment says: a command's target (in-process
    CLI, Python API) sets the process's trust of pickle and its signing key, which must not reach the next test."""
    from manymodels.estimators import allow_pickle
    from manymodels.registry.signing import use_environment_key

    yield
    allow_pickle(None)
    use_environment_key()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` (sqlite backend, proxied artifacts) on a free port of 127.0.0.1."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow_cli = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [mlflow_cli, "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", proc, root / "server.log")
    except RuntimeError:
        log.close()
        raise
    try:
        yield url
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """One real Spark session for the module: 2 cores, and a failed task is retried once (`local[2,2]`;
    plain `local[2]` never retries, unlike a cluster)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # spark.plugins emptied: after a local Spark Connect session stopped in this process (a file run before this
    # one), the JVM starts a classic session with Connect's plugin still set, which binds port 15002 again and keeps it
    # from the next Connect server (seen: `manymodels run` on `remote: local[2]` failed to bind).
    session = (SparkSession.builder.master("local[2,2]").appName("manymodels-tests")
               .config("spark.sql.shuffle.partitions", "2").config("spark.ui.enabled", "false")
               .config("spark.plugins", "").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _local_connect_lock() -> Iterator[None]:
    """Held while a local Spark Connect server runs: pyspark starts every one on port 15002, so two at once (`make
    test`'s pytest processes: the main part's, the forecast extra's) would clash. Machine-wide, through a file lock."""
    with open(Path(tempfile.gettempdir()) / "manymodels-tests-spark-connect.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits for the other process's server to stop
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture
def local_connect() -> Iterator[None]:
    """For a test whose command starts a local Spark Connect server (`remote: local[2]`): one at a time."""
    yield from _local_connect_lock()


@pytest.fixture(scope="module")
def connect_spark() -> Iterator[Any]:
    """A real Spark Connect session for the module: a local Connect server, `remote("local[2]")`."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for _ in _local_connect_lock():
        session = SparkSession.builder.remote("local[2]").appName("manymodels-connect-tests").getOrCreate()
        assert type(session).__module__.startswith("pyspark.sql.connect")  # really Connect, not classic
        yield session
        session.stop()


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A real headless Chromium (Debian's package), driven by Playwright; skipped without it, except in CI."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        message = "needs Debian's chromium (apt-get install chromium; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


# Test files `make test` runs in a pytest process of their own, beside the rest: real processes that mostly wait
# (pip installing a generated project into a fresh virtualenv, commands killed, stopped or cut off from their
# tracking server). Each process starts its own MLflow server; these files share nothing else with the others.
APART = frozenset({
    "test_init_project.py", "test_tracking_faults.py", "test_kill.py", "test_promotion_faults.py",
    "test_store_creation.py", "test_files.py", "test_resume.py",
    # waiting for JVMs (a Spark standalone cluster) and for a tracking server's answers: the main part was the longer
    "test_spark_cluster.py", "test_mlflow_server.py",
})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in APART:
            item.add_marker(pytest.mark.apart)
