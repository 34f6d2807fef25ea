"""One version loaded to serve: its pack (models loaded on first use, least recently used dropped), the
columns a request must carry, and where it came from.

A `Live` is never changed once built: the server answers each request with the one `Live` it
picked up when the request arrived, and a new version is a new `Live` swapped in whole, so no
request mixes two versions.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pandas as pd
import yaml

from manymodels.registry import Pack
from manymodels.registry.manifest import (
    CANDIDATE,
    MODEL_FORMAT,
    OK,
    ROWS,
    SEGMENT_INDEX,
    STATUS,
    PackLayout,
    segment_columns,
    served,
)
from manymodels.registry.pack_info import FALLBACK_SOURCE, SEGMENT
from manymodels.serve.protocol import SIGNATURE_TYPES, TEXT, Columns, RequestError, conform


@dataclass(frozen=True)
class Serving:
    """What a `Live` serves: the model family, its run, the registered version (None for a run served
    by id) and the alias it was found by (None when pinned)."""

    model: str
    run_id: str
    version: int | None
    alias: str | None
    loaded_at: float

    def describe(self) -> dict[str, Any]:
        """For /version and /health."""
        return {
            "model": self.model,
            "version": self.version,
            "run_id": self.run_id,
            "alias": self.alias,
            "loaded_at": stamp(self.loaded_at),
        }


class Live:
    """A version ready to answer: `predict` a frame, describe one segment, load models ahead of requests."""

    def __init__(self, pack: Pack, serving: Serving, columns: Columns) -> None:
        self.pack = pack
        self.serving = serving
        self.columns = columns

    @property
    def segment_by(self) -> list[str]:
        """The columns that pick a row's model."""
        return self.pack.segment_by

    def predict(self, frame: pd.DataFrame, levels: tuple[float, ...] = ()
                ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Predictions (NaN: no model), which model served each row (`segment`, `fallback`, None), and with
        `levels` (a forecast), each row's prediction intervals (`lo-80`, `hi-80`, ...).

        Raises:
            DataError: a row the pack cannot answer, or levels of a model that is no forecast.
        """
        if levels:
            return self.pack.predict_bands(frame, levels)
        values, source = self.pack.predict_arrays(frame)
        return values, source, {}

    def segment(self, path: str) -> dict[str, Any]:
        """What serves one segment, its key given as URL path parts in `segment_by` order (`/segments/3/north`).

        Raises:
            RequestError: the key has the wrong number of parts or a part of the wrong type.
        """
        parts = [unquote(p) for p in path.split("/")] if path else []
        names = self.segment_by
        if len(parts) != len(names):
            shape = "/".join(names) or "none: one model serves every row"
            raise RequestError(400, f"a segment key is {len(names)} value(s) ({shape}); got {len(parts)}")
        # A path holds text: typed as the model's columns, "3" finds segment 3, "007" stays "007" for a text key.
        types = {name: self.columns.types.get(name) or _kind_of(self.pack.manifest[name]) for name in names}
        frame = conform(pd.DataFrame([parts], columns=names, dtype=object),
                        Columns(tuple(names), {n: t for n, t in types.items() if t}))
        key = {name: _plain(frame[name].iloc[0]) for name in names}
        row = self.pack.manifest_row(frame)
        fallback = self.pack.fallback is not None
        answer: dict[str, Any] = {"segment": key, "version": self.serving.version, "run_id": self.serving.run_id}
        if row is None or row.get(STATUS) != OK:
            answer.update({
                "model": False,
                "served_by": FALLBACK_SOURCE if fallback else None,
                "status": None if row is None else row.get(STATUS),
                "error": None if row is None else row.get("error"),
            })
            return answer
        metric = self.pack.info.metric
        answer.update({
            "model": True,
            "served_by": SEGMENT,
            "status": row.get(STATUS),
            "metric": {metric: _plain(row.get(metric))} if metric in row else {},
            "rows": _plain(row.get(ROWS)),
            "format": row.get(MODEL_FORMAT),
            "candidate": row.get(CANDIDATE),
            "loaded": int(row[SEGMENT_INDEX]) in self.pack.cached_segments(),
            "fallback_available": fallback,
        })
        return answer

    def warm(self, indices: list[int], stop: Any = None) -> int:
        """Load these segments' models (in order, as many as the cache holds); returns how many loaded.

        `stop`: an event; loading ends early once it is set (a newer version replaced this one).
        """
        return self.pack.warm(indices, stop)

    def largest(self, count: int) -> list[int]:
        """The `count` served segments with the most training rows: what to load before any request asks."""
        ok = served(self.pack.manifest)
        if count <= 0 or ok.empty:
            return []
        order = ok.sort_values(ROWS, ascending=False, kind="stable") if ROWS in ok else ok
        return [int(i) for i in order[SEGMENT_INDEX].head(count)]

    def same_segments(self, other: Live, indices: list[int]) -> list[int]:
        """This version's segment indices of `other`'s segments `indices` (segments it lacks left out)."""
        if not indices or other.segment_by != self.segment_by:
            return []
        theirs = other.pack.manifest.set_index(SEGMENT_INDEX).reindex(indices)[self.segment_by].dropna()
        if theirs.empty:
            return []
        mine = self.pack.locate(theirs.reset_index(drop=True))
        return [int(i) for i in mine if i >= 0]


def stamp(at: float | None) -> str | None:
    """A time as ISO 8601 UTC, for /version and /health."""
    return None if at is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def columns_of(pack: Pack, model_file: Path | None) -> Columns:
    """The columns a request needs (the pack's required inputs; the time column of seasonal baselines only for their
    segments' rows, typed when sent), typed by the MLflow model's signature when it has one."""
    required = tuple(pack.info.required)
    optional = tuple(c for c in pack.info.inputs if c not in required)
    types: dict[str, str] = {}
    if model_file is not None and model_file.is_file():
        try:
            meta = yaml.safe_load(model_file.read_text(encoding="utf-8")) or {}
            inputs = json.loads((meta.get("signature") or {}).get("inputs") or "[]")
            types = {str(c["name"]): SIGNATURE_TYPES[c["type"]] for c in inputs
                     if isinstance(c, dict) and c.get("type") in SIGNATURE_TYPES and "name" in c}
        except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError):
            types = {}  # an unreadable signature: columns are typed as sent
    for name in segment_columns(pack.manifest):  # keys: as the manifest stores them
        if name in required and name not in types:
            kind = _kind_of(pack.manifest[name])
            if kind:
                types[name] = kind
    typed = {name: kind for name, kind in types.items() if name in required or name in optional}
    return Columns(required, typed, optional)


def model_file(pack_root: Path) -> Path:
    """The MLflow model's MLmodel file of a pack inside a run (`model/pack` -> `model/MLmodel`)."""
    return Path(pack_root).parent / "MLmodel" if Path(pack_root).name == PackLayout.PACK else Path(pack_root) / "-"


def _kind_of(values: pd.Series) -> str | None:
    if pd.api.types.is_bool_dtype(values):
        return "boolean"
    if pd.api.types.is_integer_dtype(values):
        return "integer"
    if pd.api.types.is_float_dtype(values):
        return "number"
    if pd.api.types.is_string_dtype(values) or values.dtype == object:
        return TEXT
    return None


def _plain(value: Any) -> Any:
    """A JSON-ready scalar (numpy numbers as Python numbers, missing as None)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value
