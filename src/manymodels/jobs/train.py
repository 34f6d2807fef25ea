"""The train task: read the data once, fit every segment on the engine, log one MLflow run."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from manymodels.bundle import BundleConfig, ModelSpec
from manymodels.bundle.checks import model_features, model_problems
from manymodels.data import read_head, read_schema, row_count, write_parquet
from manymodels.engines import Engine, Fleet, make_engine
from manymodels.errors import BundleError, DataError, EngineSetupError
from manymodels.jobs.changes import ChangePlan, plan_changes
from manymodels.registry import PackInfo, Tracker, write_pack_files
from manymodels.registry.compose import copy_models
from manymodels.registry.pack import FALLBACK, SEGMENT_INDEX, SHARDS
from manymodels.registry.pyfunc import describe_model, save_pack_model
from manymodels.registry.tracking import TAG, current_user, git_commit, local_path
from manymodels.segment import SegmentResult, SegmentSpec, metric_names
from manymodels.segment.fit import OK
from manymodels.segment.shards import fetch_shards, is_url, make_folder, remove_folder

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


def experiment_name(config: BundleConfig, model: str) -> str:
    """The MLflow experiment of a model family on a target (its last part prefixed in development mode)."""
    spec = config.model(model)
    name = spec.experiment or f"{config.name}/{config.target}/{model}"
    folder, sep, leaf = name.rpartition("/")
    return f"{folder}{sep}{development_prefix(config)}{leaf}"


def development_prefix(config: BundleConfig) -> str:
    """`dev_<user>_` for a target in `mode: development` (two people's deployments never collide), else ''."""
    if config.resolved.mode != "development":
        return ""
    user = "".join(c if c.isalnum() else "_" for c in current_user().split("@")[0].lower()) or "unknown"
    return f"dev_{user}_"


def segment_spec(config: BundleConfig, model: ModelSpec, features: Sequence[str]) -> SegmentSpec:
    """The picklable per-segment recipe of a bundle's model family."""
    roots = [str(config.root)]
    if (config.root / "src").is_dir():
        roots.insert(0, str(config.root / "src"))
    return SegmentSpec(
        segment_by=tuple(model.segment_by),
        label=model.label,
        features=tuple(features),
        task=model.task,
        estimator=model.estimator.type,
        entry=model.estimator.entry,
        params=dict(model.estimator.params),
        test_size=model.split.test_size,
        seed=model.split.seed,
        split_by=model.split.by,
        cutoff=model.split.cutoff,
        min_rows=model.min_rows,
        metric=model.primary_metric,
        import_roots=tuple(roots),
        impute=model.impute,
    )


def training_spec(config: BundleConfig, name: str) -> tuple[SegmentSpec, Path, str]:
    """The model's recipe, its dataset's path and format; columns checked against the file's schema.

    Raises:
        BundleError: a column the bundle names is missing or not numeric.
        DataError: the dataset is missing or unreadable.
    """
    model = config.model(name)
    ds = config.resolved.resources.datasets.get(model.dataset)
    if ds is None:
        raise BundleError(
            f"{config.where(('resources', 'models', name, 'dataset'))}resources.models.{name}.dataset: "
            f"no dataset {model.dataset!r}"
        )
    path = config.resolve_path(ds.path)
    schema = read_schema(path, ds.format)
    problems = model_problems(config, name, schema)
    if problems:
        raise BundleError(problems)
    return segment_spec(config, model, model_features(model, schema)), path, ds.format


def train(
    config: BundleConfig,
    name: str,
    segments: Sequence[str] | None = None,
    workers: int | None = None,
    on_start: Callable[[int, str], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    spark: Any = None,
    on_warning: Callable[[str], None] | None = None,
    changed_only: bool = False,
) -> TrainOutcome:
    """Train one model per segment of a model family and log them as one MLflow run.

    Args:
        config: the bundle resolved for a target.
        name: the model family.
        segments: train only these segments (their values, '|'-joined for several columns).
        workers: processes to fit on (default: the target's engine setting, else the cores).
        on_start: called once with (segment count, run id) before fitting begins.
        on_progress: called with the number of segments finished, as they finish.
        spark: a SparkSession to train on (a notebook's, say) instead of the target's engine.
        on_warning: called with each warning found before fitting (segments too large, say).
        changed_only: fit only the segments whose fingerprint differs from the champion's (or
            that it lacks); carry the champion's models of the others into this run.

    Raises:
        BundleError, DataError: bad input, before any run is created.
        RegistryError: MLflow could not be reached or written.
    """
    started = time.perf_counter()
    model = config.model(name)
    if changed_only and segments:
        raise BundleError("give --segments or --changed-only, not both")
    engine = engine_for(config, workers, spark)
    training = training_spec(config, name)
    try:
        engine.start(rows=_row_count(config, model))
        tracker = Tracker(config.tracking_uri, config.embedded_artifacts)
        exp_id = tracker.experiment_id(experiment_name(config, name))
        assert exp_id is not None  # noqa: S101 - create=True always returns an id
        if not engine.is_local:  # before reading any data: the cluster must have somewhere to write
            _check_shard_destination(config, tracker.artifact_location(exp_id))
        return _train(
            config,
            name,
            model,
            engine,
            training,
            tracker,
            exp_id,
            segments,
            started,
            on_start,
            on_progress,
            on_warning,
            changed_only,
        )
    finally:
        engine.close()


def _check_shard_destination(config: BundleConfig, artifact_location: str) -> None:
    """A cluster writes shards in the run's folder when that is a local (shared) path, else in engine.staging."""
    if local_path(artifact_location) is None and config.resolved.engine.staging is None:
        raise EngineSetupError(
            f"the run's artifacts go to {artifact_location}, which this cluster's executors cannot write to: set "
            "the target's engine.staging to a folder or URL (s3://bucket/tmp) that executors and this driver both reach"
        )


def _train(
    config: BundleConfig,
    name: str,
    model: ModelSpec,
    engine: Engine,
    training: tuple[SegmentSpec, Path, str],
    tracker: Tracker,
    exp_id: str,
    segments: Sequence[str] | None,
    started: float,
    on_start: Callable[[int, str], None] | None,
    on_progress: Callable[[int], None] | None,
    on_warning: Callable[[str], None] | None,
    changed_only: bool = False,
) -> TrainOutcome:
    spec, path, fmt = training
    data = engine.load(path, fmt, spec, segments)
    if len(data) == 0:
        raise DataError(f"{path}: dataset {model.dataset!r} has no rows")
    largest = int(data.sizes.max())
    if spec.min_rows > largest:
        key = ("resources", "models", name, "min_rows")
        raise DataError(
            f"{config.where(key)}resources.models.{name}.min_rows is {spec.min_rows}, but the largest of the "
            f"{len(data):,} segments of {model.dataset!r} has {largest:,} rows: every segment would fail; lower "
            "min_rows"
        )
    plan = None
    if changed_only:
        plan = plan_changes(config, name, tracker, data.keys, engine.fingerprints(data, spec))
        if not plan.everything:
            data = engine.select(data, plan.train, path, fmt, spec)
    warnings = oversized_segments(data, config.resolved.engine.max_segment_rows)
    if on_warning:
        for line in warnings:
            on_warning(line)
    engine.ready()  # a pool that cannot start is an error before any run exists
    run_id, artifact_uri = tracker.start_run(
        exp_id,
        f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
        _tags(config, name),
        {**_params(config, name, model, spec, engine), "changed_only": changed_only},
    )
    with tracker.run_folder(run_id, artifact_uri) as folder, ExitStack() as cleanup:
        # Executors write shards into the run's own folder when it is local, else into engine.staging.
        run_staging = None if folder.upload is None else staging_folder(config, run_id)
        if run_staging is not None:
            cleanup.callback(remove_folder, run_staging)
        staging = folder.path
        pack_dir = save_pack_model(staging / "model", code=estimator_code(spec))
        (pack_dir / SHARDS).mkdir(parents=True, exist_ok=True)
        shard_dir = str(pack_dir / SHARDS) if run_staging is None else f"{run_staging}/{SHARDS}"
        make_folder(shard_dir)
        if on_start:
            on_start(len(data), run_id)
        results = engine.fit(data, spec, shard_dir, on_progress) if len(data) else []
        if run_staging is not None:
            fetch_shards(shard_dir, pack_dir / SHARDS)
        manifest = build_manifest(data, results, spec)
        if plan is not None:
            manifest = _carry(manifest, plan, pack_dir / SHARDS, run_id)
        info = PackInfo(
            model=name,
            segment_by=list(spec.segment_by),
            features=list(spec.features),
            label=spec.label,
            task=spec.task,
            metric=spec.metric,
            run_id=run_id,
            bundle=config.name,
            target=config.target,
        )
        write_pack_files(pack_dir, info, manifest)
        example = example_rows(config, name, [*spec.segment_by, *spec.features])
        if example is not None:
            describe_model(staging / "model", example)
        write_parquet(segment_metrics(manifest, spec), staging / SEGMENT_METRICS)
        fallback = None
        if model.fallback_by is not None and not _nothing_changed(plan):
            fallback = _fit_fallback(engine, training, model.fallback_by, pack_dir, run_staging, info)
        elif plan is not None and plan.champion is not None and plan.champion.fallback is not None:
            shutil.copytree(Path(str(plan.champion.fallback.root)), pack_dir / FALLBACK)  # nothing changed
        seconds = time.perf_counter() - started
        summary = summarize_manifest(manifest, spec.task, seconds)
        if fallback is not None:
            summary["fallback_ok"] = float((fallback["status"] == OK).sum())
            summary["fallback_failed"] = float((fallback["status"] != OK).sum())
        if plan is not None:
            summary.update({f"segments_{k}": float(v) for k, v in plan.counts.items()})
        if summary["segments_constant"]:
            warnings.append(constant_warning(int(summary["segments_constant"]), spec))
            if on_warning:
                on_warning(warnings[-1])
        ok = summary["segments_ok"] > 0
        tracker.finish_run(run_id, summary, ok, artifacts=folder.upload, tags={TAG + "segments": str(len(manifest))})
    return TrainOutcome(name, run_id, exp_id, artifact_uri, manifest, summary, spec.metric, seconds, warnings)


def estimator_code(spec: SegmentSpec) -> list[Path]:
    """The project's own module or package an estimator's import path names, to ship with the model.

    None for a library's estimator (`sklearn.linear_model:Ridge`): that is installed, not the project's.
    """
    if not spec.entry:
        return []
    top = spec.entry.partition(":")[0].split(".")[0]
    for root in spec.import_roots:
        for candidate in (Path(root) / top, Path(root) / f"{top}.py"):
            if candidate.exists():
                return [candidate]
    return []


def example_rows(config: BundleConfig, name: str, columns: list[str]) -> pd.DataFrame | None:
    """The first rows of the model's dataset (`columns` only): a model's input example; None if unreadable."""
    ds = config.resolved.resources.datasets.get(config.model(name).dataset)
    if ds is None:
        return None
    try:
        return read_head(config.resolve_path(ds.path), ds.format, columns)
    except DataError:
        return None


def _nothing_changed(plan: ChangePlan | None) -> bool:
    return plan is not None and plan.counts.get("trained", 1) == 0 and plan.counts.get("gone", 1) == 0


def _carry(manifest: pd.DataFrame, plan: ChangePlan, shards_dir: Path, run_id: str) -> pd.DataFrame:
    """This run's manifest plus the champion's carried segments, their models copied into this run's pack."""
    manifest = manifest.assign(source_run=pd.array([run_id] * len(manifest), dtype="string"), carried=False)
    if plan.champion is None or len(plan.carried) == 0:
        return manifest
    carried = copy_models(shards_dir, [(plan.champion, plan.carried)], first_index=len(manifest), prefix="shard-c")
    carried["carried"] = True
    missing = [c for c in manifest.columns if c not in carried.columns]
    for column in missing:  # a column newer than the champion's manifest
        carried[column] = pd.NA
    merged = pd.concat([manifest, carried[manifest.columns]], ignore_index=True)
    merged["carried"] = merged["carried"].astype(bool)
    return merged


def _fit_fallback(
    engine: Engine,
    training: tuple[SegmentSpec, Path, str],
    by: list[str],
    pack_dir: Path,
    run_staging: str | None,
    info: PackInfo,
) -> pd.DataFrame:
    """Fit the fallback (one model on every row, or one per parent group) into the pack's `fallback/` pack.

    The same engine does it: a parent group is a segment of a coarser grouping, and a global
    model is the one group of no columns. Returns the fallback's manifest.
    """
    spec, path, fmt = training
    fallback_spec = replace(spec, segment_by=tuple(by))
    data = engine.load(path, fmt, fallback_spec)
    fallback_dir = pack_dir / FALLBACK
    (fallback_dir / SHARDS).mkdir(parents=True, exist_ok=True)
    shard_dir = str(fallback_dir / SHARDS) if run_staging is None else f"{run_staging}/{FALLBACK}/{SHARDS}"
    make_folder(shard_dir)
    results = engine.fit(data, fallback_spec, shard_dir)
    if run_staging is not None:
        fetch_shards(shard_dir, fallback_dir / SHARDS)
    manifest = build_manifest(data, results, fallback_spec)
    write_pack_files(fallback_dir, replace(info, segment_by=list(by), extra={"kind": "fallback"}), manifest)
    return manifest


def staging_folder(config: BundleConfig, *parts: str) -> str | None:
    """A folder under the target's engine.staging (a URL, or a path relative to the bundle); None if unset."""
    root = config.resolved.engine.staging
    if root is None:
        return None
    return "/".join([root.rstrip("/") if is_url(root) else str(config.resolve_path(root)), *parts])


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


def engine_for(config: BundleConfig, workers: int | None = None, spark: Any = None) -> Engine:
    """The target's engine (or Spark on a session the caller already has)."""
    spec = config.resolved.engine
    options = spec.spark_options() if spec.kind == "spark" else None
    return make_engine(spec.kind, workers or spec.workers, options, session=spark)


def _row_count(config: BundleConfig, model: ModelSpec) -> int | None:
    ds = config.resolved.resources.datasets.get(model.dataset)
    return row_count(config.resolve_path(ds.path), ds.format) if ds is not None else None


def build_manifest(data: Fleet, results: list[SegmentResult], spec: SegmentSpec) -> pd.DataFrame:
    """One row per segment: keys, index, status, error, rows, metrics, shard, fingerprint."""
    manifest = data.keys.copy()
    by_index = {r.index: r for r in results}
    ordered = [by_index[i] for i in range(len(data))]
    manifest[SEGMENT_INDEX] = np.arange(len(data), dtype=np.int64)
    manifest["status"] = [r.status for r in ordered]
    manifest["error"] = pd.array([r.error for r in ordered], dtype="string")
    manifest["rows"] = np.array([r.rows for r in ordered], dtype=np.int64)
    manifest["n_train"] = np.array([r.n_train for r in ordered], dtype=np.int64)
    manifest["n_test"] = np.array([r.n_test for r in ordered], dtype=np.int64)
    for metric in metric_names(spec.task):
        manifest[metric] = np.array([r.metrics.get(metric, np.nan) for r in ordered], dtype=float)
    manifest["shard"] = pd.array([r.shard for r in ordered], dtype="string")
    manifest["model_format"] = pd.array([r.model_format for r in ordered], dtype="string")
    manifest["fingerprint"] = [r.fingerprint for r in ordered]
    manifest["fit_seconds"] = np.array([r.seconds for r in ordered], dtype=float)
    manifest["constant"] = np.array([r.constant for r in ordered], dtype=bool)
    return manifest


def segment_metrics(manifest: pd.DataFrame, spec: SegmentSpec) -> pd.DataFrame:
    """The per-segment metrics table: keys, status, rows, holdout metrics, error."""
    columns = [*spec.segment_by, "status", "rows", "n_train", "n_test", *metric_names(spec.task), "error"]
    return manifest[columns].copy()


def summarize_manifest(manifest: pd.DataFrame, task: str, seconds: float) -> dict[str, float]:
    """The run's summary metrics: segment counts and each metric's mean, p50 and p95 over segments."""
    ok = manifest["status"] == OK
    constant = manifest["constant"].astype("boolean").fillna(False).to_numpy(dtype=bool) \
        if "constant" in manifest.columns else np.zeros(len(manifest), dtype=bool)
    summary: dict[str, float] = {
        "segments_total": float(len(manifest)),
        "segments_ok": float(ok.sum()),
        "segments_failed": float((~ok).sum()),
        "segments_constant": float((ok.to_numpy() & constant).sum()),
        "rows_total": float(manifest["rows"].sum()),
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


def _tags(config: BundleConfig, name: str) -> dict[str, str]:
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


def _params(config: BundleConfig, name: str, model: ModelSpec, spec: SegmentSpec, engine: Engine) -> dict[str, object]:
    ds = config.resolved.resources.datasets[model.dataset]
    params: dict[str, object] = {
        "model": name,
        "dataset": model.dataset,
        "dataset_path": str(config.resolve_path(ds.path)),
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
    return params
