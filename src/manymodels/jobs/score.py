"""The score task: predictions from the serving pack, made on the target's engine and written (or returned)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from manymodels.data import output_format
from manymodels.engines import Engine
from manymodels.jobs.context import Target, source_rows


@dataclass
class ScoreOutcome:
    """What scoring produced: the frame, where it went, which run served it, what had no model."""

    model: str
    run_id: str
    frame: Any  # a pandas DataFrame; on a Spark engine, the written Spark DataFrame
    output: Path | None
    rows: int
    rows_without_model: int
    segments_without_model: int
    version: int | None = None  # the registered version that served, when it was the champion
    rows_fallback: int = 0  # rows predicted by the fallback model
    rows_damaged: int = 0  # rows the fallback predicted because their own model is damaged


def score(
    target: Target,
    name: str,
    data: str | Path | Any,
    output: Path | None = None,
    run_id: str | None = None,
    partition_by_segment: bool = False,
    engine: Engine | None = None,
    workers: int | None = None,
) -> ScoreOutcome:
    """Predict every row with its segment's model (else the fallback's); rows no model serves get null.

    Args:
        target: the bundle resolved for a target.
        name: the model family.
        data: a dataset of the bundle, a file path, or a frame (pandas; on Spark, a Spark DataFrame too).
        output: where to write the input columns plus `prediction` and `model_source`: Parquet, or CSV for a
            `.csv` path (None: don't write; a Spark engine always writes, so it needs one).
        run_id: the run whose models to use (default: the champion version once there is one, else
            the latest successful training run).
        partition_by_segment: on Spark, one output folder per segment.
        engine: the engine to score on (a job's); default: the target's, for this call.
        workers: processes to score on (default: the target's engine setting, else the cores).

    On a cluster, executors read the run's pack in place when the session is in local mode (or
    no engine.staging is set: the folder must then be shared); with engine.staging, the pack is
    copied there once per run (`<staging>/packs/<run id>`).
    """
    target.model(name)
    if output is not None and not (target.config.resolved.engine.kind == "spark" or target.spark is not None):
        output_format(output)  # an unknown suffix is an error before any work
    source = target.source(data)
    with target.engine(engine, workers) as running:
        # The pool's workers start now, so their imports (LightGBM's alone ~2 s) overlap this process's MLflow
        # set-up; this process then only feeds them and never imports a model library (bench/RESULTS.md). A small
        # input gets one such worker (overlap), which does the scoring.
        running.start(rows=source_rows(source), overlap=True)
        info, version = target.resolve_serving(name, run_id)
        pack = target.open_pack(info)
        root = target.reachable_pack(running, info, pack)
        scored = running.score(source, root, output, partition_by_segment)
    return ScoreOutcome(
        name,
        info.run_id,
        scored.frame,
        output,
        scored.rows,
        scored.rows_without_model,
        scored.segments_without_model,
        version,
        scored.rows_fallback,
        scored.rows_damaged,
    )
