"""The train task: read the data once, fit every segment on the engine, log one MLflow run."""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from manymodels import faults
from manymodels.data import write_parquet
from manymodels.data.timegrid import TimeGrid
from manymodels.engines import Dataset, Engine, Fleet
from manymodels.engines.base import segment_labels
from manymodels.engines.records import (
    drop_records,
    read_plan,
    read_records,
    record_name,
    stale_files,
    write_plan,
    write_record,
)
from manymodels.errors import BundleError, DataError, EngineSetupError
from manymodels.estimators.reconcile import require as require_reconciler
from manymodels.jobs.changes import ChangePlan, plan_changes
from manymodels.jobs.context import Target
from manymodels.jobs.pages import run_facts, training_sections, write_report
from manymodels.jobs.pooled import fit_pooled_candidates, pooled_candidates
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
from manymodels.registry import PackInfo, write_pack_files
from manymodels.registry import manifest as mf
from manymodels.registry.compose import copy_models
from manymodels.registry.hierarchy import LevelAccuracy, holdout_levels
from manymodels.registry.manifest import PackLayout
from manymodels.registry.pack import Pack
from manymodels.registry.pack_info import FORECAST, TIME
from manymodels.registry.provenance import current_user, git_commit
from manymodels.registry.pyfunc import describe_model, save_pack_model
from manymodels.registry.run_state import (
    ARTIFACTS_DIR,
    FINISH_FILE,
    STATUS_OK,
    STATUS_RUNNING,
    TAG,
    RunInfo,
    heartbeat_silence,
    local_path,
    param_text,
)
from manymodels.report import REPORT_FILE
from manymodels.segment import SegmentSpec, metric_names
from manymodels.segment.fit import OK
from manymodels.segment.forecast_fit import fallback_plan
from manymodels.segment.shards import (
    fetch_shards,
    join_location,
    make_folder,
    put_file,
    remove_files,
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
        previous = _resumable(target, name, resume)
        segments, changed_only = previous.plan.get("segments"), bool(previous.plan.get("changed_only"))
    if changed_only:  # before any data is read: what the whole fleet decides cannot be retrained in part
        _whole_fleet_only(target.model(name).selection.rule, spec)
    with target.engine(engine, workers) as running:
        running.start(rows=target.rows_of(name))
        exp_id = target.tracker.experiment_id(target.experiment(name))
        assert exp_id is not None  # noqa: S101 - create=True always returns an id
        if not running.is_local:  # before reading any data: the cluster must have somewhere to write
            _check_shard_destination(target, target.tracker.artifact_location(exp_id))
        hooks = _Hooks(on_start, on_progress, on_warning)
        return _train(target, name, running, spec, dataset, exp_id, segments, started, hooks, changed_only, previous)


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
class _Previous:
    """The run a resume finishes: its id, artifacts, where its chunks' records lie, what it was asked to fit."""

    run: RunInfo
    shard_dir: str
    plan: dict[str, Any]


def _resumable(target: Target, name: str, run_id: str) -> _Previous:
    """The training run to resume, checked: this model's, in this bundle and target, stopped, its files here.

    Raises:
        BundleError: not such a run, finished, still running, or nothing of its work is left here.
        RegistryError: no such run.
    """
    run = target.tracker.run(run_id)
    tags = run.tags
    mine = (tags.get(TAG + "kind"), tags.get(TAG + "model"), tags.get(TAG + "bundle"), tags.get(TAG + "target"))
    if mine != ("train", name, target.config.name, target.config.target):
        raise BundleError(
            f"run {run_id} is not a training run of model {name!r} of bundle {target.config.name!r} on target "
            f"{target.config.target!r}"
        )
    host, pid = tags.get(TAG + "host", "?"), tags.get(TAG + "pid", "?")
    if run.status == STATUS_OK:
        raise BundleError(f"run {run_id} finished: there is nothing to resume")
    if TAG + "segments" in tags:  # written when a run ends: it failed with every segment tried, none left
        raise BundleError(
            f"run {run_id} ended with every segment tried (none has a model: `manymodels show {run_id}` lists why); "
            "there is nothing to resume: train anew"
        )
    if run.status == STATUS_RUNNING:
        here = host == socket.gethostname()
        silent = heartbeat_silence(tags, time.time())
        raise BundleError(
            f"run {run_id} is still running (pid {pid} on {'this host' if here else 'host ' + host}): let it finish, "
            "or stop it first"
            + ("" if here else f"; its last heartbeat was {silent[0]:.0f} s ago" if silent else
               "; this machine cannot tell whether that process is alive")
        )
    if (target.unsent / run_id / FINISH_FILE).exists():
        raise BundleError(
            f"run {run_id} was fitted whole and kept when the tracking server failed as it was logged: "
            f"`manymodels upload {run_id}` logs it"
        )
    artifacts = local_path(run.artifact_uri)
    staged = artifacts is None
    if staged and target.staging(run_id) is None:  # staged in this machine's temporary folder, if it was this one
        folder = target.tracker.staged(run_id)
        if folder is None:
            raise BundleError(
                f"run {run_id} staged its models on the machine that ran it (host {host}) and they are not here: "
                "resume it there, or train anew"
            )
        artifacts = folder / ARTIFACTS_DIR
    shard_dir = _shard_dir(target, run_id, artifacts, staged)
    plan = read_plan(shard_dir)
    if plan is None:
        raise BundleError(
            f"run {run_id} left no record of its work in {shard_dir} (it stopped before fitting, or its files were "
            "removed): train anew"
        )
    return _Previous(run, shard_dir, plan)


def _shard_dir(target: Target, run_id: str, artifacts: Path | None, staged: bool) -> str:
    """Where a run's engine writes its shards (and records): the pack's folder among the run's artifacts, or, when
    the run's artifacts are staged for upload and the target sets engine.staging, a folder there."""
    remote = target.staging(run_id) if staged else None
    if remote is not None:
        return f"{remote}/{PackLayout.SHARDS}"
    assert artifacts is not None  # noqa: S101 - a run's artifacts are local, or staged here, or under engine.staging
    return str(artifacts / PackLayout.IN_RUN / PackLayout.SHARDS)


@dataclass
class _Hooks:
    on_start: Callable[[int, str], None] | None
    on_progress: Callable[[int], None] | None
    on_warning: Callable[[str], None] | None

    def warn(self, line: str) -> None:
        if self.on_warning:
            self.on_warning(line)


def _null_segments(
    target: Target, name: str, engine: Engine, data: Fleet, path: Path, fmt: str, spec: SegmentSpec
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
    kept = engine.select(data, ~null_key, path, fmt, spec)
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
    exp_id: str,
    segments: Sequence[str] | None,
    started: float,
    hooks: _Hooks,
    changed_only: bool = False,
    previous: _Previous | None = None,
) -> TrainOutcome:
    model = target.model(name)
    path = Path(dataset.path)
    if spec.forecast is not None and spec.forecast.hierarchy:
        require_reconciler()  # before any work: the levels are reconciled once the fleet is fitted
    data = engine.load(path, dataset.fmt, spec, segments)
    data, null_warning = _null_segments(target, name, engine, data, path, dataset.fmt, spec)
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
    tuned: dict[str, dict[str, Any]] = {}
    if tuned_globally(spec) and previous is not None:  # what the run found, not a new study's result
        spec = with_tuned(spec, previous.plan.get("tuned") or {})
    elif tuned_globally(spec):  # before fingerprints: the tuned parameters are part of what a model is
        spec, tuned = tune_globally(engine, data, path, dataset.fmt, spec)
    plan = None
    if changed_only:
        plan = plan_changes(target, name, data.keys, engine.fingerprints(data, spec))
        if not plan.everything:
            data = engine.select(data, plan.train, path, dataset.fmt, spec)
    warnings = oversized_segments(data, target.config.resolved.engine.max_segment_rows)
    if null_warning:
        warnings.insert(0, null_warning)
    if plan is not None and plan.damaged:
        warnings.append(
            f"{len(plan.damaged):,} of the champion's models are damaged and are trained again instead of carried; "
            f"the first: {plan.damaged[0]}"
        )
    for line in warnings:
        hooks.warn(line)
    engine.ready()  # a pool that cannot start is an error before any run exists
    tracker = target.tracker
    params = {**_params(target, name, spec, engine), "changed_only": changed_only}
    if previous is None:
        tracker.sweep_staging(target.config.name, name)  # this model's runs killed before start afresh now
        run_id, artifact_uri = tracker.start_run(
            exp_id, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", _tags(target, name), {**params, **_tuned_params(tuned)}
        )
    else:
        _same_settings(previous.run, params)
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
        shard_dir = _shard_dir(target, run_id, folder.path, folder.upload is not None)
        make_folder(shard_dir)
        kept = None
        if pooled_candidates(spec) and len(data):  # before the fleet: each segment weighs them against its own
            # (a resumed run fits them again: the same rows give the same model, so its finished segments stay)
            spec = fit_pooled_candidates(engine, spec, dataset, Path(pack.root), run_staging)
        fleet: dict[str, Any] = {}
        if model.selection.rule == "fleet" and previous is not None and previous.plan.get("chosen"):
            spec = replace(spec, chosen=str(previous.plan["chosen"]))  # what the run chose, not a new sample's
        elif model.selection.rule == "fleet" and len(data):
            spec, fleet = choose_for_fleet(engine, data, path, dataset.fmt, spec, model.selection.sample)
        if previous is not None:
            data, kept = _keep_finished(shard_dir, data, spec, info, engine, path, dataset.fmt)
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
            manifest = _carry(manifest, plan, shards, run_id)
        write_pack_files(Path(pack.root), info, manifest)
        example = target.example_rows(name, info.inputs)
        if example is not None:
            describe_model(model_dir, example, forecast=spec.forecast is not None)
        write_parquet(segment_metrics(manifest, spec), folder.path / SEGMENT_METRICS)
        fallback = None
        thin_served = None
        if model.fallback_by is not None and not _nothing_changed(plan):
            fallback = _fit_fallback(engine, spec, dataset, model.fallback_by, Path(pack.root), run_staging, info)
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
        levels = _level_accuracy(Path(pack.root), spec)
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


def _level_accuracy(root: Path, spec: SegmentSpec) -> LevelAccuracy | None:
    """A hierarchy's holdout accuracy per level, before and after reconciliation (None: no hierarchy)."""
    if spec.forecast is None or not spec.forecast.hierarchy:
        return None
    pack = Pack(root)
    try:
        return holdout_levels(pack)
    finally:
        pack.close()


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


def _same_settings(run: RunInfo, params: dict[str, object]) -> None:
    """A resume fits with the settings its run began with, or not at all (its params would be another run's).

    Raises:
        BundleError: a setting differs, named with both values.
    """
    differ = [
        (key, run.params.get(key), param_text(value))
        for key, value in params.items()
        if key not in _MAY_DIFFER and run.params.get(key) != param_text(value)
    ]
    if differ:
        shown = "; ".join(f"{key}: {_short(then)} then, {_short(now)} now" for key, then, now in differ[:3])
        raise BundleError(
            f"run {run.run_id} began with other settings ({shown}): a resumed run keeps the settings it began with; "
            "restore them, or train anew"
        )


_MAY_DIFFER = frozenset({"workers", "engine", "host"})  # how the work is done, not what the models are


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _keep_finished(
    shard_dir: str, data: Fleet, spec: SegmentSpec, info: PackInfo, engine: Engine, path: Path, fmt: str
) -> tuple[Fleet, pd.DataFrame]:
    """What a resumed run already fitted and may keep, and the segments left to fit.

    A segment's model is kept when its record says it was fitted (status ok) from the same rows with the same
    spec (its fingerprint) and its bytes check. Kept models are copied into `shard-rNNNNN` shards, numbered after
    the segments left to fit, with their record (`results-r`), and every other shard and record of the run is
    removed, so the fit that follows starts from an empty numbering and a run stopped again resumes the same way.

    Returns:
        The fleet of the segments left to fit, and the kept segments' manifest rows.
    """
    records = read_records(shard_dir)
    fingerprints = engine.fingerprints(data, spec) if len(records) else []  # a pass over the data: only if needed
    found = _finished(records, data.keys, fingerprints, spec)
    kept = found.iloc[:0]
    written: list[str] = []
    if len(found):
        with tempfile.TemporaryDirectory(prefix="mm-resume-") as scratch:
            aside = Path(scratch) / "pack"
            fetch_shards(shard_dir, Path(PackLayout(aside).shards))
            rows = found.drop(columns=_POSITION)
            write_pack_files(aside, info, rows)
            earlier = Pack(aside)
            damaged = earlier.check_models(rows[mf.SEGMENT_INDEX].tolist())
            good = ~rows[mf.SEGMENT_INDEX].isin(list(damaged)).to_numpy()
            found = found.loc[good]
            out = Path(scratch) / "out"
            copied = copy_models(out, [(earlier, rows.loc[good])], first_index=len(data) - len(found),
                                 prefix="shard-r")
            for shard in sorted(out.glob("shard-r*.parquet")):
                put_file(shard, join_location(shard_dir, shard.name))
                written.append(shard.name)
            if len(copied):
                kept = copied.drop(columns=[mf.SOURCE_RUN])
                write_record(shard_dir, record_name("r"), kept)
                written.append(record_name("r"))
    remove_files(shard_dir, stale_files(shard_dir, written))
    if not len(kept):
        return data, kept
    rest = np.ones(len(data), dtype=bool)
    rest[found[_POSITION].to_numpy(dtype=np.int64)] = False
    return engine.select(data, rest, path, fmt, spec), kept


_POSITION = "_position"


def _finished(
    records: pd.DataFrame, keys: pd.DataFrame, fingerprints: Sequence[str], spec: SegmentSpec
) -> pd.DataFrame:
    """The records of segments of `keys` fitted with a model from the rows and spec they have now, each with its
    position in `keys` (`_POSITION`)."""
    by = list(spec.segment_by)
    needed = [*by, mf.STATUS, mf.SHARD, mf.FINGERPRINT, mf.SEGMENT_INDEX]
    if records.empty or any(c not in records.columns for c in needed):
        return records.iloc[:0].assign(**{_POSITION: np.zeros(0, dtype=np.int64)})
    here = pd.Series(np.arange(len(keys)), index=_labels(keys[by]).to_numpy())
    position = pd.Series(_labels(records[by]).map(here).to_numpy(), index=records.index)
    usable = position.notna() & (records[mf.STATUS] == OK) & records[mf.SHARD].notna()
    now = np.asarray(fingerprints, dtype=object)
    usable[usable] = records.loc[usable, mf.FINGERPRINT].to_numpy() == now[position[usable].to_numpy(dtype=np.int64)]
    return records.loc[usable].assign(**{_POSITION: position[usable].to_numpy(dtype=np.int64)}).reset_index(drop=True)


def _labels(keys: pd.DataFrame) -> pd.Series:
    """Each segment's label (its values joined), the same for keys read by any engine or from a record."""
    return segment_labels(keys) if len(keys.columns) else pd.Series([""] * len(keys), dtype=object)


def _nothing_changed(plan: ChangePlan | None) -> bool:
    return plan is not None and plan.counts.get("trained", 1) == 0 and plan.counts.get("gone", 1) == 0


def _carry(manifest: pd.DataFrame, plan: ChangePlan, shards_dir: Path, run_id: str) -> pd.DataFrame:
    """This run's manifest plus the champion's carried segments, their models copied into this run's pack."""
    manifest = manifest.assign(**{mf.SOURCE_RUN: pd.array([run_id] * len(manifest), dtype="string"), mf.CARRIED: False})
    if plan.champion is None or len(plan.carried) == 0:
        return manifest
    carried = copy_models(shards_dir, [(plan.champion, plan.carried)], first_index=len(manifest), prefix="shard-c")
    carried[mf.CARRIED] = True
    missing = [c for c in manifest.columns if c not in carried.columns]
    for column in missing:  # a column newer than the champion's manifest
        carried[column] = pd.NA
    merged = pd.concat([manifest, carried[manifest.columns]], ignore_index=True)
    merged[mf.CARRIED] = merged[mf.CARRIED].astype(bool)
    return merged


def _fit_fallback(
    engine: Engine,
    spec: SegmentSpec,
    dataset: Dataset,
    by: list[str],
    pack_dir: Path,
    run_staging: str | None,
    info: PackInfo,
) -> pd.DataFrame:
    """Fit the fallback (one model on every row, or one per parent group) into the pack's `fallback/` pack.

    The same engine does it: a parent group is a segment of a coarser grouping, and a global
    model is the one group of no columns. Returns the fallback's manifest. With model selection,
    the fallback is the first candidate that is not a baseline, with its parameters as given: no
    cross-validation of a model fitted on every row.
    """
    fallback_spec = replace(spec, segment_by=tuple(by), validation=None, candidates=(), shared=())
    described = replace(info, segment_by=list(by), extra={"kind": "fallback"})
    if spec.forecast is not None:  # one model over every segment's series, each kept apart for its lags
        plan = fallback_plan(spec.forecast)
        fallback_spec = replace(fallback_spec, pool_by=spec.segment_by, forecast=plan)
        described = replace(described, extra={**info.extra, FORECAST: asdict(plan), "kind": "fallback"})
    data = engine.load(Path(dataset.path), dataset.fmt, fallback_spec)
    fallback = PackLayout(PackLayout(pack_dir).fallback)
    shards = Path(fallback.shards)
    shards.mkdir(parents=True, exist_ok=True)
    shard_dir = str(shards) if run_staging is None else f"{run_staging}/{PackLayout.FALLBACK}/{PackLayout.SHARDS}"
    make_folder(shard_dir)
    results = engine.fit(data, fallback_spec, shard_dir)
    if run_staging is not None:
        fetch_shards(shard_dir, shards)
    drop_records(str(shards))
    manifest = mf.build_manifest(data.keys, results, fallback_spec)
    write_pack_files(Path(fallback.root), described, manifest)
    return manifest


def keep_states(fallback_root: Path, manifest: pd.DataFrame, spec: SegmentSpec) -> int:
    """Beside a forecast fallback, the state of every segment too thin for a model of its own (its last values and
    time), so that the fallback forecasts it with no data read. Returns how many."""
    if mf.FORECAST_STATE not in manifest.columns or not Path(fallback_root).is_dir():
        return 0
    thin = manifest.loc[manifest[mf.FORECAST_STATE].notna(), [*spec.segment_by, mf.FORECAST_STATE]]
    write_parquet(thin.reset_index(drop=True), Path(PackLayout(fallback_root).states))
    return len(thin)


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


def _tuned_params(tuned: dict[str, dict[str, Any]]) -> dict[str, object]:
    """What global tuning found, as run params: each candidate's best parameters, their CV metric, the sample."""
    out: dict[str, object] = {}
    for name, found in tuned.items():
        out[f"tuning.{name}.best"] = json.dumps(found["params"], sort_keys=True, default=str)
        out[f"tuning.{name}.cv_mean"] = found["cv_mean"]
        out[f"tuning.{name}.sample"] = found["sample"]
    return out


def _tags(target: Target, name: str) -> dict[str, str]:
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


def _params(target: Target, name: str, spec: SegmentSpec, engine: Engine) -> dict[str, object]:
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
    params.update({f"estimator.params.{k}": v for k, v in spec.params.items()})
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


def _grid(info: PackInfo) -> TimeGrid | None:
    """A forecast pack's time grid (None for other packs, or a plan without its grid)."""
    plan = info.extra.get(FORECAST)
    if not isinstance(plan, dict) or not plan.get("freq"):
        return None
    return TimeGrid.of(plan["freq"], str(plan.get("time_kind", "date")))
