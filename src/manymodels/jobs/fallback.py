"""A run's fallback pack: one model over every row (or per parent group) for the segments without one of their own,
and, for a forecast, the states it forecasts thin segments from."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from manymodels.data import write_parquet
from manymodels.engines import Dataset, Engine
from manymodels.engines.records import (
    drop_records,
)
from manymodels.registry import PackInfo, write_pack_files
from manymodels.registry import manifest as mf
from manymodels.registry.manifest import PackLayout
from manymodels.registry.pack_info import FORECAST, sign
from manymodels.segment import SegmentSpec
from manymodels.segment.forecast_pooled import fallback_plan
from manymodels.segment.shards import (
    fetch_shards,
    make_folder,
)


def fit_fallback(
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
    data = engine.load(dataset, fallback_spec)
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
    sign(fallback_root)
    return len(thin)
