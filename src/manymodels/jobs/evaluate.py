"""The evaluate task: a challenger run against the champion version, segment by segment, on the same rows.

Both packs predict the same evaluation rows: each segment's holdout as training split it
(the same canonical order and seed), or every row of a fresh dataset given with `data`. The
per-segment table says who won and what the bundle's `promotion` policy would do; it is saved
with the challenger's run, where `promote` picks it up.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from manymodels.bundle import BundleConfig, ModelSpec
from manymodels.bundle.schema import HIGHER_IS_BETTER
from manymodels.data import read_frame, write_parquet
from manymodels.engines.base import PreparedData, prepare
from manymodels.errors import DataError, RegistryError
from manymodels.jobs.score import PACK_PATH, open_pack, read_input, resolve_run
from manymodels.jobs.train import development_prefix, training_spec
from manymodels.registry import Pack, Tracker
from manymodels.registry.compose import SOURCE_RUN
from manymodels.registry.tracking import TAG, RunInfo, current_user
from manymodels.registry.versions import CHALLENGER, CHAMPION, ModelRegistry, VersionInfo
from manymodels.segment import SegmentSpec
from manymodels.segment.fit import OK, evaluation_rows, row_hashes, segment_fingerprints
from manymodels.segment.metrics import compute_metrics

EVALUATION_FOLDER = "evaluation"
# Segment statuses in an evaluation table; `insufficient`: too few evaluation rows to call it either way.
WON, LOST, TIED, NEW, FAILED, NO_DATA, ABSENT = "won", "lost", "tied", "new", "failed", "no_data", "absent"
INSUFFICIENT = "insufficient"
STATUSES = (WON, LOST, TIED, NEW, INSUFFICIENT, FAILED, NO_DATA, ABSENT)
# How an evaluation table is ordered: what needs a look first (then, within a status, the largest change).
STATUS_ORDER = (LOST, FAILED, WON, NEW, INSUFFICIENT, TIED, NO_DATA, ABSENT)
# Decisions: the challenger's model serves, the champion's stays, or the segment has neither.
PROMOTE, KEEP, NONE = "promote", "keep", "none"
# Column: whether the challenger's metric breaks promotion.max_metric / min_metric (the quality gate).
OVER_GATE = "over_quality_gate"
_TIE = 1e-12


@dataclass
class Evaluation:
    """A challenger run against a champion version (or none yet): the table, its counts, the gate."""

    model: str
    metric: str
    challenger_run: str
    champion_version: int | None
    champion_run: str | None
    data: str
    table: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    artifact: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Segments per status (won, lost, tied, new, insufficient, failed, no_data, absent) and per decision."""
        counts = {s: int((self.table["status"] == s).sum()) for s in STATUSES}
        counts["promote"] = int((self.table["decision"] == PROMOTE).sum())
        return counts

    @property
    def unchanged(self) -> bool:
        """Whether every model of the challenger is the champion's own, carried over by a changed-only run.

        Then there is nothing to promote, and nothing wrong: a pipeline goes on (`promote` makes no version).
        """
        table = self.table
        if "same_model" not in table.columns:
            return False
        ok = table["run_status"] == OK
        return bool(ok.any() and table.loc[ok, "same_model"].all())

    @property
    def passed(self) -> bool:
        """Whether the gate lets a promotion go ahead (it may have nothing to promote: see `nothing_to_promote`)."""
        return not self.problems

    @property
    def nothing_to_promote(self) -> bool:
        """Whether no segment's challenger would replace what serves it (not a failure by itself)."""
        return self.counts["promote"] == 0


def registered_name(config: BundleConfig, name: str) -> str:
    """The MLflow registered model of a model family: `registered_model`, else `<bundle>.<target>.<model>`.

    In development mode it is prefixed with `dev_<user>_`, as experiments are.
    """
    spec = config.model(name)
    raw = spec.registered_model or f"{config.name}.{config.target}.{name}"
    return registry_name(config, raw)


def registry_name(config: BundleConfig, raw: str) -> str:
    """A registered model name for the target: characters MLflow may refuse replaced, development prefix added."""
    return development_prefix(config) + "".join(c if c.isalnum() or c in "_.-" else "_" for c in raw)


def model_registry(config: BundleConfig, name: str, tracker: Tracker | None = None) -> ModelRegistry:
    """The registered model of a model family on the target's tracking server."""
    tracker = tracker or Tracker(config.tracking_uri, config.embedded_artifacts)
    return ModelRegistry(tracker, registered_name(config, name))


def evaluation_artifact(champion: VersionInfo | None) -> str:
    """Where an evaluation against this champion is saved in the challenger's run."""
    return f"{EVALUATION_FOLDER}/vs-{'v' + str(champion.version) if champion else 'none'}.parquet"


def evaluate(
    config: BundleConfig,
    name: str,
    run_id: str | None = None,
    data: str | Path | pd.DataFrame | None = None,
    save: bool = True,
) -> Evaluation:
    """Compare a training run (default: the latest successful) with the champion, per segment.

    Args:
        config: the bundle resolved for a target.
        name: the model family.
        run_id: the challenger run (default: the model's latest successful training run).
        data: evaluate on every row of this (a dataset name, a path, a frame) instead of the holdout.
        save: save the table with the challenger's run and point alias `challenger` at it.

    Raises:
        RegistryError: no training run to evaluate.
        DataError: the evaluation data lacks a column.
    """
    model = config.model(name)
    spec, path, fmt = training_spec(config, name)
    tracker = Tracker(config.tracking_uri, config.embedded_artifacts)
    challenger = resolve_run(config, name, run_id)
    if challenger.tags.get(TAG + "kind") != "train":
        raise RegistryError(f"run {challenger.run_id} is not a training run; evaluate takes a training run")
    registry = model_registry(config, name, tracker)
    champion = registry.by_alias(CHAMPION)
    champion_pack = open_pack(config, tracker.run(champion.run_id)) if champion else None
    challenger_pack = open_pack(config, challenger)
    if data is None:
        frame, described, holdout = read_frame(path, fmt, spec.columns), f"holdout of {model.dataset}", True
    else:
        frame, holdout = read_input(config, data), False
        described = "a data frame" if isinstance(data, pd.DataFrame) else str(data)
    missing = [c for c in [*spec.segment_by, *spec.features, spec.label] if c not in frame.columns]
    if missing:
        raise DataError(f"{described}: lacks column(s) {', '.join(missing)} that evaluating {name!r} needs")
    metric = model.promotion_metric
    prepared = prepare(frame, list(spec.segment_by))
    hashes = row_hashes(prepared.frame, spec) if holdout and len(prepared.frame) else None
    table = worst_first(decide(compare(prepared, hashes, spec, challenger_pack, champion_pack, metric), model, metric))
    result = Evaluation(
        model=name,
        metric=metric,
        challenger_run=challenger.run_id,
        champion_version=champion.version if champion else None,
        champion_run=champion.run_id if champion else None,
        data=described,
        table=table,
    )
    result.problems = gate_problems(table, model)
    if holdout:
        result.warnings += _holdout_warnings(prepared, hashes, spec, challenger_pack, champion_pack)
    if save:
        result.artifact = save_evaluation(tracker, registry, challenger, champion, result)
    return result


def compare(
    data: PreparedData,
    hashes: np.ndarray | None,
    spec: SegmentSpec,
    challenger: Pack,
    champion: Pack | None,
    metric: str,
) -> pd.DataFrame:
    """Per segment: evaluation rows and both models' metrics on them, plus each run's status.

    `hashes` (the rows' `row_hashes`) selects each segment's holdout as training split it;
    None evaluates on every row.

    A segment whose challenger model *is* the champion's (carried over by a changed-only run:
    same source run, same fingerprint) is scored once; on its holdout not at all, as the metric
    training recorded was computed on those very rows by that very model.

    Returns:
        One row per segment of either pack: keys, `rows` (evaluation rows), `challenger` and
        `champion` (`metric`; NaN without a model), the challenger's `run_status`,
        `error` and training `train_rows`, whether the champion serves it (`has_champion`) and
        whether with the very same model (`same_model`).
    """
    keys_by = list(spec.segment_by)
    holdout = hashes is not None
    positions: list[np.ndarray] = []
    for seg in range(len(data)):
        lo, hi = int(data.starts[seg]), int(data.starts[seg + 1])
        if hashes is not None:
            try:
                rows = evaluation_rows(data.frame.iloc[lo:hi], spec, hashes[lo:hi]) + lo
            except ValueError:  # too few rows to split: nothing to evaluate on
                rows = np.empty(0, dtype=np.int64)
        else:
            rows = np.arange(lo, hi)
        positions.append(rows)
    evaluated = data.keys.copy()
    evaluated["rows"] = np.array([len(p) for p in positions], dtype=np.int64)
    shared, recorded = _shared_models(data.keys, challenger, champion, keys_by, metric)
    everyone = np.ones(len(data), dtype=bool)
    own = everyone & ~shared
    scores = _scores(challenger, data.frame, positions, own if holdout else everyone, spec, metric)
    if holdout:
        scores[shared] = recorded[shared]
    evaluated["challenger"] = scores
    evaluated["same_model"] = shared
    if champion is None:
        evaluated["champion"] = np.nan
    else:
        champion_scores = _scores(champion, data.frame, positions, own, spec, metric)
        champion_scores[shared] = scores[shared]
        evaluated["champion"] = champion_scores
    table = _served(challenger, keys_by).merge(evaluated, on=keys_by, how="outer")
    if champion is not None:
        served = _served(champion, keys_by)[keys_by].assign(has_champion=True)
        table = table.merge(served, on=keys_by, how="outer")
    if "has_champion" not in table.columns:
        table["has_champion"] = False
    table["has_champion"] = table["has_champion"].astype("boolean").fillna(False).astype(bool)
    table["rows"] = table["rows"].fillna(0).astype(np.int64)
    table["same_model"] = table["same_model"].astype("boolean").fillna(False).astype(bool)
    in_either = table["run_status"].notna().to_numpy() | table["has_champion"].to_numpy()
    return table.loc[in_either].reset_index(drop=True)  # segments no model knows are for the fallback


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
    predicted = pack.predict(rows)["prediction"].to_numpy(dtype=float, na_value=np.nan)
    starts = np.concatenate([[0], np.cumsum([len(p) for p in pieces])])
    for i, lo, hi in zip(chosen, starts[:-1], starts[1:], strict=True):
        out[i] = _metric(spec.task, metric, y[lo:hi], predicted[lo:hi])
    return out


def _shared_models(
    keys: pd.DataFrame, challenger: Pack, champion: Pack | None, keys_by: list[str], metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per segment of `keys`: whether both packs serve the same model, and the challenger's recorded metric."""
    none = np.zeros(len(keys), dtype=bool), np.full(len(keys), np.nan)
    if champion is None or SOURCE_RUN not in challenger.manifest.columns or metric not in challenger.manifest:
        return none
    mine = challenger.manifest.loc[challenger.manifest["status"] == OK, [*keys_by, SOURCE_RUN, "fingerprint", metric]]
    theirs = champion.manifest[[*keys_by, SOURCE_RUN, "fingerprint"]]
    both = keys.merge(mine, on=keys_by, how="left").merge(theirs, on=keys_by, how="left", suffixes=("", "_champion"))
    same = (both[SOURCE_RUN] == both[f"{SOURCE_RUN}_champion"]) & (both["fingerprint"] == both["fingerprint_champion"])
    return same.fillna(False).to_numpy(dtype=bool), both[metric].to_numpy(dtype=float)


def _metric(task: str, metric: str, y: np.ndarray, predicted: np.ndarray) -> float:
    if len(y) == 0 or np.isnan(predicted).any() or not np.isfinite(y).all():
        return float("nan")
    return float(compute_metrics(task, y, predicted)[metric])


def _served(pack: Pack, keys_by: list[str]) -> pd.DataFrame:
    manifest = pack.manifest
    columns = [*keys_by, "status", "error", "rows"]
    out = manifest[columns].rename(columns={"status": "run_status", "rows": "train_rows"})
    return out


def decide(table: pd.DataFrame, model: ModelSpec, metric: str) -> pd.DataFrame:
    """Each segment's status (won, lost, tied, new, failed, no_data, absent), change and decision, with why.

    The change is relative to the champion (negative: smaller metric); a win needs an
    improvement (in the metric's better direction) above `promotion.min_improvement`.
    """
    policy = model.promotion
    higher = metric in HIGHER_IS_BETTER
    table = table.copy()
    champ = table["champion"].to_numpy(dtype=float)
    chall = table["challenger"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        change = (chall - champ) / np.maximum(np.abs(champ), _TIE)
    table["change"] = change
    statuses, decisions, reasons = [], [], []
    for row, rel in zip(table.itertuples(index=False), change, strict=True):
        status, decision, reason = _judge(row, rel, higher, metric, policy)
        statuses.append(status)
        decisions.append(decision)
        reasons.append(reason)
    table["status"] = statuses
    table["decision"] = decisions
    table["reason"] = pd.array(reasons, dtype="string")
    carried = table["same_model"].to_numpy(dtype=bool) if "same_model" in table.columns else False
    ok = (table["run_status"] == OK).to_numpy(dtype=bool) & ~carried  # a carried model is the champion's own
    over = np.zeros(len(table), dtype=bool)
    if policy.max_metric is not None:
        over |= chall > policy.max_metric
    if policy.min_metric is not None:
        over |= chall < policy.min_metric
    table[OVER_GATE] = over & ok
    return table


def worst_first(table: pd.DataFrame) -> pd.DataFrame:
    """The table in the order a person reads it: losses (largest relative loss first), failures, wins
    (largest gain first), new, insufficient, ties, no data, absent."""
    rank = table["status"].map({s: i for i, s in enumerate(STATUS_ORDER)}).fillna(len(STATUS_ORDER))
    size = table["change"].abs().fillna(-1.0)
    order = np.lexsort((-size.to_numpy(dtype=float), rank.to_numpy(dtype=float)))
    return table.iloc[order].reset_index(drop=True)


def _judge(row: Any, change: float, higher: bool, metric: str, policy: Any) -> tuple[str, str, str]:
    has_champion = bool(row.has_champion)
    keep = KEEP if has_champion else NONE
    run_status = row.run_status if isinstance(row.run_status, str) else None
    if run_status is None:
        return ABSENT, keep, "not in the challenger run (no rows when it trained)"
    if run_status != OK:
        error = row.error if isinstance(row.error, str) else "failed"
        return FAILED, keep, f"challenger failed: {error}"
    if bool(getattr(row, "same_model", False)):
        return TIED, KEEP, "the champion's own model, carried over (its rows did not change)"
    if row.rows == 0 or row.challenger != row.challenger:
        return NO_DATA, keep, "no evaluation rows"
    gate = _gate(row, metric, policy)
    if not has_champion:
        return NEW, (NONE, PROMOTE)[gate is None], gate or "new segment"
    if row.rows < policy.min_eval_rows:
        return INSUFFICIENT, KEEP, (
            f"{int(row.rows)} evaluation row(s) < promotion.min_eval_rows {policy.min_eval_rows}: too few to tell "
            "the models apart, the champion stays (evaluate on more rows with --data)"
        )
    improvement = -change if not higher else change
    shown = f"{metric} {row.challenger:.6g} vs {row.champion:.6g} ({change:+.2%})"
    if row.champion != row.champion:  # the champion serves it but could not be scored on these rows
        return NEW, (KEEP, PROMOTE)[gate is None], gate or "champion could not be scored on these rows"
    if abs(row.challenger - row.champion) <= _TIE * max(1.0, abs(row.champion)):
        return TIED, KEEP, f"same {metric} ({row.champion:.6g})"
    if improvement < 0:
        return LOST, KEEP, f"challenger worse: {shown}"
    if improvement <= policy.min_improvement:
        return TIED, KEEP, f"improvement below min_improvement {policy.min_improvement:g}: {shown}"
    if gate:
        return WON, KEEP, gate
    return WON, PROMOTE, f"challenger better: {shown}"


def _gate(row: Any, metric: str, policy: Any) -> str | None:
    """Why the quality gate stops the challenger's model, or None if it passes."""
    train_rows = int(row.train_rows) if row.train_rows == row.train_rows else 0
    if train_rows < policy.min_rows:
        return f"gate: {train_rows} rows < promotion.min_rows {policy.min_rows}"
    if policy.max_metric is not None and row.challenger > policy.max_metric:
        return f"gate: {metric} {row.challenger:.6g} > promotion.max_metric {policy.max_metric:g}"
    if policy.min_metric is not None and row.challenger < policy.min_metric:
        return f"gate: {metric} {row.challenger:.6g} < promotion.min_metric {policy.min_metric:g}"
    return None


def gate_problems(table: pd.DataFrame, model: ModelSpec) -> list[str]:
    """Why a pipeline should stop here: too many segments need a person's look.

    Those are segments whose challenger lost or failed, or whose challenger's metric breaks the
    quality gate (`max_metric` / `min_metric`); the gate fails when they are more than
    `promotion.max_failed_fraction` of the segments evaluated. A retrain where nothing improved
    is no failure: there is just nothing to promote.
    """
    status = table["status"]
    evaluated = int(status.isin([WON, LOST, TIED, NEW, INSUFFICIENT, FAILED]).sum())
    regressed = status.isin([LOST, FAILED]).to_numpy(dtype=bool)
    over = table[OVER_GATE].to_numpy(dtype=bool) if OVER_GATE in table.columns else np.zeros(len(table), bool)
    needs_look = int((regressed | over).sum())
    limit = model.promotion.max_failed_fraction
    if not evaluated or needs_look / evaluated <= limit:
        return []
    parts = [f"{int((status == LOST).sum()):,} lost", f"{int((status == FAILED).sum()):,} failed"]
    if over.any():
        parts.append(f"{int(over.sum()):,} over the quality gate")
    return [
        f"{needs_look:,} of {evaluated:,} segments regress ({', '.join(parts)}: {needs_look / evaluated:.1%}), "
        f"more than promotion.max_failed_fraction {limit:.1%}"
    ]


def _holdout_warnings(
    data: PreparedData, hashes: np.ndarray | None, spec: SegmentSpec, challenger: Pack, champion: Pack | None
) -> list[str]:
    """Where a holdout comparison is not fair: rows changed since either side trained (by fingerprint).

    A random split of changed rows is a new split: some of today's holdout rows were training
    rows of the run that trained on the older rows, which flatters that run (the champion, as a
    rule). A time split is fair as long as the cutoff only moves forward.
    """
    current = data.keys.copy()
    current["now"] = segment_fingerprints(data.frame, data.starts, spec, hashes)
    warnings = []
    sides = [("the challenger", challenger)] + ([("the champion", champion)] if champion is not None else [])
    for who, pack in sides:
        ok = pack.manifest.loc[pack.manifest["status"] == OK, [*spec.segment_by, "fingerprint"]]
        both = current.merge(ok, on=list(spec.segment_by), how="inner")
        rows_now = both["now"].str.split("-", n=1).str[1]  # a fingerprint is <spec>-<rows>-<hash of rows>
        rows_then = both["fingerprint"].astype(str).str.split("-", n=1).str[1]
        changed = int((rows_now != rows_then).sum())
        if changed and spec.split_by is None:
            warnings.append(
                f"{changed:,} segment(s) have other rows than {who} trained on: with a random split their holdout "
                f"includes rows {who} trained on, which flatters it; evaluate on fresh rows (--data) or split by time"
            )
    return warnings


def save_evaluation(
    tracker: Tracker, registry: ModelRegistry, challenger: RunInfo, champion: VersionInfo | None, result: Evaluation
) -> str:
    """Log the table in the challenger's run, tag the run, and point alias `challenger` at its version."""
    artifact = evaluation_artifact(champion)
    summary = {**result.counts, "data": result.data, "passed": result.passed}
    with tempfile.TemporaryDirectory(prefix="manymodels-eval-") as tmp:
        local = Path(tmp) / Path(artifact).name
        write_parquet(result.table, local)
        try:
            tracker.client.log_artifact(challenger.run_id, str(local), EVALUATION_FOLDER)
            tracker.client.set_tag(challenger.run_id, TAG + "evaluation", artifact)
            tracker.client.set_tag(challenger.run_id, TAG + "evaluation.summary", json.dumps(summary))
        except Exception as exc:
            raise RegistryError(f"cannot save the evaluation in run {challenger.run_id}: {exc}") from exc
    registry.ensure()
    version = challenger_version(registry, challenger)
    registry.set_alias(CHALLENGER, version.version)
    return artifact


def challenger_version(registry: ModelRegistry, run: RunInfo) -> VersionInfo:
    """The version serving a training run's own pack, registered on first use."""
    for version in registry.versions_of_run(run.run_id):
        if version.tags.get(TAG + "kind") == "run":
            return version
    segments = int(run.metrics.get("segments_ok", 0))
    return registry.register(
        run.run_id,
        f"{run.artifact_uri.rstrip('/')}/{PACK_PATH.split('/')[0]}",
        {
            TAG + "kind": "run",
            TAG + "segments": str(segments),
            TAG + "source_runs": run.run_id,
            TAG + "registered_by": current_user(),
        },
        description=f"training run {run.run_id} as it was trained",
    )


def load_evaluation(tracker: Tracker, challenger: RunInfo, champion: VersionInfo | None) -> pd.DataFrame | None:
    """The table saved by `evaluate` for this challenger against this champion, if there is one."""
    artifact = evaluation_artifact(champion)
    if challenger.tags.get(TAG + "evaluation") != artifact:
        return None
    with tempfile.TemporaryDirectory(prefix="manymodels-eval-") as tmp:
        try:
            local = tracker.client.download_artifacts(challenger.run_id, artifact, tmp)
        except Exception:  # noqa: BLE001 - a missing table is evaluated again
            return None
        return pd.read_parquet(local)
