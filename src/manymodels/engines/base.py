"""What every engine shares: the data grouped by segment once, and the engine interface."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Union

import numpy as np
import pandas as pd

from manymodels.data import read_frame
from manymodels.errors import DataError
from manymodels.registry.manifest import segment_labels  # noqa: F401 - engines.segment_labels: how users name one
from manymodels.segment import SegmentResult, SegmentSpec


@dataclass
class PreparedData:
    """A dataset grouped by segment: rows sorted so each segment is one contiguous slice.

    Attributes:
        frame: the rows, segment after segment, each segment's rows in their original order.
        keys: one row per segment: its segment_by values, in segment-index order.
        starts: where each segment's rows begin in `frame` (length: segments + 1).
    """

    frame: pd.DataFrame
    keys: pd.DataFrame
    starts: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        """Rows per segment."""
        return np.diff(self.starts)

    def __len__(self) -> int:
        return len(self.keys)


def prepare(frame: pd.DataFrame, segment_by: list[str]) -> PreparedData:
    """Group a dataset by its segment columns in one pass (a stable sort, no per-segment copies).

    No segment columns: every row is one group (a global model).
    """
    if not segment_by:
        keys = pd.DataFrame(index=pd.RangeIndex(1 if len(frame) else 0))
        return PreparedData(frame.reset_index(drop=True), keys, np.array([0, len(frame)][: len(keys) + 1], np.int64))
    codes = frame.groupby(segment_by, sort=True, dropna=False, observed=True).ngroup().to_numpy()
    counts = np.bincount(codes, minlength=int(codes.max()) + 1 if len(codes) else 0)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if len(codes) < 2 or bool((codes[1:] >= codes[:-1]).all()):  # already grouped, as files often are: no copy
        ordered = frame.reset_index(drop=True)
    else:
        ordered = frame.take(np.argsort(codes, kind="stable")).reset_index(drop=True)
    keys = ordered[segment_by].iloc[starts[:-1]].reset_index(drop=True)
    return PreparedData(ordered, keys, starts)


Progress = Callable[[int], None]


@dataclass(frozen=True)
class Dataset:
    """A table on disk for an engine to read itself: its path (or URL), format (parquet, csv, delta) and the values
    it holds for a missing one (`na_values`)."""

    path: Path | str
    fmt: str
    na_values: tuple[str, ...] = ()


# What an engine scores or evaluates: a table on disk, a pandas frame, or a frame of the engine's own
# (a Spark DataFrame on the Spark engine), passed through untouched by the layers above.
Source = Union[Dataset, pd.DataFrame, Any]  # noqa: UP007 - a runtime alias: `|` on Any fails before 3.12


@dataclass
class Scored:
    """What scoring produced: the input's columns plus `prediction` and `model_source`, and what had no model.

    Attributes:
        frame: a pandas frame from the local engine; the written frame on Spark (a Spark DataFrame).
        rows: rows scored.
        rows_without_model: rows no model (segment or fallback) predicted: null prediction.
        segments_without_model: distinct segments among those rows.
        rows_fallback: rows the fallback model predicted (their segment has no model).
        rows_damaged: rows the fallback predicted because their segment's model is damaged.
    """

    frame: Any
    rows: int
    rows_without_model: int
    segments_without_model: int
    rows_fallback: int
    rows_damaged: int = 0


@dataclass
class Forecasted:
    """What forecasting produced: one row per segment and step, and how many segments asked had no model.

    Attributes:
        frame: the segment columns, the time, `step`, `prediction`, `model_source`.
        segments_without_model: segments of the pack (failed ones) or of the history that got no forecast.
    """

    frame: pd.DataFrame
    segments_without_model: int


class Fleet(Protocol):
    """A dataset's segments as an engine holds them: the keys (in segment-index order) and their sizes."""

    @property
    def keys(self) -> pd.DataFrame:
        """One row per segment: its segment_by values."""
        ...

    @property
    def sizes(self) -> np.ndarray:
        """Rows per segment."""
        ...

    def __len__(self) -> int: ...


class Engine(Protocol):
    """Reads a dataset as a fleet of segments and maps the per-chunk fit over it."""

    kind: str
    workers: int

    @property
    def is_local(self) -> bool:
        """Whether the workers run on this machine, so they can write to its folders."""
        ...

    def start(self, rows: int | None = None, overlap: bool = False) -> None:
        """Get ready (start workers, sessions) while the driver does its own set-up; with `overlap`, a small job's
        work may go to a worker that imports the model libraries meanwhile (the local engine)."""
        ...

    def ready(self) -> None:
        """Wait until what `start` began can work (before a run is created: a failure leaves no run)."""
        ...

    def close(self) -> None:
        """Release what `start` or `fit` acquired."""
        ...

    def load(self, dataset: Dataset, spec: SegmentSpec, segments: Sequence[str] | None = None) -> Fleet:
        """The dataset's segments (only those named, when `segments` is given)."""
        ...

    def fit(
        self, fleet: Any, spec: SegmentSpec, shard_dir: str | None, on_progress: Progress | None = None
    ) -> list[SegmentResult]:
        """Fit every segment; models go to shards in `shard_dir` (a path or an fsspec URL), or with None are not
        kept (a tuning probe wants the metrics only); results in segment order."""
        ...

    def fingerprints(self, fleet: Any, spec: SegmentSpec) -> list[str]:
        """Each segment's fingerprint (its rows and the spec), as `fit` would record it, without fitting."""
        ...

    def select(self, fleet: Any, keep: np.ndarray, dataset: Dataset, spec: SegmentSpec) -> Fleet:
        """The fleet narrowed to the segments where `keep` is true (segment indexes renumbered)."""
        ...

    def score(
        self, source: Source, pack: str, output: Path | None = None, partition_by_segment: bool = False
    ) -> Scored:
        """Predict every row with its segment's model in the pack at `pack` (else the fallback, else null).

        Args:
            source: the rows (every column is kept in the output).
            pack: the pack's folder or URL, where this engine's workers can read it.
            output: where to write the predictions (Parquet, or CSV by suffix); required on Spark.
            partition_by_segment: Spark: one output folder per segment.
        """
        ...

    def evaluate(
        self, source: Source, spec: SegmentSpec, metric: str, contenders: Sequence[Any], holdout: bool
    ) -> pd.DataFrame:
        """Per segment of `source`: its evaluation rows scored by each contender pack; only this table returns.

        Args:
            source: the rows (at least the spec's columns).
            spec: the model family's recipe (its split names each segment's holdout).
            metric: the metric to compute.
            contenders: `operations.Contender`s: label, pack root, segments to skip.
            holdout: each segment's holdout as training split it, else every row.

        Returns:
            The segment columns, `rows` (evaluation rows), `fingerprint` (of the segment's rows now),
            and one metric column per contender (NaN: not scored).
        """
        ...


    def forecast(
        self, pack: str, steps: int, history: Source | None = None, known: pd.DataFrame | None = None,
        levels: Sequence[float] = (),
    ) -> Forecasted:
        """The next `steps` of every segment: from the state the pack keeps, or from each segment's latest rows of
        `history` (segment columns, time, label, known features), with the pack's models.

        Args:
            pack: a forecast family's pack, where this engine's workers can read it.
            steps: how many steps (at most the trained horizon).
            history: newer rows to forecast from (None: the pack's state).
            known: the known features' future values (segment columns, time, the known columns).
            levels: prediction intervals to add (percents): `lo-<level>` and `hi-<level>` columns.

        Returns:
            One row per segment and step (the segment columns, the time, `step`, `prediction`, `model_source`, and
            the interval columns), and how many segments had no model.
        """
        ...

    def monitor(self, source: Source, segment_by: Sequence[str], root: str, watch: Any) -> pd.DataFrame:
        """Per segment of `source`: its new rows' drift against the pack's profiles, and its metric; only this
        table returns.

        Args:
            source: the new rows (segment columns, the pack's features; `prediction` and the label if any).
            segment_by: the pack's segment columns.
            root: the pack's folder or URL, reachable by the engine's workers.
            watch: an `operations.Watch`.

        Returns:
            The segment columns, then `operations.monitor_chunk`'s columns.
        """
        ...


def warm_up() -> None:
    """Import what fitting needs, in a fresh worker process (LightGBM alone takes ~1.5 s: it imports scikit-learn)."""
    import lightgbm  # noqa: F401
    import sklearn.model_selection  # noqa: F401

    import manymodels.segment.fit  # noqa: F401


def select_prepared(data: PreparedData, keep: np.ndarray) -> PreparedData:
    """Some segments of prepared data, in memory: their rows, keys and new starts."""
    chosen = np.flatnonzero(keep)
    sizes = data.sizes[chosen]
    pieces = [np.arange(data.starts[i], data.starts[i + 1], dtype=np.int64) for i in chosen]
    rows = np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int64)
    frame = data.frame.iloc[rows].reset_index(drop=True)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return PreparedData(frame, data.keys.iloc[chosen].reset_index(drop=True), starts)


def wanted_mask(keys: pd.DataFrame, wanted: Sequence[str]) -> np.ndarray:
    """Which rows of `keys` are among the segments named.

    Raises:
        DataError: a named segment does not exist.
    """
    labels = segment_labels(keys)
    wanted_set = set(wanted)
    missing = sorted(wanted_set - set(labels.unique()))
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (" …" if len(missing) > 5 else "")
        raise DataError(f"no rows for segment(s) {shown}")
    return labels.isin(wanted_set).to_numpy()


def source_frame(source: Source, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of a source as a pandas frame (a dataset read, only `columns` when given)."""
    if isinstance(source, Dataset):
        return read_frame(Path(source.path), source.fmt, columns, source.na_values)
    if isinstance(source, pd.DataFrame):
        return source
    raise DataError(f"the local engine scores pandas frames and datasets on disk, not {type(source).__name__}")
