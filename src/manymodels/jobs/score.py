"""The score task: predictions from a training run's pack, written as Parquet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from manymodels.bundle import BundleConfig
from manymodels.data import is_delta_table, output_format, read_frame, write_table
from manymodels.errors import DataError, RegistryError
from manymodels.jobs.train import experiment_name, staging_folder
from manymodels.registry import Pack, PackPredict, Tracker
from manymodels.registry.pack import FALLBACK_SOURCE, MODEL_SOURCE, publish_pack
from manymodels.registry.tracking import STATUS_OK, RunInfo

PACK_PATH = "model/pack"


@dataclass
class ScoreOutcome:
    """What scoring produced: the frame, where it went, which run served it, what had no model."""

    model: str
    run_id: str
    frame: Any  # a pandas DataFrame; a Spark DataFrame when scored on Spark
    output: Path | None
    rows: int
    rows_without_model: int
    segments_without_model: int
    version: int | None = None  # the registered version that served, when it was the champion
    rows_fallback: int = 0  # rows predicted by the fallback model


def resolve_run(config: BundleConfig, name: str, run_id: str | None = None) -> RunInfo:
    """The run to score with: the one named, else the model's latest successful training run.

    Raises:
        RegistryError: no such run, a run of another model, a failed run, or none trained yet.
    """
    tracker = Tracker(config.tracking_uri, config.embedded_artifacts)
    if run_id:
        info = tracker.run(run_id)
        if info.model != name:
            raise RegistryError(f"run {run_id} is a run of model {info.model or '?'!r}, not {name!r}")
        if info.status != STATUS_OK:
            raise RegistryError(f"run {run_id} did not finish successfully (status {info.status}); it has no models")
        return info
    runs = tracker.runs(experiment_name(config, name), name, only_ok=True, limit=1)
    if not runs:
        raise RegistryError(
            f"model {name!r} has no successful training run on target {config.target!r} "
            f"(run `manymodels train {name}` first)"
        )
    return runs[0]


def resolve_serving(config: BundleConfig, name: str, run_id: str | None = None) -> tuple[RunInfo, int | None]:
    """The run whose pack scores: the one named, else the champion version's, else the latest training run.

    Returns:
        The run, and the champion's version number when the champion serves.
    """
    if run_id:
        return resolve_run(config, name, run_id), None
    from manymodels.jobs.evaluate import model_registry
    from manymodels.registry.versions import CHAMPION

    tracker = Tracker(config.tracking_uri, config.embedded_artifacts)
    champion = model_registry(config, name, tracker).by_alias(CHAMPION)
    if champion is None:
        return resolve_run(config, name), None
    return tracker.run(champion.run_id), champion.version


def open_pack(config: BundleConfig, info: RunInfo) -> Pack:
    """The pack of a run, read in place or downloaded once into .manymodels/cache."""
    tracker = Tracker(config.tracking_uri, config.embedded_artifacts)
    return Pack(tracker.local_artifacts(info, PACK_PATH, config.embedded_dir / "cache"))


def read_input(config: BundleConfig, data: str | Path | pd.DataFrame) -> pd.DataFrame:
    """A frame to score: given as is, a dataset of the bundle by name, or a Parquet/CSV file or Delta table path."""
    if isinstance(data, pd.DataFrame):
        return data
    datasets = config.resolved.resources.datasets
    path, fmt = dataset_location(config, data)
    if not (isinstance(data, str) and data in datasets) and not (path.is_file() or is_delta_table(path)):
        raise DataError(
            f"{data}: neither a dataset of the bundle ({', '.join(datasets) or 'none'}) nor a file or Delta table"
        )
    return read_frame(path, fmt)


def dataset_location(config: BundleConfig, data: str | Path) -> tuple[Path, str]:
    """(path, format) of a bundle dataset, or of a path: a Delta table folder, CSV by suffix, else Parquet."""
    datasets = config.resolved.resources.datasets
    if isinstance(data, str) and data in datasets:
        return config.resolve_path(datasets[data].path), datasets[data].format
    path = Path(data)
    if is_delta_table(path):
        return path, "delta"
    return path, "csv" if path.suffix.lower() == ".csv" else "parquet"


def score_with_spark(
    config: BundleConfig,
    name: str,
    spark: Any,
    data: str | Path | Any,
    output: Path,
    run_id: str | None = None,
    partition_by_segment: bool = False,
) -> ScoreOutcome:
    """Score on Spark: the data read (or given) as a Spark DataFrame, predictions written by Spark.

    Executors read the run's pack where the driver has it when the session is in local mode (or
    when no engine.staging is set: the folder must then be shared); on a cluster with
    engine.staging, the pack is copied there once per run (`<staging>/packs/<run id>`).
    """
    from manymodels.engines.spark import read_with_spark, score_on_spark, session_is_local, unserved_counts

    config.model(name)
    info, version = resolve_serving(config, name, run_id)
    pack = open_pack(config, info)
    if isinstance(data, str | Path):
        data = read_with_spark(spark, *dataset_location(config, data))
    routes = pack.manifest.loc[pack.manifest["shard"].notna(), [*pack.segment_by, "shard"]].copy()
    root = str(pack.root)
    shared = staging_folder(config, "packs", info.run_id)
    if shared is not None and not session_is_local(spark) and isinstance(pack.root, Path):
        root = publish_pack(pack.root, shared)
    written = score_on_spark(spark, data, routes, pack.segment_by, PackPredict(root), str(output), partition_by_segment)
    rows, rows_without, segments_without, fallback = unserved_counts(written, pack.segment_by)
    return ScoreOutcome(name, info.run_id, written, output, rows, rows_without, segments_without, version, fallback)


def score(
    config: BundleConfig,
    name: str,
    data: str | Path | pd.DataFrame,
    output: Path | None = None,
    run_id: str | None = None,
) -> ScoreOutcome:
    """Predict every row with its segment's model; rows of segments without a model get null.

    Args:
        config: the bundle resolved for a target.
        name: the model family.
        data: a frame, a dataset name, or a file path.
        output: where to write the input columns plus `prediction`: Parquet, or CSV for a `.csv` path (None:
            don't write).
        run_id: the run whose models to use (default: the champion version once there is one, else
            the latest successful training run).
    """
    config.model(name)
    if output is not None:
        output_format(output)  # an unknown suffix is an error before any work
    frame = read_input(config, data)
    info, version = resolve_serving(config, name, run_id)
    pack = open_pack(config, info)
    predicted = pack.predict(frame)
    out = frame.copy()
    out["prediction"] = predicted["prediction"].array  # nullable: no model is null, not NaN
    out[MODEL_SOURCE] = predicted[MODEL_SOURCE].array
    missing = predicted["prediction"].isna().to_numpy()
    unserved = frame.loc[missing, pack.segment_by].drop_duplicates()
    fallback = int((predicted[MODEL_SOURCE] == FALLBACK_SOURCE).sum())
    if output is not None:
        write_table(out, output)
    return ScoreOutcome(name, info.run_id, out, output, len(out), int(missing.sum()), len(unserved), version, fallback)
