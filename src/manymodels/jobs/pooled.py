"""Pooled forecast candidates (`scope: global`): one model over every segment's series, fitted before the fleet.

Each pooled candidate is fitted on the engine as one segment of every row (the series kept apart by their
segment columns, as a forecast fallback is), on the windows each segment's own selection uses. Its model is
written once into the pack, under `shared/` and named by the checksum of its bytes (so packs composed by a
promotion keep every run's apart); its per-series window metrics and holdout forecasts go into the spec every
segment is then fitted with, where the segment's selection weighs it against its own models.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from manymodels.engines import Dataset, Engine
from manymodels.errors import DataError
from manymodels.registry.manifest import PackLayout
from manymodels.segment import SegmentSpec
from manymodels.segment.fit import OK
from manymodels.segment.shards import checksum, join_location, make_folder, read_shard, remove_folder, write_file
from manymodels.segment.spec import SharedFit


def pooled_candidates(spec: SegmentSpec) -> list[str]:
    """The names of a spec's pooled candidates."""
    return [c.name for c in spec.choices() if c.pooled]


def fit_pooled_candidates(
    engine: Engine, spec: SegmentSpec, dataset: Dataset, pack_dir: Path, run_staging: str | None
) -> SegmentSpec:
    """Fit every pooled candidate of `spec` over the fleet; the spec returned carries their fits (`shared`).

    Raises:
        DataError: a pooled candidate could not be fitted (no series long enough, its estimator failed).
    """
    shared = list(spec.shared)
    layout = PackLayout(pack_dir)
    for number, candidate in enumerate(c for c in spec.choices() if c.pooled):
        pooled = replace(spec, segment_by=(), pool_by=spec.segment_by, candidates=(candidate,), shared=())
        data = engine.load(dataset, pooled)
        where: str | Path = (Path(layout.shared) / f".fit-{number}" if run_staging is None
                             else f"{run_staging}/{PackLayout.SHARED}-fit-{number}")
        make_folder(where)
        try:
            results = engine.fit(data, pooled, str(where))
            result = results[0] if results else None
            if result is None or result.status != OK or result.shard is None or result.series_scores is None:
                why = result.error if result is not None and result.error else "no rows"
                raise DataError(f"candidate {candidate.name} (scope global) could not be fitted over the fleet: {why}")
            _, blob = read_shard(join_location(where, result.shard))[result.index]
        finally:
            remove_folder(where)
        digest = checksum(blob)
        Path(layout.shared).mkdir(parents=True, exist_ok=True)
        write_file(layout.shared_model(digest), blob)
        scores = {k: (list(v[0]), list(v[1])) for k, v in json.loads(result.series_scores).items()}
        shared.append(SharedFit(candidate.name, digest, scores))
    return replace(spec, shared=tuple(shared))
