"""The forecast task: the next steps of every segment of a forecast family, from the serving pack, on the engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from manymodels.data import output_format, write_table
from manymodels.data.hierarchy import with_levels
from manymodels.engines import Engine
from manymodels.errors import BundleError
from manymodels.estimators.reconcile import require as require_reconciler
from manymodels.jobs.context import Target
from manymodels.registry.forecasting import STEP
from manymodels.registry.hierarchy import reconcile_rows
from manymodels.segment.intervals import checked_levels


@dataclass
class ForecastOutcome:
    """What a forecast produced: the rows (segment, time, step, prediction, model_source), where they went, which
    run served, how many segments had no model."""

    model: str
    run_id: str
    frame: pd.DataFrame
    output: Path | None
    steps: int
    segments: int
    segments_without_model: int
    version: int | None = None
    from_data: bool = False
    segments_fallback: int = 0  # forecast by the fallback: thin in training, or unseen (with --data)
    reconcile: str | None = None  # a hierarchy's reconciliation method (None: no hierarchy)
    reconcile_problem: str | None = None  # why a hierarchy's forecasts were left as they are (None: reconciled)


def forecast(
    target: Target,
    name: str,
    horizon: int | None = None,
    data: str | Path | pd.DataFrame | None = None,
    known: str | Path | pd.DataFrame | None = None,
    output: Path | None = None,
    run_id: str | None = None,
    version: int | None = None,
    engine: Engine | None = None,
    workers: int | None = None,
    levels: Sequence[float] = (),
) -> ForecastOutcome:
    """Forecast the next `horizon` steps of every segment of a forecast family.

    Args:
        target: the bundle resolved for a target.
        name: the model family (`task: forecast`).
        horizon: how many steps (default: the trained horizon; more is an error).
        data: newer history to start from (a dataset of the bundle, a path or a frame: segment columns, time,
            label, known features); default: each segment's latest rows as the pack keeps them (no data read).
        known: the known features' future values (segment columns, time, the known columns), when the model
            reads any.
        output: where to write the rows (Parquet, or CSV by suffix); None: not written.
        run_id: the run whose models forecast (default: the champion version, else the latest training run).
        version: a registered version instead.
        engine: the engine to forecast on (a job's); default: the target's, for this call.
        workers: processes to forecast on (default: the target's engine setting, else the cores).
        levels: prediction intervals to add (percents, each between 0 and 100): `lo-<level>`, `hi-<level>` columns,
            conformal per segment from its validation windows' errors (none where too few: see README).

    Raises:
        BundleError: not a forecast model, both a run and a version, a horizon past the trained one, or a level
            outside (0, 100).
        DataError: the known values lack a segment's step (named), a history off the grid.
    """
    spec = target.model(name)
    if spec.task != "forecast":
        raise BundleError(f"model {name!r} is not a forecast model (task {spec.task}): use `score`")
    if run_id is not None and version is not None:
        raise BundleError("give --run or --version, not both")
    if horizon is not None and horizon < 1:
        raise BundleError(f"--horizon must be at least 1; got {horizon}")
    try:
        levels = checked_levels(levels, "--level")
    except ValueError as exc:
        raise BundleError(str(exc)) from None
    if output is not None:
        output_format(output)  # an unknown suffix is an error before any work
    history = target.source(data) if data is not None else None
    future = target.read_input(known) if known is not None else None
    with target.engine(engine, workers) as running:
        running.start()
        served: int | None
        if version is not None:
            info, served = target.resolve_version(name, version), version
        else:
            info, served = target.resolve_serving(name, run_id)
        pack = target.open_pack(info)
        plan = pack.plan
        if plan is None:
            raise BundleError(f"run {info.run_id} of model {name!r} holds no forecast models (trained before "
                              "task forecast?): train it again")
        steps = horizon or plan.horizon
        if steps > plan.horizon:
            raise BundleError(f"--horizon {steps} is past the {plan.horizon} steps model {name!r} was trained and "
                              "measured for: forecast at most that many, or train with a longer horizon")
        hierarchy = plan.hierarchy
        if hierarchy:  # the levels above the segments, from the rows given
            require_reconciler()
            if data is not None:
                rows = target.read_input(data)
                if not isinstance(rows, pd.DataFrame):  # an engine's own frame (Spark's)
                    raise BundleError("a hierarchy's newer history is summed into its levels here: give --data as "
                                      "a dataset, a file or a pandas frame, not a Spark DataFrame")
                history = with_levels(rows, hierarchy, pack.info.label, plan.time)
            if future is not None:
                future = with_levels(future, hierarchy, None, plan.time)
        root = target.reachable_pack(running, info, pack)
        done = running.forecast(root, steps, history, future, levels)
    by = [*pack.segment_by, STEP]
    frame = done.frame.sort_values(by, kind="stable").reset_index(drop=True) if len(done.frame) else done.frame
    reconciled = reconcile_rows(pack, frame, steps, levels) if hierarchy else None
    if reconciled is not None:
        frame = reconciled.frame
    segments = len(frame) // steps if steps else 0
    if output is not None:
        write_table(frame, output)
    by_fallback = int((frame["model_source"] == "fallback").sum()) // steps if len(frame) else 0
    return ForecastOutcome(name, info.run_id, frame, output, steps, segments, done.segments_without_model, served,
                           history is not None, by_fallback,
                           reconciled.method if reconciled is not None else None,
                           reconciled.problem if reconciled is not None else None)

