"""A model pack: many segments' models as a few shards plus a manifest, and the router over them.

Its files are laid out as `manifest.PackLayout` says; its manifest's columns are `manifest`'s.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

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
    calls (batches on a Spark executor) load its model once.
    """

    def __init__(self, root: Path | str, cache_shards: int = 4, cache_models: int = 64) -> None:
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
        self.fallback: Pack | None = None
        fallback = PackLayout(self.layout.fallback)
        if exists(fallback.info):
            self.fallback = Pack(fallback.root, cache_shards, cache_models)

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
        needed = self.info.inputs
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise DataError(f"input lacks column(s) {', '.join(missing)} that model {self.info.model!r} needs")
        routed = self._route(frame)
        values = np.full(len(frame), np.nan)
        index = routed[SEGMENT_INDEX].to_numpy()
        has_model = ~np.isnan(index)
        if has_model.any():
            features = frame[self.info.features]
            # Numbers only: one float matrix for every LightGBM model; text (categories): the frame itself.
            matrix = None if has_text(features) else features.to_numpy(dtype=np.float64, na_value=np.nan)
            rows = np.flatnonzero(has_model)
            shards = routed[SHARD].to_numpy()[rows]
            # Score shard by shard, segment by segment: each shard is read once, each model loaded once.
            order = np.lexsort((index[rows], shards))
            rows, shards, segs = rows[order], shards[order], index[rows][order].astype(np.int64)
            cuts = np.flatnonzero((segs[1:] != segs[:-1]) | (shards[1:] != shards[:-1])) + 1
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(rows)], strict=True):
                fmt, predictor = self._model(str(shards[lo]), int(segs[lo]))
                at = rows[lo:hi]
                if fmt == FORMAT_BASELINE:
                    X = frame.iloc[at]  # noqa: N806 - a seasonal baseline reads the time column
                else:
                    X = matrix[at] if fmt == FORMAT_LIGHTGBM and matrix is not None else features.iloc[at]  # noqa: N806
                values[at] = predictor.predict(X)
        prediction = pd.array(values, dtype="Float64")
        prediction[~has_model] = pd.NA
        source = pd.array(np.full(len(frame), SEGMENT, dtype=object), dtype="string")
        source[~has_model] = pd.NA
        rest = np.flatnonzero(~has_model)
        if rest.size and self.fallback is not None:
            backup = self.fallback.predict(frame.iloc[rest])
            found = backup["prediction"].notna().to_numpy()
            prediction[rest[found]] = backup["prediction"].array[found]
            source[rest[found]] = FALLBACK_SOURCE
        return pd.DataFrame({"prediction": prediction, MODEL_SOURCE: source}, index=frame.index)

    def _route(self, frame: pd.DataFrame) -> pd.DataFrame:
        ok = routes(self.manifest, self.info.segment_by)
        if not self.info.segment_by:  # one model for every row (a global fallback)
            first = ok.head(1)
            index = float(first[SEGMENT_INDEX].iloc[0]) if len(first) else np.nan
            shard = first[SHARD].iloc[0] if len(first) else None
            return pd.DataFrame({SEGMENT_INDEX: np.full(len(frame), index), SHARD: [shard] * len(frame)})
        keys = frame[self.info.segment_by].reset_index(drop=True)
        keys["_position"] = np.arange(len(frame))
        for col in self.info.segment_by:  # a key typed differently in the input still finds its model
            if keys[col].dtype != ok[col].dtype:
                try:
                    keys[col] = keys[col].astype(ok[col].dtype)
                except (TypeError, ValueError) as exc:
                    raise DataError(
                        f"segment column {col!r} is {keys[col].dtype} in the input but "
                        f"{ok[col].dtype} in model {self.info.model!r}"
                    ) from exc
        routed = keys.merge(ok, on=self.info.segment_by, how="left", sort=False)
        routed[SEGMENT_INDEX] = routed[SEGMENT_INDEX].astype(float)
        return routed

    def _model(self, shard: str, segment: int) -> tuple[str, Predictor]:
        if segment in self._models:
            self._models.move_to_end(segment)
            return self._models[segment]
        fmt, blob = self.shard(shard)[segment]
        loaded = (fmt, load_model(fmt, blob, self.info.task))
        self._models[segment] = loaded
        while len(self._models) > self._model_cache_size:
            self._models.popitem(last=False)
        return loaded

    def shard(self, name: str) -> dict[int, tuple[str, bytes]]:
        """A shard's models by segment index: (format, bytes); the last few shards read are kept."""
        if name in self._shards:
            self._shards.move_to_end(name)
            return self._shards[name]
        if Path(name).name != name:  # shard names come from our manifest; refuse anything path-like
            raise RegistryError(f"{self.root}: bad shard name {name!r} in manifest")
        try:
            models = read_shard(self.layout.shard(name))
        except OSError as exc:
            raise RegistryError(f"{self.root}: cannot read shard {name}: {exc}") from exc
        self._shards[name] = models
        while len(self._shards) > self._cache_size:
            self._shards.popitem(last=False)
        return models


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
