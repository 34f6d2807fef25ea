"""What `manymodels show` reports of a run: summary metrics, failed segments, worst segments."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from manymodels.bundle.schema import HIGHER_IS_BETTER
from manymodels.errors import RegistryError
from manymodels.jobs.context import Target
from manymodels.registry import manifest as mf
from manymodels.registry.tracking import TAG


def run_report(target: Target, run_id: str, worst: int = 10, failed_limit: int | None = None) -> dict[str, Any]:
    """A run's summary, its failed segments (with errors) and its worst segments by the primary metric.

    Raises:
        RegistryError: no such run on this target's tracking server.
    """
    info = target.tracker.run(run_id)
    report: dict[str, Any] = {
        "run_id": info.run_id,
        "model": info.model,
        "status": info.status,
        "started": dt.datetime.fromtimestamp(info.start_time).isoformat(timespec="seconds"),
        "bundle": info.tags.get(TAG + "bundle"),
        "target": info.tags.get(TAG + "target"),
        "git_commit": info.tags.get(TAG + "git_commit"),
        "error": info.tags.get(TAG + "error"),
        "metrics": info.metrics,
        "params": info.params,
        "segments_failed": int(info.metrics.get("segments_failed", 0)),
        "failed": [],
        "worst": [],
    }
    try:
        pack = target.open_pack(info)
    except RegistryError:
        report["manifest"] = None  # a run that died before writing its pack
        return report
    manifest, meta = pack.manifest, pack.info
    keys = list(meta.segment_by)
    report["metric"] = meta.metric
    failed = manifest[~mf.is_ok(manifest)]
    if failed_limit is not None:
        failed = failed.head(failed_limit)
    report["failed"] = _records(failed[[*keys, mf.ROWS, mf.ERROR]])
    ok = manifest[mf.is_ok(manifest) & manifest[meta.metric].notna()]
    ascending = meta.metric in HIGHER_IS_BETTER
    ranked = ok.sort_values([meta.metric, mf.SEGMENT_INDEX], ascending=[ascending, True]).head(worst)
    report["worst"] = _records(ranked[[*keys, mf.ROWS, meta.metric]])
    return report


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in frame.to_dict(orient="records"):
        out.append(
            {k: (None if v is pd.NA or (isinstance(v, float) and v != v) else _plain(v)) for k, v in row.items()}
        )
    return out


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
