"""The pure per-chunk work of scoring and evaluating, which every engine maps as it maps `fit_chunk`.

Each function takes plain data (a chunk's rows, a pack's location) and returns plain data, so it
runs the same in this process, in a pool worker or on a Spark executor. Packs are opened once
per process and kept (a worker scores many chunks of the same pack).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from manymodels.registry import manifest as mf
from manymodels.registry.manifest import SEGMENT_INDEX
from manymodels.registry.pack import Pack
from manymodels.segment import SegmentSpec, compute_metrics
from manymodels.segment.fit import evaluation_rows, row_hashes, segment_fingerprints
from manymodels.segment.metrics import grouped_metric
from manymodels.segment.profile import WIDTH, drift, read_losses, read_profiles
from manymodels.segment.significance import loss_rank_p, row_losses

PREDICTION = "prediction"
# Columns of an evaluation's per-segment table, beside the segment columns and one metric column per contender.
EVAL_ROWS = "rows"  # how many rows each model was scored on
EVAL_FINGERPRINT = "fingerprint"  # of the segment's rows as they are now (all of them, not only the holdout)
_OPEN_PACKS = 4
# A worker's chunks are runs of consecutive segments, whose models sit in one or two shards.
_CACHED_SHARDS = 2
_packs: OrderedDict[str, Pack] = OrderedDict()


@dataclass(frozen=True)
class Contender:
    """A pack an evaluation scores: its column in the table, where it lies, and which segments to leave out.

    Attributes:
        label: the column its metric goes in (`challenger`, `champion`).
        root: the pack's folder or fsspec URL (reachable from wherever the engine's workers run).
        skip: segment keys (segment columns only) not to score with it: NaN in its column.
    """

    label: str
    root: str
    skip: pd.DataFrame | None = None


def open_pack(root: str) -> Pack:
    """A pack opened once per process (the last few kept): its manifest is read once, its shards cached."""
    if root in _packs:
        _packs.move_to_end(root)
        return _packs[root]
    pack = _packs[root] = Pack(root, cache_shards=_CACHED_SHARDS)
    while len(_packs) > _OPEN_PACKS:
        _packs.popitem(last=False)
    return pack


def score_chunk(frame: pd.DataFrame, root: str) -> pd.DataFrame:
    """Predictions for a chunk of rows (whole segments, grouped): `prediction` and `model_source`, input order."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return open_pack(root).predict(frame)


def evaluate_chunk(
    frame: pd.DataFrame,
    bounds: Sequence[tuple[int, int, int]],
    spec: SegmentSpec,
    metric: str,
    contenders: Sequence[tuple[str, str, np.ndarray]],
    holdout: bool,
) -> pd.DataFrame:
    """Each segment's evaluation rows, scored by each contender: one row per segment, no rows of data.

    Args:
        frame: the chunk's rows, grouped by segment (the spec's columns).
        bounds: (segment index, first row, end row) of each segment in `frame`.
        spec: the model family's recipe (its split decides a segment's holdout).
        metric: the metric to compute.
        contenders: (label, pack root, wanted) where `wanted[segment index]` says whether to score it.
        holdout: evaluate on each segment's holdout as training split it, else on every row.

    Returns:
        SEGMENT_INDEX, EVAL_ROWS, EVAL_FINGERPRINT and one column per contender label.
    """
    from threadpoolctl import threadpool_limits

    if spec.forecast is not None:
        return _evaluate_forecasts(frame, bounds, spec, metric, contenders, holdout)
    hashes = row_hashes(frame, spec) if len(frame) else np.empty(0, dtype=np.uint64)
    starts = np.array([lo for _, lo, _ in bounds] + [bounds[-1][2] if bounds else 0], dtype=np.int64)
    positions: list[np.ndarray] = []
    for _, lo, hi in bounds:
        if holdout:
            try:
                rows = evaluation_rows(frame.iloc[lo:hi], spec, hashes[lo:hi]) + lo
            except ValueError:  # too few rows to split: nothing to evaluate on
                rows = np.empty(0, dtype=np.int64)
        else:
            rows = np.arange(lo, hi, dtype=np.int64)
        positions.append(rows)
    index = np.array([i for i, _, _ in bounds], dtype=np.int64)
    out = pd.DataFrame(
        {
            SEGMENT_INDEX: index,
            EVAL_ROWS: np.array([len(p) for p in positions], dtype=np.int64),
            EVAL_FINGERPRINT: segment_fingerprints(frame, starts, spec, hashes) if bounds else [],
        }
    )
    with threadpool_limits(limits=1):
        for label, root, wanted in contenders:
            out[label] = _scores(open_pack(root), frame, positions, wanted[index], spec, metric)
    return out


def _evaluate_forecasts(
    frame: pd.DataFrame,
    bounds: Sequence[tuple[int, int, int]],
    spec: SegmentSpec,
    metric: str,
    contenders: Sequence[tuple[str, str, np.ndarray]],
    holdout: bool = True,
) -> pd.DataFrame:
    """Each segment's last `horizon` steps forecast by each contender from the steps before them (the holdout as
    training held it out, by the models it measured, or the end of fresher rows, by the models kept to forecast):
    one row per segment, as `evaluate_chunk`."""
    from threadpoolctl import threadpool_limits

    from manymodels.registry.forecasting import holdout_metrics
    from manymodels.segment.forecast_windows import grid_of
    from manymodels.segment.series import ForecastDataError, series_of

    plan = spec.forecast
    assert plan is not None  # noqa: S101 - the caller checked
    hashes = row_hashes(frame, spec) if len(frame) else np.empty(0, dtype=np.uint64)
    starts = np.array([lo for _, lo, _ in bounds] + [bounds[-1][2] if bounds else 0], dtype=np.int64)
    grid = grid_of(plan, frame)
    histories, steps = [], []
    for _, lo, hi in bounds:
        try:
            series = series_of(frame.iloc[lo:hi], plan, spec.label, grid)
        except ForecastDataError:
            series = None  # rows that are off the grid: nothing to evaluate on
        histories.append(series)
        steps.append(int(np.isfinite(series.y[-plan.horizon:]).sum()) if series is not None and
                     len(series) > plan.horizon else 0)
    index = np.array([i for i, _, _ in bounds], dtype=np.int64)
    out = pd.DataFrame({
        SEGMENT_INDEX: index,
        EVAL_ROWS: np.array(steps, dtype=np.int64),
        EVAL_FINGERPRINT: segment_fingerprints(frame, starts, spec, hashes) if bounds else [],
    })
    keys = frame.iloc[[lo for _, lo, _ in bounds], [frame.columns.get_loc(c) for c in spec.segment_by]]
    usable = [i for i, h in enumerate(histories) if h is not None]
    with threadpool_limits(limits=1):
        for label, root, wanted in contenders:
            pack = open_pack(root)
            located = pack.locate(keys.reset_index(drop=True)) if len(keys) else np.zeros(0, dtype=np.int64)
            located = np.where(wanted[index], located, -1)
            scores = np.full(len(bounds), np.nan)
            if usable:
                chosen = [histories[i] for i in usable]
                scores[usable] = holdout_metrics(pack, located[usable], chosen, metric,  # type: ignore[arg-type]
                                                 measured=holdout)
            out[label] = scores
    return out


def _scores(
    pack: Pack, frame: pd.DataFrame, positions: list[np.ndarray], wanted: np.ndarray, spec: SegmentSpec, metric: str
) -> np.ndarray:
    """The metric of the pack's predictions on each wanted segment's rows (NaN elsewhere)."""
    out = np.full(len(positions), np.nan)
    chosen = np.flatnonzero(wanted)
    if chosen.size == 0:
        return out
    pieces = [positions[i] for i in chosen]
    rows = frame.iloc[np.concatenate(pieces)].reset_index(drop=True)
    y = pd.to_numeric(rows[spec.label], errors="coerce").to_numpy(dtype=float)
    # A damaged model is judged as no model (NaN: its challenger wins), not as the fallback standing in for it.
    predicted = pack.predict(rows, damaged_unserved=True)[PREDICTION].to_numpy(dtype=float, na_value=np.nan)
    ends = np.cumsum([len(p) for p in pieces])
    for i, lo, hi in zip(chosen, np.r_[0, ends[:-1]], ends, strict=True):
        out[i] = _metric(spec.task, metric, y[lo:hi], predicted[lo:hi])
    return out


def _metric(task: str, metric: str, y: np.ndarray, predicted: np.ndarray) -> float:
    if len(y) == 0 or np.isnan(predicted).any() or not np.isfinite(y).all():
        return float("nan")
    return float(compute_metrics(task, y, predicted)[metric])


def wanted_segments(keys: pd.DataFrame, skip: pd.DataFrame | None) -> np.ndarray:
    """Per segment of `keys`: True unless it is among `skip`'s keys."""
    if skip is None or len(skip) == 0 or len(keys) == 0:
        return np.ones(len(keys), dtype=bool)
    by = list(keys.columns)
    marked = keys.merge(skip[by].drop_duplicates().assign(_skip=True), on=by, how="left", sort=False)
    return marked["_skip"].isna().to_numpy()


# Columns of monitoring's per-segment table (beside the segment columns): rows, the pack's segment index
# (-1: no model), per profiled column i (the features, then the predictions) psi_i, ks_i and p_i, the metric.
MON_ROWS = "rows"
MON_MODEL = "model_index"
MON_METRIC = "metric_new"
MON_STEP = "step_"  # a forecast's metric on the new rows k steps after training: step_1, step_2, ...
MON_LOSS_P = "loss_p"  # the chance of new rows' losses ranking this high above the holdout's without change
MON_BANDED, MON_MISSES = "banded", "misses"  # a forecast's labelled rows with a MONITOR_LEVEL band, those outside it
# A forecast model's validation windows' errors: how they hang together within a window (intervals.window_sums).
MON_WINDOWS = ("window_between", "window_within", "window_between_signed", "window_within_signed", "window_count",
               "window_steps")
MONITOR_LEVEL = 95  # the prediction interval monitoring checks the actuals against


@dataclass(frozen=True)
class Watch:
    """What monitoring reads of new rows: the pack's features, the label (when the rows carry it), the metric."""

    features: tuple[str, ...]
    label: str | None
    task: str
    metric: str
    scored: bool  # the rows carry `prediction` (a score output): not predicted again
    inputs: tuple[str, ...] = ()  # other columns the pack reads to predict (the time column of a forecast)
    steps: int = 0  # a forecast's horizon: its metric is judged per step too (`step_<k>` columns)
    band: tuple[str, ...] = ()  # scored forecast rows that carry their MONITOR_LEVEL interval: its two columns

    @property
    def read(self) -> list[str]:
        """The columns monitoring reads of the new rows, beside the segment columns."""
        extra = [PREDICTION, *self.band] if self.scored else []
        return list(dict.fromkeys([*self.features, *self.inputs, *extra, *([self.label] if self.label else [])]))

    @property
    def columns(self) -> int:
        """Profiled columns: the features, then the predictions."""
        return len(self.features) + 1


def model_positions(keys: pd.DataFrame, root: str) -> np.ndarray:
    """Each segment of `keys`: its model's segment_index in the pack at `root`, -1 where it has none."""
    pack = open_pack(root)
    by = list(pack.segment_by)
    served = mf.routes(pack.manifest, by)[[*by, mf.SEGMENT_INDEX]]
    if not by:
        return np.full(len(keys), int(served[mf.SEGMENT_INDEX].iat[0]) if len(served) else -1, dtype=np.int64)
    found = keys[by].merge(served, on=by, how="left", sort=False)[mf.SEGMENT_INDEX]
    return found.fillna(-1).to_numpy(dtype=np.int64)


def monitor_chunk(
    frame: pd.DataFrame, bounds: Sequence[tuple[int, int, int]], root: str, watch: Watch, models: np.ndarray
) -> pd.DataFrame:
    """Drift (PSI, KS) of each segment's new rows against its training profile, and its metric on them.

    Args:
        frame: the chunk's rows, grouped by segment.
        bounds: (segment index, first row, end row) of each segment in `frame`.
        root: the serving pack.
        watch: what to read.
        models: per segment index (of the whole fleet), its model's segment_index in the pack (-1: none).

    Returns:
        One row per segment: SEGMENT_INDEX, MON_ROWS, MON_MODEL, psi_i, ks_i and p_i per profiled column (p: the
        chance of such a PSI without drift), MON_METRIC, MON_LOSS_P (with the label), MON_STEP<k> (forecasts),
        MON_BANDED and MON_MISSES (forecasts with the label: rows with a MONITOR_LEVEL interval, and outside it).
    """
    from threadpoolctl import threadpool_limits

    index = np.array([i for i, _, _ in bounds], dtype=np.int64)
    sizes = np.array([hi - lo for _, lo, hi in bounds], dtype=np.int64)
    count = len(index)
    positions = np.repeat(np.arange(count), sizes)
    model = models[index] if count else np.empty(0, dtype=np.int64)
    known = model >= 0
    out = pd.DataFrame({mf.SEGMENT_INDEX: index, MON_ROWS: sizes, MON_MODEL: model})
    pack = open_pack(root)  # once per process: its manifest and profiles are read once
    blobs = pack.profiles().reindex(model[known]).to_numpy(dtype=object)  # a segment without one: NaN, no profile
    profiles = np.full((count, watch.columns, WIDTH), np.nan, dtype=np.float32)
    profiles[known] = read_profiles(list(blobs), watch.columns)[0]
    steps: np.ndarray | None = None  # a forecast's row steps, found as its rows are forecast
    low = high = np.full(len(frame), np.nan)  # a forecast's MONITOR_LEVEL interval per row
    if watch.scored:
        predicted = pd.to_numeric(frame[PREDICTION], errors="coerce").astype(float)
        if watch.band:
            low, high = (pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
                         for c in watch.band)
    elif pack.plan is not None:
        from manymodels.registry.forecast_rows import answer_rows

        with threadpool_limits(limits=1):
            values, _, steps, width = answer_rows(pack, frame.reset_index(drop=True), levels=[MONITOR_LEVEL])
        predicted = pd.Series(values)
        low, high = values - width[:, 0], values + width[:, 0]
    else:
        with threadpool_limits(limits=1):
            predicted = pack.predict(frame)[PREDICTION].astype(float)
    predicted = pd.Series(predicted.to_numpy(dtype=float, na_value=np.nan))
    columns = [frame[f].reset_index(drop=True) for f in watch.features] + [predicted]
    trained = pack.manifest.set_index(mf.SEGMENT_INDEX)[mf.N_TRAIN].reindex(model).to_numpy(dtype=float)
    psi, ks, chance, _ = drift(positions, columns, profiles, count, np.nan_to_num(trained, nan=1.0))
    for c in range(watch.columns):
        out[f"psi_{c}"] = psi[:, c]
        out[f"ks_{c}"] = ks[:, c]
        out[f"p_{c}"] = chance[:, c]
    out[MON_METRIC] = out[MON_LOSS_P] = np.nan
    for k in range(watch.steps):
        out[f"{MON_STEP}{k + 1}"] = np.nan
    if watch.steps:  # the design effect's sums: read from the models only where there is a label to test
        out[MON_BANDED] = out[MON_MISSES] = 0
        sums = _window_sums(pack, model if watch.label is not None else np.full(count, -1, dtype=np.int64))
        for j, column in enumerate(MON_WINDOWS):
            out[column] = sums[:, j] if j < 4 else sums[:, j].astype(np.int64)
    if watch.label is not None and count:
        y = pd.to_numeric(frame[watch.label], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        guess = predicted.to_numpy()
        judged = np.isfinite(guess) & np.isfinite(y)
        holdout = np.full((count, WIDTH), np.nan, dtype=np.float32)
        holdout[known] = read_losses(list(blobs), watch.columns)
        tested = pack.manifest.set_index(mf.SEGMENT_INDEX)[mf.N_TEST].reindex(model).to_numpy(dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            losses = row_losses(watch.metric, y[judged], guess[judged])
        out[MON_LOSS_P] = loss_rank_p(positions[judged], count, losses, holdout, np.nan_to_num(tested))
        if watch.steps:  # a forecast: judged on the rows it forecasts (1 to horizon steps after training)
            forecast = judged
            banded = forecast & np.isfinite(low) & np.isfinite(high)
            outside = banded & ((y < low) | (y > high))
            out[MON_BANDED] = np.bincount(positions[banded], minlength=count)
            out[MON_MISSES] = np.bincount(positions[outside], minlength=count)
            out[MON_ROWS] = np.bincount(positions[forecast], minlength=count)
            out[MON_METRIC] = grouped_metric(watch.task, watch.metric, positions[forecast], count, y[forecast],
                                             guess[forecast])
            if steps is None:  # rows scored before: where each stands after its segment's training
                from manymodels.registry.forecast_rows import row_steps

                steps = row_steps(pack, frame.reset_index(drop=True))
            for k in range(watch.steps):
                at = forecast & (steps == k + 1)
                out[f"{MON_STEP}{k + 1}"] = grouped_metric(watch.task, watch.metric, positions[at], count, y[at],
                                                           guess[at])
        else:
            out[MON_METRIC] = grouped_metric(watch.task, watch.metric, positions, count, y, guess)
    return out


def _window_sums(pack: Pack, models: np.ndarray) -> np.ndarray:
    """Per segment (its model's segment_index; -1: none), `intervals.window_sums` of its forecaster's windows (the
    kept model's own errors: how they hang together within one forecast)."""
    from manymodels.registry.forecasting import load_forecasters
    from manymodels.segment.intervals import window_sums

    out = np.full((len(models), len(MON_WINDOWS)), np.nan)
    out[:, 4:] = 0
    forecasters, served, _ = load_forecasters(pack, models, damaged_unserved=True)
    for row, forecaster in zip(np.flatnonzero(served), forecasters, strict=True):
        out[row] = window_sums(forecaster.own_errors)
    return out


def forecast_chunk(root: str, keys: pd.DataFrame, steps: int, known: pd.DataFrame | None,
                   levels: Sequence[float] = ()) -> pd.DataFrame:
    """The next `steps` of a chunk of a pack's segments, from the state the pack keeps (no data); with `levels`,
    their prediction intervals."""
    from threadpoolctl import threadpool_limits

    from manymodels.registry.forecasting import forecast_state

    with threadpool_limits(limits=1):
        return forecast_state(open_pack(root), keys, steps, known, levels)[0]


def forecast_history_chunk(frame: pd.DataFrame, root: str, steps: int, known: pd.DataFrame | None,
                           levels: Sequence[float] = ()) -> pd.DataFrame:
    """The next `steps` of a chunk of segments, each from its own latest rows in `frame` (whole segments)."""
    from threadpoolctl import threadpool_limits

    from manymodels.registry.forecasting import forecast_history

    with threadpool_limits(limits=1):
        return forecast_history(open_pack(root), frame, steps, known, levels)[0]


@dataclass(frozen=True)
class KnownValues:
    """The known features' future values of a forecast, ready to be cut into chunks: each row's segment labelled
    once per command, not once per chunk."""

    frame: pd.DataFrame | None
    labels: pd.Series | None

    @classmethod
    def of(cls, known: pd.DataFrame | None, segment_by: Sequence[str]) -> KnownValues:
        """`known` with each row's segment label (a frame without the segment columns: left whole)."""
        usable = known is not None and len(segment_by) and all(c in known.columns for c in segment_by)
        return cls(known, mf.segment_labels(known[list(segment_by)]) if usable else None)  # type: ignore[index]

    def rows_of(self, keys: pd.DataFrame) -> pd.DataFrame | None:
        """The rows of a chunk's segments."""
        if self.frame is None or self.labels is None:
            return self.frame
        return self.frame.loc[self.labels.isin(set(mf.segment_labels(keys).tolist())).to_numpy()]
