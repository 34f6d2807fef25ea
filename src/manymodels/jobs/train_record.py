"""What a training run writes about itself: its params and tags, its pack's description, its summary metrics and
the warnings about its fleet."""

from __future__ import annotations

import json
import math
import re
import socket
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from manymodels.engines import Engine, Fleet
from manymodels.jobs.context import Target
from manymodels.jobs.pooled import pooled_candidates
from manymodels.registry import PackInfo
from manymodels.registry import manifest as mf
from manymodels.registry.hierarchy import LevelAccuracy
from manymodels.registry.pack_info import FORECAST, TIME
from manymodels.registry.provenance import current_user, git_commit
from manymodels.registry.run_state import (
    TAG,
)
from manymodels.segment import SegmentSpec, metric_names


def level_summary(levels: LevelAccuracy) -> dict[str, float]:
    """A hierarchy's per-level holdout medians as run metrics: `level.<level>.<metric>_base` and `_reconciled`."""
    out: dict[str, float] = {}
    for row in levels.table.itertuples(index=False):
        name = re.sub(r"[^A-Za-z0-9_.\- ]", "_", str(row.level))
        for kind in ("base", "reconciled"):
            value = float(getattr(row, kind))
            if math.isfinite(value):
                out[f"level.{name}.{levels.metric}_{kind}"] = value
    return out


def pack_info(target: Target, name: str, spec: SegmentSpec, run_id: str) -> PackInfo:
    """What every model of a run's pack shares. A forecast's pack keeps its plan, and names as its features the
    columns a row to forecast carries (the known ones: static values and the history are in each model's state)."""
    extra: dict[str, Any] = {}
    features = list(spec.features)
    if spec.forecast is not None:
        extra = {TIME: spec.forecast.time, FORECAST: asdict(spec.forecast)}
        features = list(spec.forecast.known)
    elif any(c.method == "seasonal" for c in spec.candidates):
        extra = {TIME: spec.time_column}
    return PackInfo(model=name, segment_by=list(spec.segment_by), features=features, label=spec.label,
                    task=spec.task, metric=spec.metric, run_id=run_id, bundle=target.config.name,
                    target=target.name, extra=extra)


def constant_warning(count: int, spec: SegmentSpec) -> str:
    """What to do about segments whose model came out constant."""
    if spec.estimator != "lightgbm":
        return f"{count:,} segment(s) got a model that predicts one value for every row"
    leaf = spec.params.get("min_data_in_leaf", 20)
    return (
        f"{count:,} segment(s) got a constant model: LightGBM found no split, as min_data_in_leaf ({leaf}) is "
        "above what their training rows allow, or no feature varies; lower estimator.params.min_data_in_leaf "
        "(e.g. 2) for thin segments"
    )


def oversized_segments(data: Fleet, limit: int) -> list[str]:
    """A warning naming the segments above `limit` rows: each is fitted whole, in one task's memory."""
    big = np.flatnonzero(data.sizes > limit)
    if big.size == 0:
        return []
    largest = int(big[np.argmax(data.sizes[big])])
    key = "|".join(str(v) for v in data.keys.iloc[largest].tolist())
    return [
        f"{big.size:,} segment(s) have more than {limit:,} rows (largest: {key!r}, {int(data.sizes[largest]):,} "
        "rows); each is fitted whole in one task, so it must fit one worker's memory "
        "(engine.max_segment_rows sets this limit)"
    ]


def segment_metrics(manifest: pd.DataFrame, spec: SegmentSpec) -> pd.DataFrame:
    """The per-segment metrics table: keys, status, rows, holdout metrics, error."""
    columns = [*spec.segment_by, mf.STATUS, mf.ROWS, mf.N_TRAIN, mf.N_TEST, *metric_names(spec.task), mf.ERROR]
    return manifest[columns].copy()


def summarize_manifest(manifest: pd.DataFrame, task: str, seconds: float) -> dict[str, float]:
    """The run's summary metrics: segment counts and each metric's mean, p50 and p95 over segments."""
    ok = mf.is_ok(manifest)
    constant = manifest[mf.CONSTANT].astype("boolean").fillna(False).to_numpy(dtype=bool) \
        if mf.CONSTANT in manifest.columns else np.zeros(len(manifest), dtype=bool)
    summary: dict[str, float] = {
        "segments_total": float(len(manifest)),
        "segments_ok": float(ok.sum()),
        "segments_failed": float((~ok).sum()),
        "segments_constant": float((ok.to_numpy() & constant).sum()),
        "rows_total": float(manifest[mf.ROWS].sum()),
        "wall_seconds": round(seconds, 3),
    }
    for metric in metric_names(task):
        values = manifest.loc[ok, metric].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if values.size:
            summary[f"{metric}_mean"] = float(values.mean())
            summary[f"{metric}_p50"] = float(np.percentile(values, 50))
            summary[f"{metric}_p95"] = float(np.percentile(values, 95))
    return summary


def tuned_params(tuned: dict[str, dict[str, Any]]) -> dict[str, object]:
    """What global tuning found, as run params: each candidate's best parameters, their CV metric, the sample."""
    out: dict[str, object] = {}
    for name, found in tuned.items():
        out[f"tuning.{name}.best"] = json.dumps(found["params"], sort_keys=True, default=str)
        out[f"tuning.{name}.cv_mean"] = found["cv_mean"]
        out[f"tuning.{name}.sample"] = found["sample"]
    return out


def run_tags(target: Target, name: str) -> dict[str, str]:
    config = target.config
    tags = {
        TAG + "bundle": config.name,
        TAG + "target": config.target,
        TAG + "model": name,
        TAG + "kind": "train",
        "mlflow.user": current_user(),
        "mlflow.source.name": str(config.file),
        "mlflow.source.type": "LOCAL",
    }
    commit = git_commit(config.root)
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags[TAG + "git_commit"] = commit
    return tags


def run_params(target: Target, name: str, spec: SegmentSpec, engine: Engine) -> dict[str, object]:
    model = target.model(name)
    params: dict[str, object] = {
        "model": name,
        "dataset": model.dataset,
        "dataset_path": str(target.dataset(name).path),
        "segment_by": list(spec.segment_by),
        "label": spec.label,
        "features": list(spec.features),
        "task": spec.task,
        "estimator": spec.estimator,
        "metric": spec.metric,
        "min_rows": spec.min_rows,
        "engine": engine.kind,
        "workers": engine.workers,
        "host": socket.gethostname(),
    }
    if spec.entry:
        params["estimator.entry"] = spec.entry
    if spec.impute:
        params["impute"] = spec.impute
    if spec.split_by:
        params.update({"split.by": spec.split_by, "split.cutoff": spec.cutoff})
    else:
        params.update({"split.test_size": spec.test_size, "split.seed": spec.seed})
    if not spec.candidates:  # with candidates, they are the models fitted (listed below), not this estimator
        params.update({f"estimator.params.{k}": v for k, v in spec.params.items()})
    else:
        for key in ("estimator", "estimator.entry"):
            params.pop(key, None)
    if spec.forecast is not None:
        plan = spec.forecast
        params.update({
            "forecast.time": plan.time, "forecast.freq": plan.freq, "forecast.horizon": plan.horizon,
            "forecast.lags": list(plan.lags), "forecast.calendar": list(plan.calendar),
            "forecast.known": list(plan.known), "forecast.static": list(plan.static),
            "forecast.target_transform": [f"{k} {v}" if k == "diff" else k for k, v in plan.transforms],
            "forecast.strategy": plan.strategy, "forecast.gaps": plan.gaps,
        })
        if plan.rolling:
            params["forecast.rolling"] = [f"{'/'.join(r.stats)} of {r.window} lag {r.lag}" for r in plan.rolling]
        for key in ("split.test_size", "split.seed", "estimator"):
            params.pop(key, None)
    if spec.validation is not None:
        v = spec.validation
        params["validation"] = f"{v.kind} folds={v.folds} seed={v.seed}" if v.kind == "kfold" else \
            f"time by={v.by} windows={v.windows} horizon={v.horizon or 'holdout'} step={v.step or 'horizon'}"
        params["selection.metric"] = v.metric
        params["candidates"] = [c.name for c in spec.choices()]
        if pooled_candidates(spec):
            params["candidates.global"] = pooled_candidates(spec)
        for c in spec.choices():
            if c.trials:
                params[f"tuning.{c.name}"] = f"{c.sampler} trials={c.trials} scope={c.scope} space={sorted(c.space)}"
    return params
