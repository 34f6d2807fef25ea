"""What `manymodels show` prints of a run, and the HTML page `manymodels report` writes of it."""

from __future__ import annotations

import datetime as dt
import difflib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from manymodels.bundle.schema import HIGHER_IS_BETTER
from manymodels.data.timegrid import TimeGrid
from manymodels.errors import BundleError, DataError, RegistryError
from manymodels.jobs.context import Target
from manymodels.jobs.decide import CHALLENGER, DECISION
from manymodels.jobs.drift import MONITORING_TABLE
from manymodels.jobs.drift import STATUS as MONITOR_STATUS
from manymodels.jobs.drift import STATUS_ORDER as MONITOR_STATUSES
from manymodels.jobs.pages import (
    EVALUATION_FOLDER,
    PROMOTION_TABLE,
    evaluation_section,
    monitoring_section,
    page,
    run_facts,
    training_sections,
)
from manymodels.registry import manifest as mf
from manymodels.registry.hierarchy import LevelAccuracy, holdout_levels
from manymodels.registry.run_state import TAG, RunInfo
from manymodels.report import Chart, Section
from manymodels.report.forecast_plots import segment_figure
from manymodels.segment.forecast_windows import read_plot_record


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


@dataclass
class HtmlReport:
    """A run's page: the HTML, the run it shows, what kind of run that is, the evaluations it includes."""

    html: str
    run_id: str
    kind: str  # training | promotion
    version: int | None
    evaluations: list[str]


def html_report(target: Target, name: str, run_id: str | None = None, version: int | None = None) -> HtmlReport:
    """The page of a run of `name`: the named run, a version's run, else the champion's (else the latest training).

    A training run's page has its fleet and the evaluations saved in it; a promotion's, the
    composite champion it made and the table it promoted by.

    Raises:
        RegistryError: no such run or version, a run of another model, or nothing trained yet.
    """
    info, version = _resolved(target, name, run_id, version)
    if info.tags.get(TAG + "kind") == "monitor":
        return _monitoring_report(target, name, info)
    pack = target.open_pack(info)
    meta = pack.info
    kind = "promotion" if info.tags.get(TAG + "kind") == "promote" else "training"
    extra = [("model", name), ("status", info.status)]
    if version is not None:
        extra.append(("version", str(version)))
    facts = run_facts(info.run_id, info.start_time, info.tags.get(TAG + "target"), extra)
    plan = pack.plan
    grid = TimeGrid.of(plan.freq, plan.time_kind) if plan is not None and plan.freq else None
    plots = pack.plots() if plan is not None else None
    levels = None
    if plan is not None and plan.hierarchy:
        try:
            levels = holdout_levels(pack)
        except BundleError as exc:  # hierarchicalforecast missing: the rest of the page still shows
            levels = LevelAccuracy(str(plan.reconcile), meta.metric, pd.DataFrame(), str(exc))
    sections: list[Section] = training_sections(pack.manifest, list(meta.segment_by), meta.metric, facts, plots, grid,
                                                levels)
    shown: list[str] = []
    for artifact, table in _tables(target, info, kind):
        if CHALLENGER in table.columns and DECISION in table.columns:
            title = "The evaluation it followed" if kind == "promotion" else f"Evaluation {Path(artifact).stem}"
            sections.append(evaluation_section(table, list(meta.segment_by), meta.metric, title, [("table", artifact)]))
            sections[-1].anchor = f"evaluation-{len(shown)}"
            shown.append(artifact)
    return HtmlReport(page(name, kind, sections), info.run_id, kind, version, shown)


def _resolved(target: Target, name: str, run_id: str | None, version: int | None) -> tuple[RunInfo, int | None]:
    if version is not None:
        return target.resolve_version(name, version), version
    if run_id is not None:
        info = target.tracker.run(run_id)
        if info.model != name:
            raise RegistryError(f"run {run_id} is of model {info.model!r}, not {name!r}")
        return info, None
    return target.resolve_serving(name, None)


def segment_report(target: Target, name: str, key: str, run_id: str | None = None, version: int | None = None
                   ) -> HtmlReport:
    """One segment's page of a forecast run (as `html_report` picks the run): its history, holdout, forecast and
    intervals, and what training found of it.

    Raises:
        DataError: the model is no forecast; no such segment in the run (the closest named); a segment with
            nothing drawn (it failed, or was trained before its plot was kept).
        RegistryError: as `html_report`.
    """
    info, version = _resolved(target, name, run_id, version)
    pack = target.open_pack(info)
    plan, manifest = pack.plan, pack.manifest
    if plan is None:
        raise DataError(f"model {name!r} is no forecast: --segment draws a forecast's segment")
    labels = mf.segment_labels(manifest[list(pack.segment_by)]).astype(str)
    found = np.flatnonzero(labels.to_numpy() == key)
    if not found.size:
        close = difflib.get_close_matches(key, labels.tolist(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"run {info.run_id} of model {name!r} has no segment {key!r}{hint}")
    row = manifest.iloc[int(found[0])]
    record = read_plot_record(pack.plots().get(int(row[mf.SEGMENT_INDEX])))
    if record is None:
        why = f"it failed: {row[mf.ERROR]}" if row[mf.STATUS] != mf.OK else "its run kept no plot of it"
        raise DataError(f"segment {key!r} has nothing to draw: {why}")
    grid = TimeGrid.of(plan.freq, plan.time_kind) if plan.freq else None
    value = float(row[pack.info.metric]) if pack.info.metric in manifest.columns else float("nan")
    facts = run_facts(info.run_id, info.start_time, info.tags.get(TAG + "target"), [
        ("model", name), ("segment", key), ("rows", f"{int(row[mf.ROWS]):,}"),
        *([("candidate", str(row[mf.CANDIDATE]))] if mf.CANDIDATE in manifest.columns else []),
        (pack.info.metric, f"{value:.4g}")])
    section = Section(f"Segment {key}", "segment", facts=facts,
                      charts=[Chart(segment_figure(key, record, grid, pack.info.metric, value))])
    return HtmlReport(page(name, f"segment {key}", [section]), info.run_id, "segment", version, [])


def _tables(target: Target, info: RunInfo, kind: str) -> list[tuple[str, pd.DataFrame]]:
    """The decision tables a run holds: a promotion's table, or a training run's evaluations (newest first)."""
    client = target.tracker.client
    if kind == "promotion":
        wanted = [PROMOTION_TABLE]
    else:
        try:
            listed = client.list_artifacts(info.run_id, EVALUATION_FOLDER)
        except Exception:  # noqa: BLE001 - a run without evaluations
            listed = []
        latest = info.tags.get(TAG + "evaluation")
        wanted = sorted((f.path for f in listed if f.path.endswith(".parquet")), key=lambda p: p != latest)
    out = []
    with tempfile.TemporaryDirectory(prefix="manymodels-report-") as tmp:
        for artifact in wanted:
            try:
                local = client.download_artifacts(info.run_id, artifact, tmp)
            except Exception:  # noqa: BLE001, S112 - a table that is not there is not shown
                continue
            out.append((artifact, pd.read_parquet(local)))
    return out


def _monitoring_report(target: Target, name: str, info: RunInfo) -> HtmlReport:
    """A monitoring run's page, from the table it logged."""
    with tempfile.TemporaryDirectory(prefix="manymodels-report-") as tmp:
        try:
            table = pd.read_parquet(target.tracker.client.download_artifacts(info.run_id, MONITORING_TABLE, tmp))
        except Exception as exc:
            raise RegistryError(f"monitoring run {info.run_id} has no {MONITORING_TABLE}: {exc}") from exc
    counts = {s: int((table[MONITOR_STATUS] == s).sum()) for s in MONITOR_STATUSES}
    notes = ["the fleet breached its monitoring thresholds"] if info.metrics.get("breached") else []
    facts = run_facts(info.run_id, info.start_time, info.tags.get(TAG + "target"),
                      [("model", name), ("models of run", info.tags.get(TAG + "pack_run", ""))])
    section = monitoring_section(table, list(target.model(name).segment_by), target.model(name).primary_metric,
                                 counts, notes, facts)
    return HtmlReport(page(name, "monitoring", [section]), info.run_id, "monitoring", None, [])
