"""Staging folders: where a run whose artifact store is remote writes its files on this machine before they are
uploaded (`Tracker.run_folder`), found again by a resume and swept once no command will use them."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from manymodels.registry.run_state import STATUS_OK, STATUS_RUNNING, TAG, is_run_id, run_status, staging_prefix

if TYPE_CHECKING:
    from manymodels.registry.tracking import Tracker


def staged(run_id: str) -> Path | None:
    """The folder a run's process staged its artifacts in on this machine (`run_folder`), if it is still here."""
    found = sorted(Path(tempfile.gettempdir()).glob(staging_prefix(run_id) + "*"))
    return next((f for f in found if f.is_dir()), None)


def sweep_staging(tracker: Tracker, bundle: str, model: str) -> list[Path]:
    """Remove the staging folders (in the temporary folder) that no command will use again: those of the tracker's
    runs that finished, and those of the model's runs (in this bundle) whose process is gone or that failed: a
    training of the model that does not resume them starts afresh (a command killed with SIGKILL cleans nothing
    up). A run still at work keeps its folder; another model's dead run keeps it for `train --resume` until that
    model trains again.

    Returns:
        The folders removed.
    """
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(staging_prefix("*") + "*"):
        run_id = folder.name.split("-")[1]
        if not folder.is_dir() or not is_run_id(run_id):
            continue
        try:
            tags = tracker.client.get_run(run_id).data.tags
        except Exception:  # noqa: BLE001, S112 - another server's run, or no answer: not ours to judge now
            continue
        status = run_status(tags, "running")
        if status == STATUS_RUNNING:
            continue  # still at work (or on another host: left alone)
        ours = tags.get(TAG + "bundle") == bundle and tags.get(TAG + "model") == model
        if status == STATUS_OK or ours:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
