"""A model pack: many segments' models as a few shards plus a manifest, and the router over them.

Its files are laid out as `manifest.PackLayout` says; its manifest's columns are `manifest`'s.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from manymodels.errors import DataError, RegistryError
from manymodels.estimators import FORMAT_BASELINE, FORMAT_LIGHTGBM, Predictor, has_text
from manymodels.registry.manifest import HOLDOUT_PLOT, PROFILE, SEGMENT_INDEX, PackLayout
from manymodels.registry.pack_info import DAMAGED_SOURCE, FALLBACK_SOURCE, MODEL_SOURCE, SEGMENT, DamagedModel
from manymodels.registry.pack_models import PackModels
from manymodels.registry.references import beside, locate, pack_references
from manymodels.registry.routing import Router, is_missing, key_index, unserved
from manymodels.registry.shard_files import first_line
from manymodels.registry.signing import SIGNATURE
from manymodels.segment.shards import exists, join_location, put_file


class Pack(PackModels):
    """A pack opened for prediction: routes each row to its segment's model (`PackModels` reads them).

    Rows are scored shard by shard, so memory stays bounded however large the fleet.
    """

    def profiles(self) -> pd.Series:
        """Each segment's reference profile (bytes; None where it has none), by segment_index; empty for a
        pack trained before profiles existed. Read on first use and kept (scoring never asks)."""
        if self._profiles is None:
            self._profiles = pd.Series(dtype=object, name=PROFILE)
            if exists(self.layout.profiles):
                try:
                    table = pd.read_parquet(io.BytesIO(self.signed_bytes(self.layout.profiles, PackLayout.PROFILES)),
                                            columns=[SEGMENT_INDEX, PROFILE])
                except (OSError, ValueError) as exc:
                    self._profiles = None
                    raise RegistryError(f"{self.root}: unreadable profiles: {exc}") from exc
                self._profiles = pd.Series(table[PROFILE].to_numpy(dtype=object),
                                           index=table[SEGMENT_INDEX].to_numpy(), name=PROFILE)
        return self._profiles

    def plots(self) -> pd.Series:
        """A forecast's segments' holdout plots (JSON text, `forecast_fit.plot_record`), by segment_index; empty
        for a pack without them (not a forecast, or trained before they were kept).

        Raises:
            RegistryError: the file is there but does not read.
        """
        none = pd.Series(dtype=object, name=HOLDOUT_PLOT)
        if not exists(self.layout.profiles):
            return none
        try:
            source = pq.ParquetFile(io.BytesIO(self.signed_bytes(self.layout.profiles, PackLayout.PROFILES)))
            if HOLDOUT_PLOT not in source.schema_arrow.names:
                return none
            table = source.read(columns=[SEGMENT_INDEX, HOLDOUT_PLOT]).to_pandas()  # not the profiles' bytes
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{self.root}: unreadable profiles: {exc}") from exc
        return pd.Series(table[HOLDOUT_PLOT].to_numpy(dtype=object), index=table[SEGMENT_INDEX].to_numpy(),
                         name=HOLDOUT_PLOT)

    @cached_property
    def fallback_states(self) -> pd.DataFrame | None:
        """A forecast fallback's table of the segments it forecasts from a state kept beside it (too thin for a model
        of their own): their segment columns and state (JSON); None without one."""
        if self.fallback is None:
            return None
        where = PackLayout(self.fallback.root).states
        if not exists(where):
            return None
        try:
            return pd.read_parquet(io.BytesIO(self.fallback.signed_bytes(where, PackLayout.STATES)))
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{self.root}: unreadable fallback states: {first_line(exc)}") from exc

    def predict(self, frame: pd.DataFrame, damaged_unserved: bool = False, levels: Sequence[float] = ()
                ) -> pd.DataFrame:
        """One prediction per input row, in input order, by the row's segment model, else the fallback.

        Returns:
            A frame with the input's index, a nullable float column `prediction` (null: no model
            at all) and `model_source`: `segment`, `fallback`, `damaged` (the fallback served a row whose
            own model is damaged) or null; with `levels` (a forecast), `lo-<level>` and `hi-<level>` per level.

        Raises:
            DataError: the input lacks a segment or feature column; `levels` of a model that is no forecast.
            DamagedModel: a row's model is damaged and no fallback serves the row.
        """
        if levels:
            values, source, bands = self.predict_bands(frame, levels)
        else:
            (values, source), bands = self.predict_arrays(frame, damaged_unserved), {}
        absent = unserved(source)
        prediction = pd.array(values, dtype="Float64")
        prediction[absent] = pd.NA
        out = pd.DataFrame({"prediction": prediction, MODEL_SOURCE: pd.array(source, dtype="string")},
                           index=frame.index)
        for name, bound in bands.items():
            column = pd.array(bound, dtype="Float64")
            column[~np.isfinite(bound)] = pd.NA
            out[name] = column
        return out

    def predict_bands(self, frame: pd.DataFrame, levels: Sequence[float]
                      ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """A forecast's `predict_arrays` with each row's prediction interval per level (`lo-<level>`,
        `hi-<level>`: NaN where none).

        Raises:
            DataError: the model is no forecast, a level is no percent, or as `predict_arrays`.
        """
        from manymodels.segment.intervals import checked_levels

        if self.plan is None:
            raise DataError(f"model {self.info.model!r} is no forecast: prediction intervals (levels) come with "
                            "forecasts only")
        try:
            levels = checked_levels(levels, "each of levels")
        except ValueError as exc:
            raise DataError(str(exc)) from None
        missing = [c for c in self.info.required if c not in frame.columns]
        if missing:
            raise DataError(f"input lacks column(s) {', '.join(missing)} that model {self.info.model!r} needs")
        from manymodels.registry.forecast_rows import band_rows

        return band_rows(self, frame, levels)

    def predict_arrays(self, frame: pd.DataFrame, damaged_unserved: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """`predict` as plain arrays (what a server answers with, without building frames): float predictions
        (NaN where no model serves) and each row's model source (object: `segment`, `fallback`, `damaged`, None).

        A segment whose model is damaged (its bytes fail their checksum, its shard does not read) is never
        loaded: with a fallback its rows are the fallback's, marked `damaged`; without one it is an error. With
        `damaged_unserved` (an evaluation: the model, not a stand-in, is judged) its rows are left unpredicted
        (NaN) and marked `damaged`.

        Raises:
            DataError: the input lacks a segment or feature column.
            DamagedModel: a row's model is damaged and no fallback serves the row.
        """
        missing = [c for c in self.info.required if c not in frame.columns]
        if missing:
            raise DataError(f"input lacks column(s) {', '.join(missing)} that model {self.info.model!r} needs")
        if self.plan is not None:  # rows of (segment, time, known features): their forecasts
            from manymodels.registry.forecast_rows import forecast_rows

            return forecast_rows(self, frame, damaged_unserved)
        router = self._routes()
        found = self._find(frame, router)
        values = np.full(len(frame), np.nan)
        has_model = found >= 0
        hits = misses = 0
        hurt_rows = np.empty(0, dtype=np.int64)  # rows whose segment's model is damaged
        if has_model.any():
            features = frame[self.info.features]
            # Numbers only: one float matrix for every LightGBM model; text (categories): the frame itself.
            matrix = None if has_text(features) else features.to_numpy(dtype=np.float64, na_value=np.nan)
            rows = np.flatnonzero(has_model)
            at_route = found[rows]
            if len(rows) > 1:
                # Score shard by shard, segment by segment: each shard is read once, each model loaded once.
                order = np.lexsort((router.segments[at_route], router.shard_codes[at_route]))
                rows, at_route = rows[order], at_route[order]
            cuts = np.flatnonzero(at_route[1:] != at_route[:-1]) + 1
            damaged: list[np.ndarray] = []
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(rows)], strict=True):
                route = int(at_route[lo])
                at = rows[lo:hi]
                try:
                    (fmt, predictor), hit = self._model(
                        str(router.shards[route]), int(router.segments[route]), router.checksums[route]
                    )
                except DamagedModel:
                    if self.fallback is None and not damaged_unserved:
                        raise
                    damaged.append(at)  # the fallback serves these rows, marked DAMAGED_SOURCE
                    continue
                hits, misses = hits + hit, misses + (not hit)
                if fmt == FORMAT_BASELINE:
                    X = frame.iloc[at]  # noqa: N806 - a seasonal baseline reads the time column
                    time = getattr(predictor, "time", None)
                    if time and time not in frame.columns:
                        raise DataError(f"the rows of segment {self._describe(int(router.segments[route]))} need "
                                        f"column {time!r}: their model, a seasonal baseline, reads it")
                else:
                    X = matrix[at] if fmt == FORMAT_LIGHTGBM and matrix is not None else features.iloc[at]  # noqa: N806
                values[at] = cast(Predictor, predictor).predict(X)  # a forecast pack never comes here
            if damaged:
                hurt_rows = np.concatenate(damaged)
                has_model[hurt_rows] = damaged_unserved  # else the fallback's
        if self._on_cache is not None and (hits or misses):
            self._on_cache(hits, misses)
        source = np.full(len(frame), None, dtype=object)
        source[has_model] = SEGMENT
        if damaged_unserved:
            source[hurt_rows] = DAMAGED_SOURCE
        rest = np.flatnonzero(~has_model)
        if rest.size and self.fallback is not None:
            backup, backup_source = self.fallback.predict_arrays(frame.iloc[rest])
            served = ~unserved(backup_source)
            values[rest[served]] = backup[served]
            source[rest[served]] = FALLBACK_SOURCE
            hurt = found[rest] >= 0  # rows whose own model is damaged
            if hurt.any():
                if not served[hurt].all():
                    first = int(found[rest[hurt & ~served][0]])
                    raise DamagedModel(str(self._damaged[int(router.segments[first])]))
                source[rest[hurt]] = DAMAGED_SOURCE
        return values, source

    def predict_plain(self, keys: Sequence[Any], matrix: np.ndarray) -> np.ndarray | None:
        """Rows' predictions from their keys (plain Python values, a tuple per row for several key columns) and
        features (one float matrix, `features` order): the path of a server's plain requests, without frames. None
        when a row needs more than its own LightGBM model (no model of its own, a damaged model, another kind of
        model, a forecast): `predict_arrays` answers those, with the fallback and the damage rules."""
        if self.plan is not None:
            return None
        router = self._routes()
        lookup = router.keys
        if lookup is None:
            return None
        groups: dict[int, list[int]] = {}
        for row, key in enumerate(keys):
            route = lookup.get(key)
            if route is None:
                return None
            groups.setdefault(route, []).append(row)
        values = np.empty(len(keys))
        hits = misses = 0
        for route, rows in groups.items():
            try:
                (fmt, predictor), hit = self._model(
                    str(router.shards[route]), int(router.segments[route]), router.checksums[route]
                )
            except DamagedModel:
                return None
            if fmt != FORMAT_LIGHTGBM:
                return None
            hits, misses = hits + hit, misses + (not hit)
            values[rows] = cast(Predictor, predictor).predict(matrix[rows])
        if self._on_cache is not None:
            self._on_cache(hits, misses)
        return values

    def shard_order(self, segments: np.ndarray) -> np.ndarray:
        """Positions that put these served segments in shard order (each shard read once when loading them)."""
        router = self._routes()
        codes = np.array([router.shard_codes[router.position[int(s)]] for s in segments], dtype=np.int64)
        return np.lexsort((segments, codes))

    def locate(self, keys: pd.DataFrame) -> np.ndarray:
        """Each row's segment index in this pack (-1: no model of its own); `keys` holds the segment columns."""
        router = self._routes()
        found = self._find(keys, router)
        return np.where(found >= 0, router.segments[np.maximum(found, 0)], -1) if len(found) else found

    def manifest_row(self, keys: pd.DataFrame) -> dict[str, Any] | None:
        """The manifest row of the first row's segment (a failed segment's too), as a dict; None if absent."""
        mask = np.ones(len(self.manifest), dtype=bool)
        for col in self.info.segment_by:
            want = keys[col].iloc[0]
            column = self.manifest[col]
            mask &= column.isna().to_numpy() if is_missing(want) else (column == want).fillna(False).to_numpy()
        hits = np.flatnonzero(mask)
        return None if not hits.size else self.manifest.iloc[int(hits[0])].to_dict()

    def _find(self, frame: pd.DataFrame, router: Router) -> np.ndarray:
        """Each row's position in the router (-1: no model)."""
        if not self.info.segment_by:  # one model for every row (a global fallback)
            return np.full(len(frame), 0 if len(router.segments) else -1, dtype=np.int64)
        columns: dict[str, Any] = {}
        for col in self.info.segment_by:  # a key typed differently in the input still finds its model
            values, want = frame[col], router.dtypes[col]
            if values.dtype != want:
                try:
                    values = values.astype(want)
                except (TypeError, ValueError) as exc:
                    if not (pd.api.types.is_numeric_dtype(values) and pd.api.types.is_numeric_dtype(want)):
                        raise DataError(
                            f"segment column {col!r} is {values.dtype} in the input but "
                            f"{want} in model {self.info.model!r}"
                        ) from exc
                    values = values.astype(np.float64)  # a missing integer key: matches no segment
            columns[col] = key_index(values, col in router.as_object)
        keys = list(columns.values())
        target: pd.Index = keys[0] if len(keys) == 1 else pd.MultiIndex.from_arrays(keys)
        return np.asarray(router.index.get_indexer(target), dtype=np.int64)


def publish_pack(root: Path, dest: str) -> str:
    """Copy a local pack to `dest` (a shared folder or fsspec URL) for a cluster's executors; once per pack.

    `pack.json` goes last, so a pack found there is whole; a pack already there is not copied again.
    """
    source, target = PackLayout(root), PackLayout(dest)
    if exists(target.info):
        return dest
    own, runs = pack_references(root)
    if runs:  # the packs a changed-only run's carried models lie in, published where it will look: beside
        places = locate(root, own, runs)
        for run in runs:
            there = beside(dest, own, run)
            if there is None:
                raise RegistryError(f"{root}: cannot publish to {dest}: it must name run {own} (its references)")
            publish_pack(Path(places[run]), str(there))
    if Path(PackLayout(source.fallback).info).exists():
        publish_pack(Path(source.fallback), str(target.fallback))
    for shard in sorted(Path(source.shards).glob("shard-*.parquet")):
        put_file(shard, target.shard(shard.name))
    put_file(Path(source.manifest), target.manifest)
    for name in (PackLayout.PROFILES, PackLayout.STATES, SIGNATURE):
        if (Path(source.root) / name).exists():
            put_file(Path(source.root) / name, join_location(target.root, name))
    put_file(Path(source.info), target.info)
    return dest


class PackPredict:
    """Picklable predictions from a pack folder, for engine workers: the pack is opened once per process.

    Lives here, not beside the score task, so a Spark executor unpickling it imports no MLflow.
    """

    def __init__(self, root: str) -> None:
        self.root = root  # a local folder or an fsspec URL
        self._pack: Pack | None = None

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self._pack is None:
            self._pack = Pack(self.root)
        return self._pack.predict(frame)

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "_pack": None}
