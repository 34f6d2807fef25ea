"""A training run's state as manymodels keeps it in MLflow tags, read without importing MLflow: the tag names,
statuses, a run as listed, and whether a run still tagged running is alive."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from manymodels.registry.process import is_gone

TAG = "manymodels."
STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_RUNNING = "running"
FINISH_FILE = "finish.json"  # beside a staged run's artifacts: what finishing it still has to log
ARTIFACTS_DIR = "artifacts"  # the staged artifacts, in a temporary folder of the run's own
STATUS_DEAD = "dead"  # shown, never written: tagged running, but the process that ran it is gone
# A run at work on a tracking server writes the time every HEARTBEAT_SECONDS, so a run whose process died on another
# host (a CI runner, a cluster's driver) is shown dead once STALE_BEATS beats are missed; on this host its pid says.
HEARTBEAT = "heartbeat"
HEARTBEAT_EVERY = "heartbeat_every"
HEARTBEAT_SECONDS = 60.0
STALE_BEATS = 5
_PARAM_MAX = 6000


@dataclass(frozen=True)
class RunInfo:
    """A training run as listed: id, when, outcome and its summary metrics."""

    run_id: str
    model: str
    status: str
    start_time: float
    end_time: float | None
    metrics: dict[str, float]
    tags: dict[str, str]
    artifact_uri: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class RunFolder:
    """A run's artifact folder on this machine; `upload` is the folder to log when the store is remote, else None.

    `keep`: set once work worth resuming is written there; a staged folder is then kept when the run fails.
    """

    path: Path
    upload: Path | None
    keep: bool = False


def staging_prefix(run_id: str) -> str:
    """How a run's staging folder in the temporary folder is named: this, then a random part."""
    return f"manymodels-{run_id}-"


_RUN_ID = re.compile(r"[0-9a-f]{32}")


def is_run_id(text: str) -> bool:
    """Whether `text` is an MLflow run id (32 hex digits): checked before an id names a folder or a reference."""
    return bool(_RUN_ID.fullmatch(text))


def local_path(uri: str) -> Path | None:
    """The local folder of a `file:` (or schemeless) artifact URI; None for remote stores."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and uri.startswith("/"):
        return Path(uri)
    return None


def param_text(value: Any) -> str:
    """A param's value as MLflow keeps it (text, cut to its length limit)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list):
        text = ",".join(map(str, value))
    else:
        text = repr(value)
    return text if len(text) <= _PARAM_MAX else text[: _PARAM_MAX - 3] + "..."



def run_status(tags: Mapping[str, str], state: str, now: float | None = None) -> str:
    """A run's status as shown: its status tag (else MLflow's state), `dead` for a run still tagged running whose
    process is gone: on this host, its pid is; on another, its heartbeat stopped `STALE_BEATS` beats ago."""
    status = tags.get(TAG + "status", state.lower())
    if status != STATUS_RUNNING:
        return status
    gone = is_gone(tags.get(TAG + "host"), tags.get(TAG + "pid"), tags.get(TAG + "pid_start"))
    if gone is None and tags.get(TAG + "host") != socket.gethostname():
        silent = heartbeat_silence(tags, time.time() if now is None else now)
        gone = silent is not None and silent[0] > STALE_BEATS * silent[1]
    return STATUS_DEAD if gone else status


def heartbeat_silence(tags: Mapping[str, str], now: float) -> tuple[float, float] | None:
    """Seconds since a run's last heartbeat and its interval; None for a run that does not beat (an embedded store's,
    or one from before heartbeats)."""
    try:
        return now - float(tags[TAG + HEARTBEAT]), float(tags[TAG + HEARTBEAT_EVERY])
    except (KeyError, ValueError):
        return None

