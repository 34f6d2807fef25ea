"""The manifest, a pack's one persisted table, and where a pack's files lie: one schema for every writer and reader.

A manifest has one row per segment: its `segment_by` values, then the columns below, then one
column per metric of the task. Training (every engine), changed-only carries, promotions and
scoring all build and read it through this module, so no column name is spelled anywhere else.

Status values are the segment layer's (`ok`, `failed`: what fitting one segment can end in);
this module is where the rest of the code finds them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from manymodels.segment import SegmentResult, SegmentSpec, metric_names
from manymodels.segment.fit import FAILED, OK
from manymodels.segment.forecast_fit import selection_regret
from manymodels.segment.shards import join_location

# Status of a segment's fit, in the manifest's STATUS column.
STATUSES = (OK, FAILED)

SEGMENT_INDEX = "segment_index"  # the segment's number in its pack: the key of its model in a shard
STATUS = "status"
ERROR = "error"
ROWS = "rows"
N_TRAIN = "n_train"
N_TEST = "n_test"
SHARD = "shard"
CHECKSUM = "checksum"  # of the model's bytes: a model whose bytes differ is never loaded
SHARD_CHECKSUM = "shard_checksum"  # of its shard file's bytes
MODEL_FORMAT = "model_format"
FINGERPRINT = "fingerprint"
FIT_SECONDS = "fit_seconds"
CONSTANT = "constant"
SOURCE_RUN = "source_run"  # the training run a model came from (carried or promoted models)
CARRIED = "carried"  # a changed-only run's model carried over from the champion
# A model carried by reference (registry.references): its segment index in the shard file of the run it lies in
# (null: the row's own model, under its own segment_index).
STORED_INDEX = "stored_index"
ATTEMPT = "attempt"  # a Spark task's attempt number, while results travel back (never persisted)
# A segment's reference profile (segment.profile: float32 bytes). It travels with the other columns but is
# stored apart, in PackLayout.PROFILES, so opening a pack to score never reads it.
PROFILE = "profile"
# Model selection's columns (only in the manifests of models with `validation`).
CANDIDATE = "candidate"  # the winning candidate's name
PARAMS = "params"  # its parameters, JSON (tuned ones included)
CV_FOLDS = "cv_folds"
CV_MEAN = "cv_mean"  # the winner's mean fold metric (the selection metric)
CV_STD = "cv_std"
CV_BASELINE = "cv_baseline"  # the best baseline's mean fold metric (null without baselines)
CV_SCORES = "cv_scores"  # JSON: per candidate, mean, std and fold metrics (and tuning's trials and params)

# Forecast families' columns: the primary metric of each holdout step (JSON list), the naive forecast's metric.
STEP_METRIC = "step_metric"
INTERVAL_SCORES = "interval_scores"  # forecasts, JSON: per level, the holdout's coverage and Winkler score
# Forecasts, JSON: what the report draws of a segment (segment.forecast_fit.plot_record); kept apart, as PROFILE.
HOLDOUT_PLOT = "holdout_plot"
HOLDOUT_NAIVE = "holdout_naive"
FORECAST_STATE = "forecast_state"  # a thin segment's state (JSON), which train keeps beside the fallback
SERIES_SCORES = "series_scores"  # a pooled candidate's fit: each series' window metrics and holdout forecast (JSON)

# The fixed columns of a fit's results, in manifest order, with their Arrow types.
RESULT_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    (SEGMENT_INDEX, pa.int64()),
    (STATUS, pa.string()),
    (ERROR, pa.string()),
    (ROWS, pa.int64()),
    (N_TRAIN, pa.int64()),
    (N_TEST, pa.int64()),
    (SHARD, pa.string()),
    (CHECKSUM, pa.string()),
    (SHARD_CHECKSUM, pa.string()),
    (MODEL_FORMAT, pa.string()),
    (FINGERPRINT, pa.string()),
    (FIT_SECONDS, pa.float64()),
    (CONSTANT, pa.bool_()),
    (PROFILE, pa.binary()),
)


SELECTION_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    (CANDIDATE, pa.string()),
    (PARAMS, pa.string()),
    (CV_FOLDS, pa.int64()),
    (CV_MEAN, pa.float64()),
    (CV_STD, pa.float64()),
    (CV_BASELINE, pa.float64()),
    (CV_SCORES, pa.string()),
)


FORECAST_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    (STEP_METRIC, pa.string()), (HOLDOUT_NAIVE, pa.float64()), (FORECAST_STATE, pa.string()),
    (INTERVAL_SCORES, pa.string()), (HOLDOUT_PLOT, pa.string()),
)


def result_schema(spec: SegmentSpec, extra: Sequence[tuple[str, pa.DataType]] = ()) -> pa.Schema:
    """The Arrow schema of a fit's result rows (no segment columns): the fixed fields, selection's (when the
    spec selects), forecasting's (a forecast family), `extra`, the task's metrics."""
    metrics = [(m, pa.float64()) for m in metric_names(spec.task)]
    selection = SELECTION_FIELDS if spec.selecting else ()
    forecast = FORECAST_FIELDS if spec.forecast is not None else ()
    pooled = ((SERIES_SCORES, pa.string()),) if spec.pooled_fit else ()
    return pa.schema([*RESULT_FIELDS, *selection, *forecast, *pooled, *extra, *metrics])


def result_rows(results: Sequence[SegmentResult], spec: SegmentSpec) -> pd.DataFrame:
    """Fit results as manifest columns (no segment columns), in the order given."""
    task = spec.task
    rows = pd.DataFrame(
        {
            SEGMENT_INDEX: np.array([r.index for r in results], dtype=np.int64),
            STATUS: [r.status for r in results],
            ERROR: pd.array([r.error for r in results], dtype="string"),
            ROWS: np.array([r.rows for r in results], dtype=np.int64),
            N_TRAIN: np.array([r.n_train for r in results], dtype=np.int64),
            N_TEST: np.array([r.n_test for r in results], dtype=np.int64),
            SHARD: pd.array([r.shard for r in results], dtype="string"),
            CHECKSUM: pd.array([r.checksum for r in results], dtype="string"),
            SHARD_CHECKSUM: pd.array([r.shard_checksum for r in results], dtype="string"),
            MODEL_FORMAT: pd.array([r.model_format for r in results], dtype="string"),
            FINGERPRINT: [r.fingerprint for r in results],
            FIT_SECONDS: np.array([r.seconds for r in results], dtype=float),
            CONSTANT: np.array([r.constant for r in results], dtype=bool),
            PROFILE: pd.Series([r.profile for r in results], dtype=object),
        }
    )
    if spec.selecting:
        rows[CANDIDATE] = pd.array([r.candidate for r in results], dtype="string")
        rows[PARAMS] = pd.array([r.params for r in results], dtype="string")
        rows[CV_FOLDS] = np.array([r.cv_folds for r in results], dtype=np.int64)
        rows[CV_MEAN] = np.array([r.cv_mean for r in results], dtype=float)
        rows[CV_STD] = np.array([r.cv_std for r in results], dtype=float)
        rows[CV_BASELINE] = np.array([r.cv_baseline for r in results], dtype=float)
        rows[CV_SCORES] = pd.array([r.cv_scores for r in results], dtype="string")
    if spec.forecast is not None:
        rows[STEP_METRIC] = pd.array([r.step_metric for r in results], dtype="string")
        rows[HOLDOUT_NAIVE] = np.array([r.holdout_naive for r in results], dtype=float)
        rows[FORECAST_STATE] = pd.array([r.forecast_state for r in results], dtype="string")
        rows[INTERVAL_SCORES] = pd.array([r.interval_scores for r in results], dtype="string")
        rows[HOLDOUT_PLOT] = pd.array([r.holdout_plot for r in results], dtype="string")
    if spec.pooled_fit:
        rows[SERIES_SCORES] = pd.array([r.series_scores for r in results], dtype="string")
    for metric in metric_names(task):
        rows[metric] = np.array([r.metrics.get(metric, np.nan) for r in results], dtype=float)
    return rows


def results_from_rows(rows: pd.DataFrame, spec: SegmentSpec) -> list[SegmentResult]:
    """Result rows (as `result_rows` makes them, from any engine) back to results, one per segment.

    When rows carry ATTEMPT (a Spark task retried), a segment's rows count once: an ok attempt
    wins, else the last.
    """
    if ATTEMPT in rows.columns:
        rows = rows.assign(_ok=rows[STATUS] == OK).sort_values([SEGMENT_INDEX, "_ok", ATTEMPT], kind="stable")
        rows = rows.drop_duplicates(SEGMENT_INDEX, keep="last")
    metrics = list(metric_names(spec.task))
    results = [
        SegmentResult(
            index=int(rec[SEGMENT_INDEX]),
            status=str(rec[STATUS]),
            rows=int(rec[ROWS]),
            fingerprint=str(rec[FINGERPRINT]),
            n_train=int(rec[N_TRAIN]),
            n_test=int(rec[N_TEST]),
            metrics={m: float(rec[m]) for m in metrics if rec[m] == rec[m]},
            error=_text(rec[ERROR]),
            model_format=_text(rec[MODEL_FORMAT]),
            shard=_text(rec[SHARD]),
            checksum=_text(rec.get(CHECKSUM)),
            shard_checksum=_text(rec.get(SHARD_CHECKSUM)),
            seconds=float(rec[FIT_SECONDS]),
            constant=bool(rec[CONSTANT]),
            profile=_blob(rec.get(PROFILE)),
        )
        for rec in rows.to_dict("records")
    ]
    if spec.selecting:
        for result, rec in zip(results, rows.to_dict("records"), strict=True):
            result.candidate, result.params = _text(rec[CANDIDATE]), _text(rec[PARAMS])
            result.cv_folds = int(rec[CV_FOLDS])
            result.cv_mean, result.cv_std = float(rec[CV_MEAN]), float(rec[CV_STD])
            result.cv_baseline, result.cv_scores = float(rec[CV_BASELINE]), _text(rec[CV_SCORES])
    if spec.forecast is not None:
        for result, rec in zip(results, rows.to_dict("records"), strict=True):
            result.step_metric, result.holdout_naive = _text(rec[STEP_METRIC]), float(rec[HOLDOUT_NAIVE])
            result.forecast_state = _text(rec.get(FORECAST_STATE))
            result.interval_scores = _text(rec.get(INTERVAL_SCORES))
            result.holdout_plot = _text(rec.get(HOLDOUT_PLOT))
            result.series_scores = _text(rec.get(SERIES_SCORES))
    return results


def build_manifest(keys: pd.DataFrame, results: Sequence[SegmentResult], spec: SegmentSpec) -> pd.DataFrame:
    """One row per segment of `keys` (segment-index order): its keys, then its result's columns."""
    by_index = {r.index: r for r in results}
    rows = result_rows([by_index[i] for i in range(len(keys))], spec)
    return pd.concat([keys.reset_index(drop=True), rows], axis=1)


def served(manifest: pd.DataFrame) -> pd.DataFrame:
    """The rows of segments that have a model."""
    return manifest.loc[manifest[STATUS] == OK]


def interval_scores_by_level(manifest: pd.DataFrame) -> tuple[dict[str, list[tuple[float, float]]], int]:
    """Each level's prediction intervals judged on the holdout (INTERVAL_SCORES), over the rows given: per level (in
    ascending order), the (coverage, Winkler score) of each segment that had an interval at it, and how many
    segments were judged at all (a level's shortfall: those with too few window errors for it)."""
    if INTERVAL_SCORES not in manifest.columns:
        return {}, 0
    rows = [json.loads(text) for text in manifest[INTERVAL_SCORES].dropna().astype(str)]
    found: dict[str, list[tuple[float, float]]] = {}
    for scores in rows:
        for level, score in scores.items():
            found.setdefault(level, [])
            if score.get("coverage") is not None:
                found[level].append((float(score["coverage"]), float(score["winkler"])))
    return dict(sorted(found.items(), key=lambda kv: float(kv[0]))), len(rows)


def selection_regrets(manifest: pd.DataFrame, maximize: bool = False) -> pd.Series:
    """Each segment's selection regret on its holdout, from its CV_SCORES (NaN where its candidates' holdout errors
    were not measured: the bundle's `selection.regret`)."""
    if CV_SCORES not in manifest.columns or CANDIDATE not in manifest.columns:
        return pd.Series(np.nan, index=manifest.index, dtype=float)
    values = []
    for text, winner in zip(manifest[CV_SCORES], manifest[CANDIDATE], strict=True):
        found = None
        if isinstance(text, str) and '"holdout"' in text:
            found = selection_regret(json.loads(text), str(winner), maximize)
        values.append(np.nan if found is None else found)
    return pd.Series(values, index=manifest.index, dtype=float)


def is_ok(manifest: pd.DataFrame) -> pd.Series:
    """Per row: whether the segment has a model."""
    return manifest[STATUS] == OK


def routes(manifest: pd.DataFrame, segment_by: Sequence[str]) -> pd.DataFrame:
    """Which shard holds each served segment's model: segment columns, SEGMENT_INDEX, SHARD, and the
    checksums (CHECKSUM, SHARD_CHECKSUM: null for a pack written before they were kept)."""
    rows = manifest.loc[manifest[SHARD].notna(), [*segment_by, SEGMENT_INDEX, SHARD]]
    for column in (CHECKSUM, SHARD_CHECKSUM):
        rows[column] = manifest.loc[rows.index, column] if column in manifest.columns else None
    return rows


SEGMENT_KEY_SEPARATOR = "|"


def segment_labels(keys: pd.DataFrame) -> pd.Series:
    """How a user names each segment: its values as text joined by '|' (one column: the value itself; none: '').

    Column by column (no Python join per row): the labels of 100,000 keys in milliseconds, which forecasts match
    known values on and a server matches each request on.
    """
    if len(keys) == 0:  # no rows: an empty series, as the rows' index says
        return pd.Series([], dtype=object, index=keys.index)
    if len(keys.columns) == 0:
        return pd.Series([""] * len(keys), index=keys.index, dtype="str")
    labels = _text_of(keys.iloc[:, 0])
    for i in range(1, len(keys.columns)):
        labels = labels + SEGMENT_KEY_SEPARATOR + _text_of(keys.iloc[:, i])
    return labels


def _text_of(values: pd.Series) -> pd.Series:
    """A key column as text, as `astype(str)` writes it; a missing key as 'None', whatever marks it (None, NaN,
    pandas' NA): a manifest read back and rows given later name the same segment alike."""
    text = values.astype(str)
    missing = values.isna().to_numpy()
    if missing.any():
        text = text.astype(object)
        text[missing] = "None"
    return text


def segment_columns(manifest: pd.DataFrame) -> list[str]:
    """A manifest's segment columns: those before SEGMENT_INDEX."""
    columns = list(manifest.columns)
    return columns[: columns.index(SEGMENT_INDEX)]


def _blob(value: object) -> bytes | None:
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else None


def _text(value: object) -> str | None:
    return None if value is None or value is pd.NA or (isinstance(value, float) and value != value) else str(value)


@dataclass(frozen=True)
class PackLayout:
    """Where a pack's files lie, under its root (a folder or an fsspec URL), and where a pack lies in a run.

    Inside a run's artifacts: `model/` is the MLflow model, `model/pack/` the pack::

        pack.json            what the models are: segment_by, features, task, metric, run
        manifest.parquet     one row per segment (this module's columns)
        profiles.parquet     segment_index, profile: each segment's reference profile (segment.profile); a
                             forecast's holdout_plot too (what the report draws of the segment)
        shards/shard-NNNNN.parquet   the models themselves, native formats, many per file
        fallback/            optional: a pack of its own, for rows whose segment has no model
        shared/<checksum>.model   forecasts' pooled candidates: one model each, named by the checksum of its
                             bytes, which every segment that chose it references
    """

    root: Path | str

    MODEL = "model"  # the MLflow model folder in a run's artifacts
    PACK = "pack"  # the pack folder inside the MLflow model
    IN_RUN = "model/pack"  # the pack's artifact path in a run
    INFO = "pack.json"
    MANIFEST = "manifest.parquet"
    PROFILES = "profiles.parquet"  # segment_index, profile: the reference profiles monitoring reads
    STATES = "states.parquet"  # a forecast fallback's: the segment columns and state of each segment it serves
    SHARDS = "shards"
    FALLBACK = "fallback"
    SHARED = "shared"

    @property
    def info(self) -> Path | str:
        """The pack's description."""
        return join_location(self.root, self.INFO)

    @property
    def manifest(self) -> Path | str:
        """The manifest table."""
        return join_location(self.root, self.MANIFEST)

    @property
    def profiles(self) -> Path | str:
        """The segments' reference profiles."""
        return join_location(self.root, self.PROFILES)

    @property
    def states(self) -> Path | str:
        """A forecast fallback's states of the segments it serves."""
        return join_location(self.root, self.STATES)

    @property
    def shards(self) -> Path | str:
        """The folder of shards."""
        return join_location(self.root, self.SHARDS)

    @property
    def fallback(self) -> Path | str:
        """The fallback pack's root."""
        return join_location(self.root, self.FALLBACK)

    @property
    def shared(self) -> Path | str:
        """The folder of models segments share (a forecast's pooled candidates)."""
        return join_location(self.root, self.SHARED)

    def shared_model(self, digest: str) -> Path | str:
        """A shared model's file, named by the checksum of its bytes."""
        if not digest.isalnum():
            raise ValueError(f"not a model checksum: {digest[:40]!r}")
        return join_location(self.shared, f"{digest}.model")

    def shard(self, name: str) -> Path | str:
        """One shard file."""
        return join_location(self.shards, name)
