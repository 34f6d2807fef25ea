"""The monitor task: how the serving models' new rows drift from what they trained on, and how they perform.

Per segment, against the reference profile training stored in the pack (`segment.profile`):
the population stability index (PSI) and a KS-type distance of each feature and of the
predictions, and, when the rows carry the label, the metric on them against the holdout metric.
Thresholds come from the model's `monitoring:`; the fleet breaches when too many judged segments
drifted or degraded. The table and a page are logged as a run of `<bundle>/<target>/monitoring`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from manymodels.data import output_format, write_parquet, write_table
from manymodels.engines import Engine, segment_labels
from manymodels.engines.operations import MON_STEP, MONITOR_LEVEL, PREDICTION, Watch
from manymodels.errors import DataError, RegistryError
from manymodels.jobs.context import Target
from manymodels.jobs.drift import (
    DEGRADED,
    DRIFTED,
    MONITORING_TABLE,
    NO_PROFILE,
    OK,
    STATUS,
    STATUS_ORDER,
    judge,
)
from manymodels.jobs.pages import monitoring_section, run_facts, write_report
from manymodels.registry import RunInfo
from manymodels.registry.forecasting import lower_column, upper_column
from manymodels.registry.provenance import current_user
from manymodels.registry.run_state import TAG
from manymodels.report import REPORT_FILE


@dataclass
class MonitorOutcome:
    """What monitoring found: the per-segment table (worst first), counts, whether the fleet breached."""

    model: str
    pack_run: str
    version: int | None
    data: str
    metric: str
    table: pd.DataFrame
    counts: dict[str, int]
    drifted_fraction: float
    breached: bool
    problems: list[str] = field(default_factory=list)
    run_id: str | None = None
    output: Path | None = None
    warnings: list[str] = field(default_factory=list)
    segment_by: list[str] = field(default_factory=list)
    steps: pd.DataFrame | None = None  # a forecast's metric per step after training, over the fleet
    significance: float = 0.01  # the false discovery rate the flags were decided at
    metric_increase_max: float = 0.25  # the relative bar the metric is judged against
    min_rows: int = 0  # the new rows a segment needs to be judged (monitoring.min_rows, a forecast's horizon at most)

    @property
    def judged(self) -> int:
        """Segments with a model and enough new rows to judge."""
        return _judged(self.counts)

    def flagged(self) -> pd.DataFrame:
        """The segment columns of the segments that drifted or degraded (what `train --segments-from` retrains)."""
        chosen = self.table[self.table[STATUS].isin([DRIFTED, DEGRADED])]
        return chosen[self.segment_by].reset_index(drop=True)


def monitor(
    target: Target,
    name: str,
    data: str | Path | Any,
    version: int | None = None,
    run_id: str | None = None,
    output: Path | None = None,
    save: bool = True,
    engine: Engine | None = None,
    workers: int | None = None,
) -> MonitorOutcome:
    """Judge the serving models (the champion, else the latest run; or the version / run named) on new rows.

    Raises:
        DataError: the rows lack the segment columns or a feature; an output path of an unknown kind.
        RegistryError: nothing trained yet, no such version or run.
    """
    model = target.model(name)
    if output is not None:
        output_format(output)
    info, version = _serving(target, name, version, run_id)
    pack = target.open_pack(info)
    source = target.source(data)
    columns = target.columns_of(source)
    segment_by, features = list(pack.info.segment_by), list(pack.info.features)
    if columns is not None:
        missing = [c for c in pack.info.required if c not in columns]
        if missing:
            raise DataError(f"{_named(data)} lacks column(s) {', '.join(missing)} that model {name!r} reads")
    label = pack.info.label if columns is None or pack.info.label in columns else None
    scored = columns is not None and PREDICTION in columns
    others = tuple(c for c in pack.info.inputs if c not in (*segment_by, *features)  # the time column, when there
                   and (c in pack.info.required or columns is None or c in columns))
    plan = pack.plan
    band = (lower_column(MONITOR_LEVEL), upper_column(MONITOR_LEVEL))
    carried = plan is not None and scored and columns is not None and all(c in columns for c in band)
    watch = Watch(tuple(features), label, pack.info.task, pack.info.metric, scored, others,
                  plan.horizon if plan is not None else 0, band if carried else ())
    policy = model.monitoring
    if plan is not None and "min_rows" not in policy.model_fields_set:  # a forecast judges at most its horizon's rows
        policy = policy.model_copy(update={"min_rows": min(policy.min_rows, plan.horizon)})
    with target.engine(engine, workers) as running:
        root = target.reachable_pack(running, info, pack)
        raw = running.monitor(source, segment_by, root, watch)
    fallback = pack.fallback is not None
    steps = step_table(raw, pack.info.metric, watch.steps)
    table = judge(raw.drop(columns=[c for c in raw.columns if c.startswith(MON_STEP)]), pack.manifest, segment_by,
                  features, pack.info.metric, policy, fallback)
    outcome = _outcome(name, info, version, _named(data), pack.info.metric, table, policy, segment_by)
    outcome.steps = steps
    if output is not None:
        write_table(outcome.table, output)
        outcome.output = output
    if save:
        outcome.run_id = _log(target, name, outcome, info)
    return outcome


def step_table(raw: pd.DataFrame, metric: str, steps: int) -> pd.DataFrame | None:
    """A forecast's metric at each step after training, over the segments whose new rows reach it (rmse: the root
    mean square of their errors; other metrics: their mean); None for other models."""
    if not steps:
        return None
    rows = []
    for k in range(1, steps + 1):
        values = raw[f"{MON_STEP}{k}"].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        value = float(np.sqrt(np.mean(values**2))) if metric == "rmse" and values.size else \
            float(np.mean(values)) if values.size else float("nan")
        rows.append({"step": k, "segments": int(values.size), metric: value})
    return pd.DataFrame(rows)


def _judged(counts: dict[str, int]) -> int:
    """Segments with a model and enough new rows (judged on drift, or on the metric alone without a profile)."""
    return sum(counts[s] for s in (OK, DRIFTED, DEGRADED, NO_PROFILE))


def _named(data: Any) -> str:
    return str(data) if isinstance(data, str | Path) else f"a {type(data).__name__}"


def _serving(target: Target, name: str, version: int | None, run_id: str | None) -> tuple[RunInfo, int | None]:
    if version is not None:
        return target.resolve_version(name, version), version
    return target.resolve_serving(name, run_id)


def _outcome(name: str, info: RunInfo, version: int | None, data: str, metric: str, table: pd.DataFrame, policy: Any,
             segment_by: list[str]) -> MonitorOutcome:
    counts = {s: int((table[STATUS] == s).sum()) for s in STATUS_ORDER}
    judged = _judged(counts)
    flagged = counts[DRIFTED] + counts[DEGRADED]
    fraction = flagged / judged if judged else 0.0
    breached = fraction > policy.max_drifted_fraction
    problems = []
    if breached:
        problems.append(
            f"{flagged:,} of {judged:,} judged segments ({fraction:.1%}) drifted or degraded: more than "
            f"monitoring.max_drifted_fraction {policy.max_drifted_fraction:.0%}"
        )
    return MonitorOutcome(name, info.run_id, version, data, metric, table, counts, fraction, breached, problems,
                          segment_by=segment_by, significance=policy.significance,
                          metric_increase_max=policy.metric_increase_max, min_rows=policy.min_rows)


def monitoring_experiment(target: Target) -> str:
    """`<bundle>/<target>/monitoring` (its last part prefixed in development mode)."""
    config = target.config
    return f"{config.name}/{config.target}/{target.development_prefix()}monitoring"


def _log(target: Target, name: str, outcome: MonitorOutcome, info: RunInfo) -> str:
    """One run of the monitoring experiment: the thresholds' verdict as metrics, the table and the page."""
    tracker = target.tracker
    exp_id = tracker.experiment_id(monitoring_experiment(target))
    assert exp_id is not None  # noqa: S101 - create=True always returns an id
    tags = {TAG + "bundle": target.config.name, TAG + "target": target.name, TAG + "model": name,
            TAG + "kind": "monitor", TAG + "pack_run": info.run_id, "mlflow.user": current_user()}
    policy = target.model(name).monitoring
    params = {"model": name, "data": outcome.data, "pack_run": info.run_id, "version": outcome.version or "none",
              **{f"monitoring.{k}": v for k, v in policy.model_dump().items()}}
    run_id, _ = tracker.start_run(exp_id, f"{name}-monitor-{time.strftime('%Y%m%d-%H%M%S')}", tags, params)
    metrics = {f"segments_{k}": float(v) for k, v in outcome.counts.items()}
    metrics.update(drifted_fraction=outcome.drifted_fraction, breached=float(outcome.breached))
    with tempfile.TemporaryDirectory(prefix="manymodels-monitor-") as tmp:
        folder = Path(tmp)
        write_parquet(outcome.table, folder / MONITORING_TABLE)
        facts = run_facts(run_id, time.time(), target.name, [("model", name), ("models of run", info.run_id),
                                                             ("data", outcome.data)])
        write_report(folder / REPORT_FILE, name, "monitoring",
                     lambda: [monitoring_section(outcome.table, outcome.segment_by, outcome.metric, outcome.counts,
                                                 outcome.problems, facts)], outcome.warnings.append)
        try:
            tracker.finish_run(run_id, metrics, True, artifacts=folder)
        except RegistryError:
            tracker.fail_run(run_id, "could not log the monitoring table")
            raise
    return run_id


def flagged_segments(target: Target, name: str, run_id: str) -> list[str]:
    """The segments a monitoring run found drifted or degraded, as `train`'s `segments` names them.

    Raises:
        RegistryError: no such run, or not a monitoring run of this model.
    """
    info = target.tracker.run(run_id)
    if info.tags.get(TAG + "kind") != "monitor" or info.model != name:
        raise RegistryError(f"run {run_id} is not a monitoring run of model {name!r}")
    with tempfile.TemporaryDirectory(prefix="manymodels-monitor-") as tmp:
        try:
            local = target.tracker.client.download_artifacts(run_id, MONITORING_TABLE, tmp)
        except Exception as exc:
            raise RegistryError(f"monitoring run {run_id} has no {MONITORING_TABLE}: {exc}") from exc
        table = pd.read_parquet(local)
    segment_by = list(target.model(name).segment_by)
    flagged = table.loc[table[STATUS].isin([DRIFTED, DEGRADED]), segment_by].reset_index(drop=True)
    return segment_labels(flagged).tolist()
