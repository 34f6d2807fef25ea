"""A model pack: many segments' models as a few shards plus a manifest, and the router over them.

Its files are laid out as `manifest.PackLayout` says; its manifest's columns are `manifest`'s.
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from manymodels.data import write_parquet
from manymodels.errors import DataError, RegistryError
from manymodels.estimators import FORMAT_BASELINE, FORMAT_LIGHTGBM, Predictor, has_text, load_model
from manymodels.registry.manifest import (
    CHECKSUM,
    HOLDOUT_PLOT,
    PROFILE,
    SEGMENT_INDEX,
    SHARD,
    SHARD_CHECKSUM,
    PackLayout,
    routes,
)
from manymodels.segment.forecast import (
    FORMAT_FORECAST,
    Forecaster,
    forecaster_header,
    header_residuals,
    load_forecaster,
    shared_references,
)
from manymodels.segment.shards import (
    checksum,
    exists,
    group_models,
    is_url,
    list_files,
    models_of,
    put_file,
    read_bytes,
)
from manymodels.segment.spec import ForecastPlan

PACK_VERSION = 1
MODEL_SOURCE = "model_source"  # which model served a row: segment, fallback, damaged, or null (none)
SEGMENT, FALLBACK_SOURCE = "segment", "fallback"
# The row's segment has a model but its bytes are damaged (checksum, unreadable shard): the fallback served it.
DAMAGED_SOURCE = "damaged"
TIME = "time"  # PackInfo.extra's key of the time column seasonal baselines read
FORECAST = "forecast"  # PackInfo.extra's key of a forecast family's plan (segment.spec.ForecastPlan, as a dict)


class DamagedModel(RegistryError):
    """A segment's model whose bytes fail their checksum or whose shard cannot be read: it is never loaded."""


@dataclass(frozen=True)
class PackInfo:
    """What every model of a pack shares."""

    model: str
    segment_by: list[str]
    features: list[str]
    label: str
    task: str
    metric: str
    run_id: str = ""
    bundle: str = ""
    target: str = ""
    version: int = PACK_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def time(self) -> str | None:
        """The time column a seasonal baseline reads at prediction (None when no model needs one)."""
        return self.extra.get(TIME)

    @property
    def forecast(self) -> ForecastPlan | None:
        """The forecast plan of a forecast family's pack (None for a regression or binary one)."""
        plan = self.extra.get(FORECAST)
        return ForecastPlan.from_dict(plan) if isinstance(plan, dict) else None

    @property
    def required(self) -> list[str]:
        """The columns every row needs: segments, features and a forecast's time."""
        timed = [self.time] if self.time and FORECAST in self.extra else []
        return list(dict.fromkeys([*self.segment_by, *self.features, *timed]))

    @property
    def inputs(self) -> list[str]:
        """The columns a row may need: the required ones and the time, which a regression pack's seasonal baselines
        read (only the rows of their segments need it)."""
        return list(dict.fromkeys([*self.required, *([self.time] if self.time else [])]))


def write_pack_files(pack_dir: Path, info: PackInfo, manifest: pd.DataFrame) -> None:
    """Write a pack's manifest, its profiles (apart: scoring never reads them) and description beside the shards."""
    layout = PackLayout(pack_dir)
    if PROFILE in manifest.columns:
        apart = [c for c in (PROFILE, HOLDOUT_PLOT) if c in manifest.columns]
        write_parquet(manifest[[SEGMENT_INDEX, *apart]], Path(layout.profiles))
        manifest = manifest.drop(columns=apart)
    write_parquet(manifest, Path(layout.manifest))
    Path(layout.info).write_text(json.dumps(asdict(info), indent=2), encoding="utf-8")


class Pack:
    """A pack opened for prediction: routes each row to its segment's model.

    Shards are read when first needed, at most `cache_shards` kept at once, and rows are
    scored shard by shard, so memory stays bounded however large the fleet. The last
    `cache_models` models loaded are kept too, so rows of one segment that arrive in several
    calls (batches on a Spark executor, requests to a server) load its model once.

    With `whole_shards=False` (a server: a few rows at a time, any segment), a model is read
    alone: only the row group of its shard that holds it (shards are written in row groups of
    about a megabyte), the shard files kept open instead of their contents. Safe to share
    between threads: the caches are guarded, models are loaded outside the guard.

    Args:
        on_cache: called after each `predict` with (models found loaded, models loaded), for metrics.
    """

    def __init__(
        self,
        root: Path | str,
        cache_shards: int = 4,
        cache_models: int = 64,
        whole_shards: bool = True,
        on_cache: Callable[[int, int], None] | None = None,
    ) -> None:
        self.root: Path | str = str(root) if is_url(root) else Path(root)
        self.layout = PackLayout(self.root)
        try:
            raw = json.loads(read_bytes(self.layout.info).decode("utf-8"))
            self.info = PackInfo(**raw)
            self.manifest = pd.read_parquet(io.BytesIO(read_bytes(self.layout.manifest)),
                                            page_checksum_verification=True)
        except (OSError, ValueError, TypeError, KeyError) as exc:  # KeyError: pandas' own metadata damaged
            raise RegistryError(f"{self.root}: not a readable model pack: {_first_line(exc)}") from exc
        named = [*self.info.segment_by, *self.info.features]
        if not all(isinstance(c, str) for c in named) or len(set(named)) != len(named):
            raise RegistryError(f"{self.root}: not a readable model pack: pack.json names a column twice")
        lacking = [c for c in (*self.info.segment_by, SEGMENT_INDEX, SHARD) if c not in self.manifest.columns]
        if lacking:
            raise RegistryError(f"{self.root}: not a readable model pack: its manifest lacks {', '.join(lacking)}")
        self._cache_size = max(1, cache_shards)
        self._shards: OrderedDict[str, dict[int, tuple[str, bytes]]] = OrderedDict()
        self._model_cache_size = max(1, cache_models)
        self._models: OrderedDict[int, tuple[str, Predictor | Forecaster]] = OrderedDict()
        self._profiles: pd.Series | None = None
        self._whole_shards = whole_shards or is_url(self.root)
        self._files: OrderedDict[str, _ShardFile] = OrderedDict()
        self._on_cache = on_cache
        self._lock = threading.RLock()
        self._read_lock = threading.Lock()
        self._router: _Router | None = None
        self._damaged: dict[int, DamagedModel] = {}  # segments found damaged: never read again
        self._bad_shards: dict[str, str] = {}  # shard files that do not read, with why
        self._troubles: dict[str, str] = {}  # shard files some of whose row groups do not read, with why
        self._pooled: dict[str, Forecaster] = {}  # pooled models segments share, by checksum
        self.fallback: Pack | None = None
        fallback = PackLayout(self.layout.fallback)
        if exists(fallback.info):
            self.fallback = Pack(fallback.root, cache_shards, cache_models, whole_shards, on_cache)

    def profiles(self) -> pd.Series:
        """Each segment's reference profile (bytes; None where it has none), by segment_index; empty for a
        pack trained before profiles existed. Read on first use and kept (scoring never asks)."""
        if self._profiles is None:
            self._profiles = pd.Series(dtype=object, name=PROFILE)
            if exists(self.layout.profiles):
                try:
                    table = pd.read_parquet(io.BytesIO(read_bytes(self.layout.profiles)),
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
            source = pq.ParquetFile(io.BytesIO(read_bytes(self.layout.profiles)))
            if HOLDOUT_PLOT not in source.schema_arrow.names:
                return none
            table = source.read(columns=[SEGMENT_INDEX, HOLDOUT_PLOT]).to_pandas()  # not the profiles' bytes
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{self.root}: unreadable profiles: {exc}") from exc
        return pd.Series(table[HOLDOUT_PLOT].to_numpy(dtype=object), index=table[SEGMENT_INDEX].to_numpy(),
                         name=HOLDOUT_PLOT)

    @property
    def segment_by(self) -> list[str]:
        """The columns that route a row to its model."""
        return list(self.info.segment_by)

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
        absent = _absent(source)
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
        from manymodels.registry.forecasting import band_rows

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
            from manymodels.registry.forecasting import forecast_rows

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
            served = ~_absent(backup_source)
            values[rest[served]] = backup[served]
            source[rest[served]] = FALLBACK_SOURCE
            hurt = found[rest] >= 0  # rows whose own model is damaged
            if hurt.any():
                if not served[hurt].all():
                    first = int(found[rest[hurt & ~served][0]])
                    raise DamagedModel(str(self._damaged[int(router.segments[first])]))
                source[rest[hurt]] = DAMAGED_SOURCE
        return values, source

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
            return pd.read_parquet(io.BytesIO(read_bytes(where)))
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{self.root}: unreadable fallback states: {_first_line(exc)}") from exc

    @cached_property
    def plan(self) -> ForecastPlan | None:
        """A forecast family's plan (None for other packs)."""
        return self.info.forecast

    def model_of(self, segment: int) -> Predictor | Forecaster:
        """A served segment's loaded model (a forecast pack's: its `Forecaster`), checked and cached.

        Raises:
            DamagedModel: its bytes are damaged (or the pack does not serve it).
        """
        router = self._routes()
        at = router.position.get(int(segment))
        if at is None:
            raise DamagedModel(f"{self.root}: no model of segment_index {segment}")
        return self._model(str(router.shards[at]), int(segment), router.checksums[at])[0][1]

    def window_errors(self, segments: np.ndarray) -> list[np.ndarray | None]:
        """Each forecast segment's validation-window errors (windows x steps), read from its model's header (no
        model loaded); None where it has none: no model of its own (-1), none kept, or damaged bytes."""
        router = self._routes()
        out: list[np.ndarray | None] = []
        for segment in segments.tolist():
            at = router.position.get(int(segment))
            if at is None:
                out.append(None)
                continue
            try:
                found = self._blob(str(router.shards[at]), int(segment), lenient=router.checksums[at] is not None)
            except DamagedModel:
                out.append(None)
                continue
            if found is None or found[0] != FORMAT_FORECAST or model_problem(found, router.checksums[at], None):
                out.append(None)
                continue
            out.append(header_residuals(forecaster_header(found[1])[0]))
        return out

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
            mask &= column.isna().to_numpy() if _is_missing(want) else (column == want).fillna(False).to_numpy()
        hits = np.flatnonzero(mask)
        return None if not hits.size else self.manifest.iloc[int(hits[0])].to_dict()

    def served_count(self) -> int:
        """How many segments have a model of their own."""
        return len(self._routes().segments)

    def cached_segments(self) -> list[int]:
        """The segment indices whose models are loaded, least recently used first."""
        with self._lock:
            return list(self._models)

    def loaded_count(self) -> int:
        """How many segment models are loaded (the fallback's included)."""
        with self._lock:
            own = len(self._models)
        return own + (self.fallback.loaded_count() if self.fallback is not None else 0)

    def warm(self, indices: Sequence[int], stop: threading.Event | None = None) -> int:
        """Load these segments' models ahead of requests, in order, no more than the cache holds.

        Returns:
            How many were loaded (stops early when `stop` is set).
        """
        router = self._routes()
        loaded = 0
        for segment in list(indices)[: self._model_cache_size]:
            if stop is not None and stop.is_set():
                break
            at = router.position.get(int(segment))
            if at is not None:
                try:
                    self._model(str(router.shards[at]), int(segment), router.checksums[at])
                except DamagedModel:
                    continue  # requests find it damaged too, and say so
                loaded += 1
        return loaded

    def verify(self) -> None:
        """Read every shard file whole and check it: its checksum, and that it holds the manifest's models with
        theirs (the fallback's too). Checksums are checked where the manifest has them (packs since 0.x).

        Raises:
            DamagedModel: a shard that is missing, damaged or lacks a model, named with a segment.
        """
        router = self._routes()
        referenced: dict[str, str] = {}  # a pooled model's checksum -> the candidate whose segments reference it
        for name in sorted(set(router.shards.tolist())):
            at = np.flatnonzero(router.shards == name)
            models = self._read_whole(str(name), router.shard_sums[at[0]], strict=True)
            for position in at:
                segment = int(router.segments[position])
                found = models.get(segment)
                reason = model_problem(found, router.checksums[position])
                if reason:
                    raise self.damage(str(name), segment, reason)
                if found is not None and found[0] == FORMAT_FORECAST:
                    for digest, candidate in shared_references(found[1]).items():
                        referenced.setdefault(digest, candidate)
        present = {name.removesuffix(".model") for name in list_files(self.layout.shared, "*.model")}
        for digest in sorted(present | set(referenced)):  # a missing one is as damaged as a changed one
            self._pooled_model(digest, referenced.get(digest, ""))
        if self.fallback is not None:
            self.fallback.verify()

    def check_models(self, indices: Sequence[int]) -> dict[int, str]:
        """Which of these segments' models are damaged, each with why (their shards read whole, one at a time).

        What a changed-only run asks before it carries models into a new run.
        """
        router = self._routes()
        position = router.position
        wanted = [(str(router.shards[position[int(i)]]), int(i)) for i in indices if int(i) in position]
        damaged: dict[int, str] = {}
        for name in sorted({shard for shard, _ in wanted}):
            segments = [i for shard, i in wanted if shard == name]
            try:
                models = self._read_whole(name, router.shard_sums[position[segments[0]]])
            except DamagedModel as exc:
                damaged.update(dict.fromkeys(segments, str(exc)))
                continue
            for segment in segments:
                reason = model_problem(models.get(segment), router.checksums[position[segment]], self.trouble(name))
                if reason:
                    damaged[segment] = str(self.damage(name, segment, reason))
        return damaged

    def close(self) -> None:
        """Close the shard files kept open and drop the loaded models (the pack still reads on demand after)."""
        with self._lock:
            files = list(self._files.values())
            self._files.clear()
            self._models.clear()
            self._shards.clear()
        for file in files:
            file.close()
        if self.fallback is not None:
            self.fallback.close()

    def _routes(self) -> _Router:
        if self._router is None:
            ok = routes(self.manifest, self.info.segment_by)
            ok = ok.drop_duplicates(self.info.segment_by) if self.info.segment_by else ok.head(1)
            self._router = _Router.of(ok, self.info.segment_by)
        return self._router

    def _find(self, frame: pd.DataFrame, router: _Router) -> np.ndarray:
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
            columns[col] = _key_index(values, col in router.as_object)
        keys = list(columns.values())
        target: pd.Index = keys[0] if len(keys) == 1 else pd.MultiIndex.from_arrays(keys)
        return np.asarray(router.index.get_indexer(target), dtype=np.int64)

    def _model(
        self, shard: str, segment: int, expected: str | None
    ) -> tuple[tuple[str, Predictor | Forecaster], bool]:
        """A segment's loaded model and whether it was cached; its bytes are checked before they are parsed.

        Raises:
            DamagedModel: the bytes fail their checksum, or the shard does not read (remembered: not read again).
        """
        with self._lock:
            if segment in self._models:
                self._models.move_to_end(segment)
                return self._models[segment], True
            if segment in self._damaged:
                raise self._damaged[segment]
        try:
            found = self._blob(shard, segment, lenient=expected is not None)
        except DamagedModel as exc:
            with self._lock:
                self._damaged[segment] = exc
            raise
        reason = model_problem(found, expected, self.trouble(shard))
        if reason or found is None:
            damage = self.damage(shard, segment, reason or "missing")
            with self._lock:
                self._damaged[segment] = damage
            raise damage
        fmt, blob = found
        loaded = (fmt, load_forecaster(blob) if fmt == FORMAT_FORECAST else load_model(fmt, blob, self.info.task))
        if isinstance(loaded[1], Forecaster):
            try:
                self._attach_shared(loaded[1])
            except DamagedModel as exc:
                with self._lock:
                    self._damaged[segment] = exc
                raise
        with self._lock:
            self._models[segment] = loaded
            while len(self._models) > self._model_cache_size:
                self._models.popitem(last=False)
        return loaded, False

    def _attach_shared(self, forecaster: Forecaster, measured: bool = False) -> None:
        """Give each part of a forecaster that references a pooled model (`shared`: itself, an ensemble's member; and
        the same in the forecaster its holdout measured, from the pooled model's measured one) its inner models.

        Raises:
            DamagedModel: a shared model is missing, or its bytes do not match its name.
        """
        for part in (forecaster, *forecaster.members):
            if part.shared is None:
                continue
            pooled = self._pooled_model(str(part.shared), part.candidate)
            if measured and pooled.measured is not None:
                pooled = pooled.measured
            part.models, part.formats, part.frames = pooled.models, pooled.formats, pooled.frames
        if forecaster.measured is not None:
            self._attach_shared(forecaster.measured, measured=True)

    def _pooled_model(self, digest: str, candidate: str) -> Forecaster:
        """A pooled model of this pack, read once and checked against its name (the checksum of its bytes).

        Raises:
            DamagedModel: it is missing, or its bytes do not match its name.
        """
        with self._lock:
            pooled = self._pooled.get(digest)
        if pooled is None:
            blob = self.shared_bytes(digest, candidate)
            try:
                pooled = load_forecaster(blob)
            except ValueError as exc:
                raise self._pooled_damage(digest, candidate, exc) from exc
            with self._lock:
                self._pooled[digest] = pooled
        return pooled

    def shared_bytes(self, digest: str, candidate: str = "") -> bytes:
        """A pooled model's bytes (`shared/<checksum>.model`), checked against the checksum that names it.

        Raises:
            DamagedModel: it is missing, does not read, or its bytes do not match its name.
        """
        try:
            return read_shared_model(self.layout, digest)
        except (OSError, ValueError) as exc:
            raise self._pooled_damage(digest, candidate, exc) from exc

    def _pooled_damage(self, digest: str, candidate: str, exc: Exception) -> DamagedModel:
        of = f" of candidate {candidate}" if candidate else ""
        return DamagedModel(f"{self.root}: the pooled model {digest}{of} is damaged: {_first_line(exc)}")

    def _blob(self, shard: str, segment: int, lenient: bool = False) -> tuple[str, bytes] | None:
        """A model's (format, bytes) as its shard holds them; None when the shard lacks it. With `lenient` (its
        checksum is known, and checked by the caller), a row group whose page fails its CRC is read again without
        the check: one damaged model does not cost its neighbours."""
        if self._whole_shards:
            return self.shard(shard).get(segment)
        _check_name(self.root, shard)
        with self._read_lock:  # one reader at a time per pack: a Parquet file handle is not shared safely
            with self._lock:
                file = self._files.pop(shard, None)
            if file is None:
                try:
                    file = _ShardFile(self.layout.shard(shard), self.root, shard)
                except (OSError, ValueError) as exc:
                    raise self.damage(shard, segment, _first_line(exc)) from exc
            with self._lock:
                self._files[shard] = file
                while len(self._files) > self._cache_size:
                    self._files.popitem(last=False)[1].close()
            try:
                return file.model(segment, lenient)
            except (OSError, ValueError) as exc:
                raise self.damage(shard, segment, _first_line(exc)) from exc

    def shard(self, name: str) -> dict[int, tuple[str, bytes]]:
        """A shard's models by segment index: (format, bytes); the last few shards read are kept.

        Raises:
            DamagedModel: the file is missing, fails its checksum or does not read.
        """
        with self._lock:
            if name in self._shards:
                self._shards.move_to_end(name)
                return self._shards[name]
        router = self._routes()
        at = np.flatnonzero(router.shards == name)
        models = self._read_whole(name, router.shard_sums[at[0]] if len(at) else None)
        with self._lock:
            self._shards[name] = models
            while len(self._shards) > self._cache_size:
                self._shards.popitem(last=False)
        return models

    def _read_whole(self, name: str, expected: str | None, strict: bool = False) -> dict[int, tuple[str, bytes]]:
        """A shard file's models; a file that fails once is not read again.

        A file whose bytes fail their checksum is still read (each page has its own CRC, each model its own
        checksum, checked before it is loaded), so one flipped bit costs the models it touched, not the shard's;
        with `strict` it is an error (what `verify` asks).
        """
        _check_name(self.root, name)
        if name in self._bad_shards:
            raise self.damage(name, None, self._bad_shards[name])
        changed = False
        try:
            data = read_bytes(self.layout.shard(name))
            changed = expected is not None and checksum(data) != expected
        except OSError as exc:
            self._bad_shards[name] = _first_line(exc)
            raise self.damage(name, None, self._bad_shards[name]) from exc
        if changed and strict:
            raise self.damage(name, None, "the file fails its checksum (its bytes changed after it was written)")
        try:
            models, trouble, unverified = models_of(data, lenient=not strict)
        except (OSError, ValueError) as exc:
            reason = _first_line(exc)
            if changed and not strict:
                reason = f"the file fails its checksum and does not read ({reason})"
            self._bad_shards[name] = reason
            raise self.damage(name, None, reason) from exc
        if trouble:
            if strict:
                raise self.damage(name, None, trouble)
            self._troubles[name] = trouble  # the models it held are missing: each is named with this, when asked
            # a model read past a failed CRC is kept only if its own checksum is known (it is checked before use)
            router = self._routes()
            models = {i: m for i, m in models.items()
                      if i not in unverified or (i in router.position and router.checksums[router.position[i]])}
        return models

    def trouble(self, shard: str) -> str | None:
        """Why part of a shard did not read, once it was read (None: all of it did)."""
        return self._troubles.get(shard)

    def damage(self, shard: str, segment: int | None, reason: str) -> DamagedModel:
        """The error naming a damaged model: the pack, its shard and, when one is asked, the segment's keys."""
        if segment is None:
            return DamagedModel(f"{self.root}: shard {shard} is damaged: {reason}")
        return DamagedModel(
            f"{self.root}: the model of segment {self._describe(segment)} in shard {shard} is damaged: {reason}"
        )

    def _describe(self, segment: int) -> str:
        """`store='s1', region='n' (segment_index 4)`: a segment's keys for a message, each cut short."""
        row = self.manifest.loc[self.manifest[SEGMENT_INDEX] == segment, list(self.info.segment_by)]
        keys = ", ".join(f"{col}={_short(row[col].iloc[0])}" for col in row.columns) if len(row) else ""
        return f"{keys} (segment_index {segment})" if keys else f"segment_index {segment}"


def read_shared_model(layout: PackLayout, digest: str) -> bytes:
    """A pooled model's bytes (`shared/<checksum>.model`), checked against the checksum that names it.

    Raises:
        OSError: the file is missing or does not read.
        ValueError: its bytes do not match its name.
    """
    blob = read_bytes(layout.shared_model(digest))
    if checksum(blob) != digest:
        raise ValueError("its bytes do not match its checksum")
    return blob


def model_problem(found: tuple[str, bytes] | None, expected: str | None, trouble: str | None = None) -> str | None:
    """Why a model's bytes must not be loaded (None: fine): missing from its shard (`trouble`: the shard's part
    that did not read), or failing its checksum."""
    if found is None:
        return trouble or "its shard does not hold it"
    if expected is not None and checksum(found[1]) != expected:
        return "its bytes fail their checksum (they changed after it was trained)"
    return None


def _texts(column: pd.Series) -> list[str | None]:
    return [None if _is_missing(v) else str(v) for v in column.tolist()]


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class _Router:
    """The served segments' keys as an index, with each one's segment index and shard."""

    index: pd.Index
    segments: np.ndarray  # int64, by router position
    shards: np.ndarray  # shard names (object), by router position
    shard_codes: np.ndarray  # int, a number per shard name (sorting)
    checksums: list[str | None]  # each model's checksum (None: a pack written before they were kept)
    shard_sums: list[str | None]  # its shard file's checksum (None likewise)
    dtypes: dict[str, Any]  # the manifest's key types, which input keys are cast to
    as_object: frozenset[str]  # text keys, matched as Python strings (pandas' Arrow strings re-hash per lookup)

    @cached_property
    def position(self) -> dict[int, int]:
        """Each served segment index's router position."""
        return dict(zip(self.segments.tolist(), range(len(self.segments)), strict=True))

    @classmethod
    def of(cls, ok: pd.DataFrame, segment_by: Sequence[str]) -> _Router:
        text = frozenset(c for c in segment_by if pd.api.types.is_string_dtype(ok[c]) or ok[c].dtype == object)
        keys = [_key_index(ok[c], c in text) for c in segment_by]
        if len(keys) == 1:
            index: pd.Index = keys[0]
        elif keys:
            index = pd.MultiIndex.from_arrays(keys)
        else:
            index = pd.RangeIndex(len(ok))
        shards = ok[SHARD].to_numpy(dtype=object)
        codes = pd.factorize(shards)[0] if len(shards) else np.zeros(0, dtype=np.int64)
        return cls(index, ok[SEGMENT_INDEX].to_numpy(dtype=np.int64), shards, codes, _texts(ok[CHECKSUM]),
                   _texts(ok[SHARD_CHECKSUM]), {col: ok[col].dtype for col in segment_by}, text)


class _ShardFile:
    """One shard file kept open to read single models: only the row group holding a segment is read, and
    the last one read is kept (segments asked together are often neighbours)."""

    def __init__(self, path: Path | str, root: Path | str, name: str) -> None:
        self.name, self.root, self.path = name, root, path
        self._last: dict[int, tuple[str, bytes]] = {}  # the last row group read (about ROW_GROUP_BYTES)
        self._unchecked: pq.ParquetFile | None = None  # opened when a page fails its CRC
        try:
            self.file = pq.ParquetFile(path, page_checksum_verification=True)
            meta = self.file.metadata
            column = meta.schema.to_arrow_schema().get_field_index(SEGMENT_INDEX)
            self.ranges: list[tuple[int, int] | None] = []
            for g in range(meta.num_row_groups):
                stats = meta.row_group(g).column(column).statistics
                has = stats is not None and stats.has_min_max
                self.ranges.append((int(stats.min), int(stats.max)) if has else None)
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{root}: cannot read shard {name}: {_first_line(exc)}") from exc

    def model(self, segment: int, lenient: bool = False) -> tuple[str, bytes] | None:
        """The segment's (format, bytes), None when the file lacks it. With `lenient`, a row group whose page fails
        its CRC is read again unchecked (the caller checks the model's own checksum).

        Raises:
            OSError, ValueError: the row group does not read (a page failing its CRC among them, unless lenient).
        """
        if segment in self._last:  # a neighbour of the last model read: its row group is at hand
            return self._last[segment]
        for g, span in enumerate(self.ranges):
            if span is not None and not span[0] <= segment <= span[1]:
                continue
            try:
                models = group_models(self.file, g)
            except (OSError, ValueError):
                if not lenient:
                    raise
                self._unchecked = self._unchecked or pq.ParquetFile(self.path)
                models = group_models(self._unchecked, g)
                if segment in models:
                    return models[segment]  # not kept for neighbours: each is read (and checked) on its own
                continue
            if segment in models:
                self._last = models
                return models[segment]
        return None

    def close(self) -> None:
        self.file.close()
        if self._unchecked is not None:
            self._unchecked.close()


def _check_name(root: Path | str, name: str) -> None:
    if Path(name).name != name:  # shard names come from our manifest; refuse anything path-like
        raise RegistryError(f"{root}: bad shard name {name!r} in manifest")


def _key_index(values: pd.Series, text: bool) -> pd.Index:
    """Segment keys as an index to match on: text as Python strings (object), else as they are typed."""
    if text:
        return pd.Index(values.to_numpy(dtype=object), dtype=object)
    return pd.Index(values)


def _absent(source: np.ndarray) -> np.ndarray:
    """Where a model-source array says no model served (None)."""
    return np.fromiter((s is None for s in source), dtype=bool, count=len(source))


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _first_line(exc: BaseException) -> str:
    """An error's first line, without the file path Arrow repeats (the caller names the file)."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return re.sub(r"^Could not open Parquet input source '[^']*': ", "", line)


def publish_pack(root: Path, dest: str) -> str:
    """Copy a local pack to `dest` (a shared folder or fsspec URL) for a cluster's executors; once per pack.

    `pack.json` goes last, so a pack found there is whole; a pack already there is not copied again.
    """
    source, target = PackLayout(root), PackLayout(dest)
    if exists(target.info):
        return dest
    if Path(PackLayout(source.fallback).info).exists():
        publish_pack(Path(source.fallback), str(target.fallback))
    for shard in sorted(Path(source.shards).glob("shard-*.parquet")):
        put_file(shard, target.shard(shard.name))
    put_file(Path(source.manifest), target.manifest)
    if Path(source.profiles).exists():
        put_file(Path(source.profiles), target.profiles)
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
