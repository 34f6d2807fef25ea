"""MLflow's client set up for manymodels' commands: bounded HTTP, quiet output, one process at a time creating
the embedded store."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from manymodels.errors import TrackingUnreachable

# MLflow prints "🏃 View run … at: …" links to stdout after each run unless this says not to.
SUPPRESS_RUN_LINKS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
# ... and draws a "Downloading artifacts" progress bar for every artifact read (an evaluation table, say).
ARTIFACT_BARS = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


# A store's SQL errors: MLflow's message holds the statement and its parameters (a run's values, segment names),
# SQLAlchemy's hints and a link; none of it is for the user.
_NOISE = ("[SQL:", "[parameters:", "(Background on this error", "(raised as a result of")
_FULL = ("database or disk is full", "No space left on device", "disk I/O error")
# MLflow's SQL store logs every database error at ERROR with its traceback before raising it, which manymodels
# reports in one line; kept for --debug.
DB_LOGGER = "mlflow.store.db.utils"
DISK_FULL = "the disk holding it is full or failing"


def mlflow_message(exc: BaseException, limit: int = 300) -> str:
    """What an MLflow error says, in one line, without SQL, parameters or hints: a full disk under the embedded
    store says so."""
    text = str(getattr(exc, "message", None) or exc)
    chain = [text]
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(chain) < 10:
        chain.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    for marker in _FULL:
        if any(marker in part for part in chain):
            return f"{DISK_FULL} ({marker}): free space, then run the command again"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(_NOISE)]
    line = lines[0] if lines else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


_HTTP_SET: dict[str, str] = {}  # the MLflow HTTP settings bound_http wrote (others in the environment are the user's)


def bound_http(timeout_s: float, retries: int) -> None:
    """Bound MLflow's HTTP client for this process: `timeout_s` per request, `retries` retries backing off 0, 2, 4,
    8 ... s (its defaults wait minutes: 4 min before saying a server is down, 20 min for one that never answers).
    MLflow reads these at every request. A value already in the environment that this function did not write
    (the user's, or `serve`'s shorter ones) is left as it is."""
    wanted = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, round(timeout_s))),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    }
    for key, value in wanted.items():
        if key not in os.environ or os.environ[key] == _HTTP_SET.get(key):
            os.environ[key] = _HTTP_SET[key] = value


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the block; where there is no fcntl (Windows), none."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def quiet_mlflow() -> Iterator[None]:
    """While manymodels works: MLflow's INFO lines (database set-up, waits), run links and artifact progress
    bars kept out of the output; the caller's own settings come back afterwards."""
    import mlflow  # noqa: F401 - its import sets its logger's level; lowered here after it, not undone by it

    logger = logging.getLogger("mlflow")
    level = logger.level
    db_logger = logging.getLogger(DB_LOGGER)
    db_level = db_logger.level
    if db_logger.getEffectiveLevel() < logging.CRITICAL:
        db_logger.setLevel(logging.CRITICAL)
    saved = {name: os.environ.get(name) for name in (SUPPRESS_RUN_LINKS, ARTIFACT_BARS)}
    if logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    os.environ[SUPPRESS_RUN_LINKS] = "true"
    os.environ[ARTIFACT_BARS] = "false"
    try:
        yield
    finally:
        logger.setLevel(level)
        db_logger.setLevel(db_level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Ask a tracking server over HTTP whether it is up, once and quickly (a local store always is).

    Raises:
        TrackingUnreachable: no answer within `timeout` seconds, or not a tracking server's answer.
    """
    parsed = urlparse(tracking_uri)
    if parsed.scheme not in ("http", "https"):
        return
    import requests  # MLflow's own HTTP client library

    url = tracking_uri.rstrip("/") + "/health"
    try:
        answer = requests.get(url, timeout=timeout)
    except requests.RequestException as exc:
        reason = type(exc).__name__
        if isinstance(exc, requests.ConnectionError) and "refused" in str(exc).lower():
            reason = "connection refused"
        elif isinstance(exc, requests.Timeout):
            reason = f"no answer in {timeout:g} s"
        raise TrackingUnreachable(
            f"tracking server {tracking_uri} is not reachable ({reason}): start it, or check the "
            f"target's tracking_uri (try: curl {url})"
        ) from exc
    if answer.status_code >= 500:
        raise TrackingUnreachable(
            f"tracking server {tracking_uri} is not reachable (HTTP {answer.status_code} from {url})"
        )
