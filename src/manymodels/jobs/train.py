"""The train task: read the data once, fit every segment on the engine, log one MLflow run."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from manymodels import faults
from manymodels.data import write_parquet
from manymodels.data.timegrid import TimeGrid
from manymodels.engines import Dataset, Engine, Fleet
from manymodels.engines.records import (
    drop_records,
    write_plan,
)
from manymodels.errors import BundleError, DataError, EngineSetupError
from manymodels.estimators.reconcile import require as require_reconciler
from manymodels.jobs.changes import ChangePlan, carry, plan_changes
from manymodels.jobs.context import Target
from manymodels.jobs.fallback import fit_fallback, keep_states
from manymodels.jobs.pages import run_facts, training_sections, write_report
from manymodels.jobs.pooled import fit_pooled_candidates, pooled_candidates
from manymodels.jobs.resume import Previous, keep_finished, resumable, run_shard_dir, same_settings
from manymodels.jobs.selection import (
    baseline_warning,
    choose_for_fleet,
    interval_summary,
    naive_summary,
    naive_warning,
    selection_summary,
    tune_globally,
    tuned_globally,
    with_tuned,
)
from manymodels.jobs.train_record import (
    constant_warning,
    level_summary,
    oversized_segments,
    pack_info,
    run_params,
    run_tags,
    segment_metrics,
    summarize_manifest,
    tuned_params,
)
from manymodels.registry import PackInfo, write_pack_files
from manymodels.registry import manifest as mf
from manymodels.registry.hierarchy import LevelAccuracy, holdout_levels
from manymodels.registry.manifest import PackLayout
from manymodels.registry.pack import Pack
from manymodels.registry.pack_info import FORECAST
from manymodels.registry.pyfunc import describe_model, save_pack_model
from manymodels.registry.references import REFERENCES, REFERS_TAG
from manymodels.registry.run_state import (
    TAG,
    local_path,
)
from manymodels.registry.staging import sweep_staging
from manymodels.report import REPORT_FILE
from manymodels.segment import SegmentSpec
from manymodels.segment.shards import (
    fetch_shards,
    make_folder,
    remove_folder,
)

SEGMENT_METRICS = "segment_metrics.parquet"


@dataclass
class TrainOutcome:
    """What a training run produced: its id, manifest and summary."""

    model: str
    run_id: str
    experiment_id: str
    artifact_uri: str
    manifest: pd.DataFrame
    summary: dict[str, float]
    metric: str
    seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether at least one segment has a model."""
        return self.summary.get("segments_ok", 0) > 0


def train(
    target: Target,
    name: str,
    segments: Sequence[str] | None = None,
    workers: int | None = None,
    on_start: Callable[[int, str], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    changed_only: bool = False,
    engine: Engine | None = None,
    resume: str | None = None,
) -> TrainOutcome:
    """Train one model per segment of a model family and log them as one MLflow run.

    Args:
        target: the bundle resolved for a target.
        name: the model family.
        segments: train only these segments (their values, '|'-joined for several columns).
        workers: processes to fit on (default: the target's engine setting, else the cores).
        on_start: called once with (segment count, run id) before fitting begins.
        on_progress: called with the number of segments finished, as they finish.
        on_warning: called with each warning found before fitting (segments too large, say).
        changed_only: fit only the segments whose fingerprint differs from the champion's (or
            that it lacks); carry the champion's models of the others into this run.
        engine: the engine to fit on (a job's); default: the target's, for this call.
        resume: the id of a training run of this model that died or was stopped: fit the segments it had not
            finished into it (with the segments and changed-only choice it was given) and finish it. The models it
            finished are kept where their segment's rows and the spec are unchanged and their bytes check.

    Raises:
        BundleError, DataError: bad input, before any run is created.
        RegistryError: MLflow could not be reached or written.
    """
    started = time.perf_counter()
    target.model(name)
    if changed_only and segments:
        raise BundleError("give --segments or --changed-only, not both")
    if resume is not None and (segments or changed_only):
        raise BundleError("--resume fits what the run it resumes was asked to: give no --segments or --changed-only")
    spec, dataset = target.training_spec(name)
    previous = None
    if resume is not None:  # checked before an engine starts: a cluster's start takes seconds
        previous = resumable(target, name, resume)
        segments, changed_only = previous.plan.get("segments"), bool(previous.plan.get("changed_only"))
    if changed_only:  # before any data is read: what the whole fleet decides cannot be retrained in part
        _whole_fleet_only(target.model(name).selection.rule, spec)
    with target.engine(engine, workers) as running:
        if not (changed_only and running.is_local):  # a changed-only run's workers start once it knows what changed
            running.start(rows=target.rows_of(name))
        hooks = _Hooks(on_start, on_progress, on_warning)
        if not running.is_local:  # before reading any data: the cluster must have somewhere to write
            exp_id = _experiment(target, name)
            _check_shard_destination(target, target.tracker.artifact_location(exp_id))
            return _train(target, name, running, spec, dataset, lambda: exp_id, segments, started, hooks,
                          changed_only, previous)
        # MLflow's import and the experiment's lookup (seconds) in a thread while this one reads the data, which
        # Arrow and NumPy do mostly without the GIL; its error, if any, is raised before anything else is done
        with ThreadPoolExecutor(1, thread_name_prefix="manymodels-tracking") as pool:
            found = pool.submit(_experiment, target, name)
            return _train(target, name, running, spec, dataset, found.result, segments, started, hooks,
                          changed_only, previous)


def _experiment(target: Target, name: str) -> str:
    """The model's experiment id (made when missing): the first call that imports MLflow."""
    exp_id = target.tracker.experiment_id(target.experiment(name))
    assert exp_id is not None  # noqa: S101 - create=True always returns an id
    return exp_id


def _whole_fleet_only(rule: str, spec: SegmentSpec) -> None:
    """Refuse `--changed-only` for a model whose segments' fits depend on every segment's rows.

    Raises:
        BundleError: a selection rule fleet, or a pooled (`scope: global`) candidate.
    """
    if rule == "fleet":
        raise BundleError(
            "--changed-only retrains the segments whose rows changed, but selection.rule fleet chooses one candidate "
            "over the fleet's segments: train the whole fleet"
        )
    if pooled_candidates(spec):
        raise BundleError(
            f"--changed-only retrains the segments whose rows changed, but candidate(s) "
            f"{', '.join(pooled_candidates(spec))} (scope global) are fitted on every segment's rows: train the "
            "whole fleet"
        )


@dataclass
class _Hooks:
    on_start: Callable[[int, str], None] | None
    on_progress: Callable[[int], None] | None
    on_warning: Callable[[str], None] | None

    def warn(self, line: str) -> None:
        if self.on_warning:
            self.on_warning(line)


def _null_segments(
    target: Target, name: str, engine: Engine, data: Fleet, dataset: Dataset, spec: SegmentSpec
) -> tuple[Fleet, str | None]:
    """The fleet without the segments whose key holds a null (`null_segments: drop`), and the warning saying so;
    as it is with `own`; a DataError with `fail`. Never silent: null keys used to be pooled into one model."""
    if spec.forecast is not None and spec.forecast.hierarchy:
        return data, None  # nulls key the levels above the segments (the segments' own rows hold none: load checks)
    null_key = data.keys.isna().any(axis=1).to_numpy() if len(data.keys.columns) else np.zeros(len(data), bool)
    if not null_key.any():
        return data, None
    model = target.model(name)
    rows = int(np.asarray(data.sizes)[null_key].sum())
    columns = ", ".join(model.segment_by)
    where = target.config.where(("resources", "models", name, "null_segments"))
    if model.null_segments == "fail":
        raise DataError(
            f"{where}{rows:,} rows of {model.dataset!r} have a null in segment column(s) {columns} and "
            f"resources.models.{name}.null_segments is fail: fill or drop them first, or set it to drop or own"
        )
    if model.null_segments == "own":
        return data, None
    kept = engine.select(data, ~null_key, dataset, spec)
    return kept, (
        f"{rows:,} rows with a null in segment column(s) {columns} were left out (null_segments: drop, the default); "
        "set null_segments: own to fit them as a segment of their own, or fail to stop"
    )


def _check_shard_destination(target: Target, artifact_location: str) -> None:
    """A cluster writes shards in the run's folder when that is a local (shared) path, else in engine.staging."""
    if local_path(artifact_location) is None and target.config.resolved.engine.staging is None:
        raise EngineSetupError(
            f"the run's artifacts go to {artifact_location}, which this cluster's executors cannot write to: set "
            "the target's engine.staging to a folder or URL (s3://bucket/tmp) that executors and this driver both reach"
        )


def _train(
    target: Target,
    name: str,
    engine: Engine,
    spec: SegmentSpec,
    dataset: Dataset,
    experiment: Callable[[], str],
    segments: Sequence[str] | None,
    started: float,
    hooks: _Hooks,
    changed_only: bool = False,
    previous: Previous | None = None,
) -> TrainOutcome:
    model = target.model(name)
    path = Path(dataset.path)
    if spec.forecast is not None and spec.forecast.hierarchy:
        require_reconciler()  # before any work: the levels are reconciled once the fleet is fitted
    data = engine.load(dataset, spec, segments)
    data, null_warning = _null_segments(target, name, engine, data, dataset, spec)
    if len(data) == 0:
        raise DataError(f"{path}: dataset {model.dataset!r} has no rows")
    largest = int(data.sizes.max())
    if spec.min_rows > largest:
        key = ("resources", "models", name, "min_rows")
        raise DataError(
            f"{target.config.where(key)}resources.models.{name}.min_rows is {spec.min_rows}, but the largest of the "
            f"{len(data):,} segments of {model.dataset!r} has {largest:,} rows: every segment would fail; lower "
            "min_rows"
        )
    exp_id = experiment()  # the tracker's: from here on, MLflow is imported and reached
    tuned: dict[str, dict[str, Any]] = {}
    if tuned_globally(spec) and previous is not None:  # what the run found, not a new study's result
        spec = with_tuned(spec, previous.plan.get("tuned") or {})
    elif tuned_globally(spec):  # before fingerprints: the tuned parameters are part of what a model is
        spec, tuned = tune_globally(engine, data, dataset, spec)
    plan = None
    if changed_only:
        plan = plan_changes(target, name, data.keys, engine.fingerprints(data, spec))
        if not plan.everything:
            data = engine.select(data, plan.train, dataset, spec)
        engine.start(rows=int(np.asarray(data.sizes).sum()))  # no workers when what changed fits one chunk
    warnings = oversized_segments(data, target.config.resolved.engine.max_segment_rows)
    if null_warning:
        warnings.insert(0, null_warning)
    if plan is not None and plan.damaged:
        warnings.append(
            f"{len(plan.damaged):,} of the champion's models are damaged and are trained again instead of carried; "
            f"the first: {plan.damaged[0]}"
        )
    if plan is not None and plan.untrusted:
        warnings.append(
            f"{len(plan.untrusted):,} of the champion's models are saved in a format this target does not trust and "
            f"are trained again instead of carried (none loaded); the first: {plan.untrusted[0]}"
        )
    for line in warnings:
        hooks.warn(line)
    engine.ready()  # a pool that cannot start is an error before any run exists
    tracker = target.tracker
    params = {**run_params(target, name, spec, engine), "changed_only": changed_only}
    if previous is None:
        sweep_staging(tracker, target.config.name, name)  # this model's runs killed before start afresh now
        run_name = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        tags = run_tags(target, name)
        if plan is not None and plan.champion is not None and len(plan.carried):  # gc keeps what it refers to
            tags[REFERS_TAG] = plan.champion.info.run_id
        run_id, artifact_uri = tracker.start_run(exp_id, run_name, tags, {**params, **tuned_params(tuned)})
    else:
        same_settings(previous.run, params)
        run_id, artifact_uri = previous.run.run_id, previous.run.artifact_uri
        tracker.reopen_run(previous.run)
    info = pack_info(target, name, spec, run_id)
    with tracker.run_folder(run_id, artifact_uri, keep_in=target.unsent, resume=previous is not None) as folder:
        # Executors write shards into the run's own folder when it is local, else into engine.staging (kept when
        # the run fails, for a resume; removed once the pack is whole here).
        run_staging = None if folder.upload is None else target.staging(run_id)
        model_dir = folder.path / PackLayout.MODEL
        pack = PackLayout(save_pack_model(model_dir, code=target.estimator_code(spec),
                                          packages=target.model_packages(spec)))
        shards = Path(pack.shards)
        shards.mkdir(parents=True, exist_ok=True)
        shard_dir = run_shard_dir(target, run_id, folder.path, folder.upload is not None)
        make_folder(shard_dir)
        kept = None
        if pooled_candidates(spec) and len(data):  # before the fleet: each segment weighs them against its own
            # (a resumed run fits them again: the same rows give the same model, so its finished segments stay)
            spec = fit_pooled_candidates(engine, spec, dataset, Path(pack.root), run_staging)
        fleet: dict[str, Any] = {}
        if model.selection.rule == "fleet" and previous is not None and previous.plan.get("chosen"):
            spec = replace(spec, chosen=str(previous.plan["chosen"]))  # what the run chose, not a new sample's
        elif model.selection.rule == "fleet" and len(data):
            spec, fleet = choose_for_fleet(engine, data, dataset, spec, model.selection.sample)
        if previous is not None:
            data, kept = keep_finished(shard_dir, data, spec, info, engine, dataset)
        else:
            write_plan(shard_dir, {"segments": list(segments) if segments else None, "changed_only": changed_only,
                                   "tuned": {k: v["params"] for k, v in tuned.items()}, "chosen": spec.chosen})
        folder.keep = True  # from here on, a failed run's staged work is kept for `train --resume`
        if hooks.on_start:
            hooks.on_start(len(data), run_id)
        def progress(done: int) -> None:
            faults.point("train.fitting")  # a test kills or stops the command here, with work in flight
            if hooks.on_progress is not None:
                hooks.on_progress(done)

        results = engine.fit(data, spec, shard_dir, progress) if len(data) else []
        if run_staging is not None:
            fetch_shards(shard_dir, shards)
        if folder.upload is not None:  # a staged folder is uploaded whole: its records never reach the store
            drop_records(str(shards))
        manifest = mf.build_manifest(data.keys, results, spec)
        if kept is not None and len(kept):
            manifest = pd.concat([manifest, kept[manifest.columns]], ignore_index=True)
        if plan is not None:
            manifest, referred = carry(manifest, plan, shards, run_id)
            if referred:
                info = replace(info, extra={**info.extra, REFERENCES: referred})
        write_pack_files(Path(pack.root), info, manifest)
        example = target.example_rows(name, info.inputs)
        if example is not None:
            describe_model(model_dir, example, forecast=spec.forecast is not None)
        write_parquet(segment_metrics(manifest, spec), folder.path / SEGMENT_METRICS)
        fallback = None
        thin_served = None
        if model.fallback_by is not None and not _nothing_changed(plan):
            fallback = fit_fallback(engine, spec, dataset, model.fallback_by, Path(pack.root), run_staging, info)
            if spec.forecast is not None:
                thin_served = keep_states(Path(pack.fallback), manifest, spec)
        elif plan is not None and plan.champion is not None and plan.champion.fallback is not None:
            shutil.copytree(Path(str(plan.champion.fallback.root)), Path(pack.fallback), dirs_exist_ok=True)
        if run_staging is not None:
            remove_folder(run_staging)  # the pack is whole here
        seconds = time.perf_counter() - started
        summary = summarize_manifest(manifest, spec.task, seconds)
        if kept is not None:
            summary["segments_resumed"] = float(len(kept))
        if fallback is not None:
            summary["fallback_ok"] = float(mf.is_ok(fallback).sum())
            summary["fallback_failed"] = float((~mf.is_ok(fallback)).sum())
        if thin_served is not None:
            summary["segments_thin_by_fallback"] = float(thin_served)
        if plan is not None:
            summary.update({f"segments_{k}": float(v) for k, v in plan.counts.items()})
        summary.update(selection_summary(manifest, spec))
        summary.update(naive_summary(manifest, spec))
        summary.update(interval_summary(manifest))
        levels = _level_accuracy(Path(pack.root), spec, plan)
        if levels is not None:
            summary.update(level_summary(levels))
            if levels.problem:
                warnings.append(f"hierarchy: {levels.problem}")
                hooks.warn(warnings[-1])
        if summary["segments_constant"]:
            warnings.append(constant_warning(int(summary["segments_constant"]), spec))
            hooks.warn(warnings[-1])
        for loud in (baseline_warning(summary, spec), naive_warning(summary, spec)):
            if loud:
                warnings.append(loud)
                hooks.warn(loud)
        ok = summary["segments_ok"] > 0
        facts = run_facts(run_id, time.time() - seconds, target.name, [
            ("model", name), ("estimator", spec.estimator if not spec.selecting else "selected per segment"),
            ("engine", f"{engine.kind} ({engine.workers} workers)"), ("wall time", f"{seconds:,.1f} s"),
        ])
        def warn(line: str) -> None:
            warnings.append(line)
            hooks.warn(line)

        grid = _grid(info)
        write_report(folder.path / REPORT_FILE, name, "training",
                     lambda: training_sections(manifest, spec.segment_by, spec.metric, facts, grid=grid,
                                               levels=levels), warn)
        tags = {TAG + "segments": str(len(manifest))}
        if spec.chosen is not None:  # selection rule fleet: the one candidate, and how each fared on the sample
            tags[TAG + "selection.chosen"] = spec.chosen
            if fleet:
                tags[TAG + "selection.ratios"] = json.dumps({k: round(v, 4) if math.isfinite(v) else None
                                                             for k, v in fleet["ratios"].items()})
                tags[TAG + "selection.sample"] = str(fleet["sample"])
        tracker.finish_run(run_id, summary, ok, artifacts=folder.upload, tags=tags, resumable=True)
        if folder.upload is None:  # the run's own folder: its records stay until it is finished, for a resume
            drop_records(str(shards))
    return TrainOutcome(name, run_id, exp_id, artifact_uri, manifest, summary, spec.metric, seconds, warnings)


def _level_accuracy(root: Path, spec: SegmentSpec, plan: ChangePlan | None) -> LevelAccuracy | None:
    """A hierarchy's holdout accuracy per level, before and after reconciliation (None: no hierarchy)."""
    if spec.forecast is None or not spec.forecast.hierarchy:
        return None
    champion = plan.champion if plan is not None else None  # what the pack may refer to, open before it is in place
    pack = Pack(root, referenced={champion.info.run_id: champion.root} if champion is not None else None)
    try:
        return holdout_levels(pack)
    finally:
        pack.close()


def _nothing_changed(plan: ChangePlan | None) -> bool:
    return plan is not None and plan.counts.get("trained", 1) == 0 and plan.counts.get("gone", 1) == 0


def _grid(info: PackInfo) -> TimeGrid | None:
    """A forecast pack's time grid (None for other packs, or a plan without its grid)."""
    plan = info.extra.get(FORECAST)
    if not isinstance(plan, dict) or not plan.get("freq"):
        return None
    return TimeGrid.of(plan["freq"], str(plan.get("time_kind", "date")))
