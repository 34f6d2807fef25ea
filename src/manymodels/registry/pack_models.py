"""A model pack's models: opened from its files, read from its shards, checked and cached."""

from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Self, cast

import numpy as np
import pandas as pd

from manymodels.errors import RegistryError, Untrusted
from manymodels.estimators import Predictor, load_model
from manymodels.registry.manifest import (
    SEGMENT_INDEX,
    SHARD,
    PackLayout,
    routes,
)
from manymodels.registry.pack_info import DamagedModel, PackInfo
from manymodels.registry.pooled_models import PooledModels
from manymodels.registry.references import (
    REFERENCES,
    locate,
    renumber,
    shard_location,
    split_reference,
    stored_indices,
)
from manymodels.registry.routing import Router, short
from manymodels.registry.shard_files import (
    RowGroups,
    ShardFile,
    check_name,
    first_line,
    intact,
    model_problem,
)
from manymodels.registry.signing import SIGNATURE, Signed, current_key
from manymodels.segment.forecaster import (
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
    is_url,
    join_location,
    list_files,
    models_of,
    read_bytes,
)
from manymodels.segment.spec import ForecastPlan


class PackModels:
    """A pack's models as its shards hold them: read, checked and cached; `pack.Pack` routes rows to them.

    Shards are read when first needed, at most `cache_shards` kept at once. The last `cache_models` models loaded
    are kept too, so rows of one segment that arrive in several calls (batches on a Spark executor, requests to a
    server) load its model once.

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
        referenced: Mapping[str, Path | str] | None = None,
    ) -> None:
        self.root: Path | str = str(root) if is_url(root) else Path(root)
        self.layout = PackLayout(self.root)
        try:
            described, listed = read_bytes(self.layout.info), read_bytes(self.layout.manifest)
        except OSError as exc:
            raise RegistryError(f"{self.root}: not a readable model pack: {first_line(exc)}") from exc
        self._signed = self._signature()
        if self._signed is not None:  # the bytes checked are the bytes parsed: nothing read unsigned
            self._signed.check(PackLayout.INFO, described)
            self._signed.check(PackLayout.MANIFEST, listed)
        try:
            self.info = PackInfo(**json.loads(described.decode("utf-8")))
            self.manifest = pd.read_parquet(io.BytesIO(listed), page_checksum_verification=True)
        except (OSError, ValueError, TypeError, KeyError) as exc:  # KeyError: pandas' own metadata damaged
            raise RegistryError(f"{self.root}: not a readable model pack: {first_line(exc)}") from exc
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
        self._files: OrderedDict[str, ShardFile] = OrderedDict()
        self._row_groups = RowGroups()  # shards' row groups read last, models still compressed
        self._on_cache = on_cache
        self._lock = threading.RLock()
        self._read_lock = threading.Lock()
        self._router: Router | None = None
        self._damaged: dict[int, DamagedModel] = {}  # segments found damaged: never read again
        self._bad_shards: dict[str, str] = {}  # shard files that do not read, with why
        self._troubles: dict[str, str] = {}  # shard files some of whose row groups do not read, with why
        self.pooled = PooledModels(self.root, self.layout)  # forecasts' pooled models segments share
        # runs whose shards this pack refers to (a changed-only run's carried models): where their packs lie
        self._referenced = locate(self.root, self.info.run_id, self.info.extra.get(REFERENCES) or {}, referenced)
        self._stored = stored_indices(self.manifest)  # a referenced model's index in its file, by this pack's
        self.fallback: Self | None = None
        fallback = PackLayout(self.layout.fallback)
        if exists(fallback.info):
            self.fallback = cast(Self, type(self)(fallback.root, cache_shards, cache_models, whole_shards, on_cache))

    def _signature(self) -> Signed | None:
        """The pack's signature, checked with this process's key (None: no key, nothing to check).

        Raises:
            SignatureError: with a key, a pack unsigned or whose signature does not verify.
        """
        key = current_key()
        if key is None:
            return None
        where = join_location(self.root, SIGNATURE)
        try:
            record = read_bytes(where) if exists(where) else None
        except OSError:
            record = None
        return Signed(str(self.root), record, key)

    def signed_bytes(self, location: Path | str, name: str) -> bytes:
        """A table of the pack beside its manifest (profiles, states), checked against the signature when it has one.

        Raises:
            OSError: the file does not read.
            SignatureError: the pack is signed and the file is not, or changed.
        """
        data = read_bytes(location)
        if self._signed is not None:
            self._signed.check(name, data)
        return data

    @property
    def segment_by(self) -> list[str]:
        """The columns that route a row to its model."""
        return list(self.info.segment_by)

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

    def window_errors(self, segments: np.ndarray, own: bool = False) -> list[np.ndarray | None]:
        """Each forecast segment's validation-window errors (windows x steps), read from its model's header (no
        model loaded): its intervals' (the selection's), or with `own` its kept model's own; None where it has
        none: no model of its own (-1), none kept, or damaged bytes."""
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
            header = forecaster_header(found[1])[0]
            mine = header_residuals(header, "model_residuals") if own else None
            out.append(header_residuals(header) if mine is None else mine)
        return out

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
            self.pooled.model(digest, referenced.get(digest, ""))
        if self.fallback is not None:
            self.fallback.verify()

    def check_models(self, indices: Sequence[int]) -> dict[int, str]:
        """Which of these segments' models are damaged, each with why (their shards read whole, one at a time).

        What a changed-only run asks before it carries models into a new run. A shard file whose bytes match its
        checksum holds its models as they were written: only a file that does not is read model by model.
        """
        router = self._routes()
        position = router.position
        wanted = [(str(router.shards[position[int(i)]]), int(i)) for i in indices if int(i) in position]
        damaged: dict[int, str] = {}
        for name in sorted({shard for shard, _ in wanted}):
            segments = [i for shard, i in wanted if shard == name]
            expected = router.shard_sums[position[segments[0]]]
            if name not in self._bad_shards and intact(self._location(name), expected):
                continue  # the file's bytes are those written: every model in it is too (no model decompressed)
            try:
                models = self._read_whole(name, expected)
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

    def _routes(self) -> Router:
        if self._router is None:
            ok = routes(self.manifest, self.info.segment_by)
            ok = ok.drop_duplicates(self.info.segment_by) if self.info.segment_by else ok.head(1)
            self._router = Router.of(ok, self.info.segment_by)
        return self._router

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
        try:
            loaded = (fmt, load_forecaster(blob) if fmt == FORMAT_FORECAST else load_model(fmt, blob, self.info.task))
        except Untrusted as exc:
            raise Untrusted(f"{self.root}: the model of segment {self._describe(segment)} in shard {shard} is not "
                            f"loaded: {exc}") from None
        if isinstance(loaded[1], Forecaster):
            try:
                self.pooled.attach(loaded[1])
            except DamagedModel as exc:
                with self._lock:
                    self._damaged[segment] = exc
                raise
        with self._lock:
            self._models[segment] = loaded
            while len(self._models) > self._model_cache_size:
                self._models.popitem(last=False)
        return loaded, False

    def _blob(self, shard: str, segment: int, lenient: bool = False) -> tuple[str, bytes] | None:
        """A model's (format, bytes) as its shard holds them; None when the shard lacks it. With `lenient` (its
        checksum is known, and checked by the caller), a row group whose page fails its CRC is read again without
        the check: one damaged model does not cost its neighbours."""
        if self._whole_shards:
            return self.shard(shard).get(segment)
        location = self._location(shard)
        with self._read_lock:  # one reader at a time per pack: a Parquet file handle is not shared safely
            with self._lock:
                file = self._files.pop(shard, None)
            if file is None:
                try:
                    file = ShardFile(location, self.root, shard, self._row_groups)
                except (OSError, ValueError) as exc:
                    raise self.damage(shard, segment, first_line(exc)) from exc
            with self._lock:
                self._files[shard] = file
                while len(self._files) > self._cache_size:
                    self._files.popitem(last=False)[1].close()
            try:
                return file.model(self._stored.get(segment, segment), lenient)
            except (OSError, ValueError) as exc:
                raise self.damage(shard, segment, first_line(exc)) from exc

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
        location = self._location(name)
        if name in self._bad_shards:
            raise self.damage(name, None, self._bad_shards[name])
        changed = False
        try:
            data = read_bytes(location)
            changed = expected is not None and checksum(data) != expected
        except OSError as exc:
            self._bad_shards[name] = first_line(exc)
            raise self.damage(name, None, self._bad_shards[name]) from exc
        if changed and strict:
            raise self.damage(name, None, "the file fails its checksum (its bytes changed after it was written)")
        try:
            models, trouble, unverified = models_of(data, lenient=not strict)
        except (OSError, ValueError) as exc:
            reason = first_line(exc)
            if changed and not strict:
                reason = f"the file fails its checksum and does not read ({reason})"
            self._bad_shards[name] = reason
            raise self.damage(name, None, reason) from exc
        if split_reference(name) is not None:  # another run's file: its models under this pack's numbers
            router = self._routes()
            models, unverified = renumber(models, unverified, router.segments[router.shards == name], self._stored)
        if trouble:
            if strict:
                raise self.damage(name, None, trouble)
            self._troubles[name] = trouble  # the models it held are missing: each is named with this, when asked
            # a model read past a failed CRC is kept only if its own checksum is known (it is checked before use)
            router = self._routes()
            models = {i: m for i, m in models.items()
                      if i not in unverified or (i in router.position and router.checksums[router.position[i]])}
        return models

    def _location(self, name: str) -> Path | str:
        """Where a shard file of this pack lies: its own folder, or the pack of the run a reference names."""
        referred = split_reference(name)
        if referred is None:
            check_name(self.root, name)
            return self.layout.shard(name)
        return shard_location(self.root, self._referenced, *referred)

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
        keys = ", ".join(f"{col}={short(row[col].iloc[0])}" for col in row.columns) if len(row) else ""
        return f"{keys} (segment_index {segment})" if keys else f"segment_index {segment}"


