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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from manymodels.data import write_parquet
from manymodels.errors import DataError, RegistryError
from manymodels.estimators import FORMAT_BASELINE, FORMAT_LIGHTGBM, Predictor, has_text, load_model
from manymodels.registry.manifest import PROFILE, SEGMENT_INDEX, SHARD, PackLayout, routes
from manymodels.segment import read_shard
from manymodels.segment.shards import exists, is_url, put_file, read_bytes

PACK_VERSION = 1
MODEL_SOURCE = "model_source"  # which model served a row: segment, fallback, or null (none)
SEGMENT, FALLBACK_SOURCE = "segment", "fallback"
TIME = "time"  # PackInfo.extra's key of the time column seasonal baselines read


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
    def inputs(self) -> list[str]:
        """The columns a row needs to be predicted: segments, features and, for seasonal baselines, the time."""
        return list(dict.fromkeys([*self.segment_by, *self.features, *([self.time] if self.time else [])]))


def write_pack_files(pack_dir: Path, info: PackInfo, manifest: pd.DataFrame) -> None:
    """Write a pack's manifest, its profiles (apart: scoring never reads them) and description beside the shards."""
    layout = PackLayout(pack_dir)
    if PROFILE in manifest.columns:
        write_parquet(manifest[[SEGMENT_INDEX, PROFILE]], Path(layout.profiles))
        manifest = manifest.drop(columns=PROFILE)
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
            self.manifest = pd.read_parquet(io.BytesIO(read_bytes(self.layout.manifest)))
        except (OSError, ValueError, TypeError) as exc:
            raise RegistryError(f"{self.root}: not a readable model pack: {exc}") from exc
        self._cache_size = max(1, cache_shards)
        self._shards: OrderedDict[str, dict[int, tuple[str, bytes]]] = OrderedDict()
        self._model_cache_size = max(1, cache_models)
        self._models: OrderedDict[int, tuple[str, Predictor]] = OrderedDict()
        self._profiles: pd.Series | None = None
        self._whole_shards = whole_shards or is_url(self.root)
        self._files: OrderedDict[str, _ShardFile] = OrderedDict()
        self._on_cache = on_cache
        self._lock = threading.RLock()
        self._read_lock = threading.Lock()
        self._router: _Router | None = None
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
                    table = pd.read_parquet(io.BytesIO(read_bytes(self.layout.profiles)))
                except (OSError, ValueError) as exc:
                    self._profiles = None
                    raise RegistryError(f"{self.root}: unreadable profiles: {exc}") from exc
                self._profiles = pd.Series(table[PROFILE].to_numpy(dtype=object),
                                           index=table[SEGMENT_INDEX].to_numpy(), name=PROFILE)
        return self._profiles

    @property
    def segment_by(self) -> list[str]:
        """The columns that route a row to its model."""
        return list(self.info.segment_by)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One prediction per input row, in input order, by the row's segment model, else the fallback.

        Returns:
            A frame with the input's index, a nullable float column `prediction` (null: no model
            at all) and `model_source`: `segment`, `fallback`, or null.

        Raises:
            DataError: the input lacks a segment or feature column.
        """
        values, source = self.predict_arrays(frame)
        prediction = pd.array(values, dtype="Float64")
        prediction[_absent(source)] = pd.NA
        return pd.DataFrame({"prediction": prediction, MODEL_SOURCE: pd.array(source, dtype="string")},
                            index=frame.index)

    def predict_arrays(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """`predict` as plain arrays (what a server answers with, without building frames): float predictions
        (NaN where no model serves) and each row's model source (object: `segment`, `fallback`, None)."""
        needed = self.info.inputs
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise DataError(f"input lacks column(s) {', '.join(missing)} that model {self.info.model!r} needs")
        router = self._routes()
        found = self._find(frame, router)
        values = np.full(len(frame), np.nan)
        has_model = found >= 0
        hits = misses = 0
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
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(rows)], strict=True):
                route = int(at_route[lo])
                (fmt, predictor), hit = self._model(str(router.shards[route]), int(router.segments[route]))
                hits, misses = hits + hit, misses + (not hit)
                at = rows[lo:hi]
                if fmt == FORMAT_BASELINE:
                    X = frame.iloc[at]  # noqa: N806 - a seasonal baseline reads the time column
                else:
                    X = matrix[at] if fmt == FORMAT_LIGHTGBM and matrix is not None else features.iloc[at]  # noqa: N806
                values[at] = predictor.predict(X)
        if self._on_cache is not None and (hits or misses):
            self._on_cache(hits, misses)
        source = np.full(len(frame), None, dtype=object)
        source[has_model] = SEGMENT
        rest = np.flatnonzero(~has_model)
        if rest.size and self.fallback is not None:
            backup, backup_source = self.fallback.predict_arrays(frame.iloc[rest])
            served = ~_absent(backup_source)
            values[rest[served]] = backup[served]
            source[rest[served]] = FALLBACK_SOURCE
        return values, source

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
        shard_of = dict(zip(router.segments.tolist(), router.shards.tolist(), strict=True))
        loaded = 0
        for segment in list(indices)[: self._model_cache_size]:
            if stop is not None and stop.is_set():
                break
            shard = shard_of.get(int(segment))
            if shard is not None:
                self._model(str(shard), int(segment))
                loaded += 1
        return loaded

    def verify(self) -> None:
        """Read every shard file whole and check it holds the models the manifest says (the fallback's too).

        Raises:
            RegistryError: a shard that is missing, does not read, or lacks a model, named with the segment.
        """
        router = self._routes()
        for name in sorted(set(router.shards.tolist())):
            wanted = router.segments[router.shards == name]
            models = self._read_whole(str(name))
            lacking = [int(i) for i in wanted if int(i) not in models]
            if lacking:
                raise RegistryError(
                    f"{self.root}: shard {name} lacks the model of {len(lacking)} segment(s) "
                    f"(segment_index {lacking[0]}{', ...' if len(lacking) > 1 else ''})"
                )
        if self.fallback is not None:
            self.fallback.verify()

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

    def _model(self, shard: str, segment: int) -> tuple[tuple[str, Predictor], bool]:
        with self._lock:
            if segment in self._models:
                self._models.move_to_end(segment)
                return self._models[segment], True
        fmt, blob = self._blob(shard, segment)
        loaded = (fmt, load_model(fmt, blob, self.info.task))
        with self._lock:
            self._models[segment] = loaded
            while len(self._models) > self._model_cache_size:
                self._models.popitem(last=False)
        return loaded, False

    def _blob(self, shard: str, segment: int) -> tuple[str, bytes]:
        if self._whole_shards:
            return self.shard(shard)[segment]
        _check_name(self.root, shard)
        with self._read_lock:  # one reader at a time per pack: a Parquet file handle is not shared safely
            with self._lock:
                file = self._files.pop(shard, None)
            if file is None:
                file = _ShardFile(self.layout.shard(shard), self.root, shard)
            with self._lock:
                self._files[shard] = file
                while len(self._files) > self._cache_size:
                    self._files.popitem(last=False)[1].close()
            return file.model(segment)

    def shard(self, name: str) -> dict[int, tuple[str, bytes]]:
        """A shard's models by segment index: (format, bytes); the last few shards read are kept."""
        with self._lock:
            if name in self._shards:
                self._shards.move_to_end(name)
                return self._shards[name]
        models = self._read_whole(name)
        with self._lock:
            self._shards[name] = models
            while len(self._shards) > self._cache_size:
                self._shards.popitem(last=False)
        return models

    def _read_whole(self, name: str) -> dict[int, tuple[str, bytes]]:
        _check_name(self.root, name)
        try:
            return read_shard(self.layout.shard(name))
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{self.root}: cannot read shard {name}: {_first_line(exc)}") from exc


@dataclass(frozen=True)
class _Router:
    """The served segments' keys as an index, with each one's segment index and shard."""

    index: pd.Index
    segments: np.ndarray  # int64, by router position
    shards: np.ndarray  # shard names (object), by router position
    shard_codes: np.ndarray  # int, a number per shard name (sorting)
    dtypes: dict[str, Any]  # the manifest's key types, which input keys are cast to
    as_object: frozenset[str]  # text keys, matched as Python strings (pandas' Arrow strings re-hash per lookup)

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
        return cls(index, ok[SEGMENT_INDEX].to_numpy(dtype=np.int64), shards, codes,
                   {col: ok[col].dtype for col in segment_by}, text)


class _ShardFile:
    """One shard file kept open to read single models: only the row group holding a segment is read, and
    the last one read is kept (segments asked together are often neighbours)."""

    def __init__(self, path: Path | str, root: Path | str, name: str) -> None:
        self.name, self.root = name, root
        self._last: dict[int, tuple[str, bytes]] = {}  # the last row group read (about ROW_GROUP_BYTES)
        try:
            self.file = pq.ParquetFile(path)
            meta = self.file.metadata
            column = meta.schema.to_arrow_schema().get_field_index(SEGMENT_INDEX)
            self.ranges: list[tuple[int, int] | None] = []
            for g in range(meta.num_row_groups):
                stats = meta.row_group(g).column(column).statistics
                has = stats is not None and stats.has_min_max
                self.ranges.append((int(stats.min), int(stats.max)) if has else None)
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{root}: cannot read shard {name}: {_first_line(exc)}") from exc

    def model(self, segment: int) -> tuple[str, bytes]:
        if segment in self._last:  # a neighbour of the last model read: its row group is at hand
            return self._last[segment]
        try:
            for g, span in enumerate(self.ranges):
                if span is not None and not span[0] <= segment <= span[1]:
                    continue
                table = self.file.read_row_group(g)
                indices = table.column(SEGMENT_INDEX).to_pylist()
                if segment in indices:
                    formats, blobs = table.column("format").to_pylist(), table.column("model").to_pylist()
                    self._last = {i: (f, b) for i, f, b in zip(indices, formats, blobs, strict=True)}
                    return self._last[segment]
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{self.root}: cannot read shard {self.name}: {_first_line(exc)}") from exc
        raise RegistryError(f"{self.root}: shard {self.name} has no model for segment_index {segment}")

    def close(self) -> None:
        self.file.close()


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
