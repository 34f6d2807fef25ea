"""The evaluate task: a challenger run against the champion version, segment by segment, on the same rows.

Both packs predict the same evaluation rows, on the target's engine: each segment's holdout as
training split it (the same canonical order and seed), or every row of a fresh dataset given
with `data`. Only the per-segment table comes back from the engine. The table says who won and
what the bundle's `promotion` policy would do (`decide`); it is saved with the challenger's run,
where `promote` picks it up.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from manymodels.data import write_parquet
from manymodels.engines import Contender, Engine
from manymodels.engines.operations import EVAL_FINGERPRINT as FINGERPRINT_NOW  # each segment's rows as they are now
from manymodels.engines.operations import EVAL_ROWS
from manymodels.errors import DataError, RegistryError
from manymodels.jobs.context import Target, source_rows
from manymodels.jobs.decide import (
    CHALLENGER,
    CHAMPION,
    DECISION,
    HAS_CHAMPION,
    PROMOTE,
    RUN_ERROR,
    RUN_STATUS,
    SAME_MODEL,
    STATUS,
    STATUSES,
    TRAIN_ROWS,
    decide,
    gate_problems,
    worst_first,
)
from manymodels.jobs.pages import EVALUATION_FOLDER, evaluation_section, write_report
from manymodels.jobs.selection import BASIS, CV_CHALLENGER, CV_CHAMPION, cv_comparison
from manymodels.registry import Pack, RunInfo
from manymodels.registry import manifest as mf
from manymodels.registry.manifest import PackLayout
from manymodels.registry.provenance import current_user
from manymodels.registry.run_state import TAG
from manymodels.registry.version_info import CHALLENGER as CHALLENGER_ALIAS
from manymodels.registry.version_info import VersionInfo
from manymodels.report import Section
from manymodels.segment import SegmentSpec

if TYPE_CHECKING:  # MLflow's import waits until a command asks the registry
    from manymodels.registry.versions import ModelRegistry


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
        counts = {s: int((self.table[STATUS] == s).sum()) for s in STATUSES}
        counts["promote"] = int((self.table[DECISION] == PROMOTE).sum())
        return counts

    @property
    def unchanged(self) -> bool:
        """Whether every model of the challenger is the champion's own, carried over by a changed-only run.

        Then there is nothing to promote, and nothing wrong: a pipeline goes on (`promote` makes no version).
        """
        table = self.table
        if SAME_MODEL not in table.columns:
            return False
        ok = table[RUN_STATUS] == mf.OK
        return bool(ok.any() and table.loc[ok, SAME_MODEL].all())

    @property
    def passed(self) -> bool:
        """Whether the gate lets a promotion go ahead (it may have nothing to promote: see `nothing_to_promote`)."""
        return not self.problems

    @property
    def nothing_to_promote(self) -> bool:
        """Whether no segment's challenger would replace what serves it (not a failure by itself)."""
        return self.counts["promote"] == 0


def evaluation_artifact(champion: VersionInfo | None) -> str:
    """Where an evaluation against this champion is saved in the challenger's run."""
    return f"{EVALUATION_FOLDER}/vs-{'v' + str(champion.version) if champion else 'none'}.parquet"


def evaluate(
    target: Target,
    name: str,
    run_id: str | None = None,
    data: str | Path | Any = None,
    save: bool = True,
    engine: Engine | None = None,
) -> Evaluation:
    """Compare a training run (default: the latest successful) with the champion, per segment.

    Args:
        target: the bundle resolved for a target.
        name: the model family.
        run_id: the challenger run (default: the model's latest successful training run).
        data: evaluate on every row of this (a dataset name, a path, a frame) instead of the holdout.
        save: save the table with the challenger's run and point alias `challenger` at it.
        engine: the engine to score on (a job's); default: the target's, for this call.

    Raises:
        RegistryError: no training run to evaluate.
        DataError: the evaluation data lacks a column.
    """
    model = target.model(name)
    spec, dataset = target.training_spec(name)
    holdout = data is None
    source = dataset if holdout else target.source(data)
    with target.engine(engine) as running:
        # Workers import the model libraries while this process reads the registry (a small evaluation: one worker)
        running.start(rows=source_rows(source), overlap=True)
        challenger = target.resolve_run(name, run_id)
        if challenger.tags.get(TAG + "kind") != "train":
            raise RegistryError(f"run {challenger.run_id} is not a training run; evaluate takes a training run")
        registry = target.registry(name)
        champion = target.champion(name)
        champion_run = target.tracker.run(champion.run_id) if champion else None
        champion_pack = target.open_pack(champion_run) if champion_run else None
        challenger_pack = target.open_pack(challenger)
        described = f"holdout of {model.dataset}" if holdout else _described(data)
        columns = target.columns_of(source)
        missing = [c for c in spec.columns if columns is not None and c not in columns]
        if missing:
            raise DataError(f"{described}: lacks column(s) {', '.join(missing)} that evaluating {name!r} needs")
        metric = model.promotion_metric
        recorded = _shared_models(challenger_pack, champion_pack, list(spec.segment_by), metric)
        shared = recorded[list(spec.segment_by)]
        contenders = [Contender(CHALLENGER, target.reachable_pack(running, challenger, challenger_pack),
                                shared if holdout else None)]
        if champion_pack is not None and champion_run is not None:
            root = target.reachable_pack(running, champion_run, champion_pack)
            contenders.append(Contender(CHAMPION, root, shared))
        scored = running.evaluate(source, spec, metric, contenders, holdout)
    table = _table(scored, spec, challenger_pack, champion_pack, recorded, holdout)
    on_cv = model.promotion.basis == "cv" and metric == spec_metric(spec)
    table = _with_cv(table, spec, challenger_pack, champion_pack, on_cv)
    table = worst_first(decide(table, model, metric))
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
        result.warnings += _holdout_warnings(scored, spec, challenger_pack, champion_pack)
    if save:
        result.artifact = save_evaluation(target, registry, challenger, champion, result)
    return result


def spec_metric(spec: SegmentSpec) -> str | None:
    """The metric a run's folds were scored with (None without cross-validation)."""
    return spec.validation.metric if spec.validation is not None else None


def _with_cv(
    table: pd.DataFrame, spec: SegmentSpec, challenger: Pack, champion: Pack | None, on_cv: bool
) -> pd.DataFrame:
    """The table with the challenger's winner against the champion's configuration on the same folds, where the
    run scored it; with `on_cv`, those mean fold metrics are what `challenger` and `champion` compare."""
    keys_by = list(spec.segment_by)
    if mf.CANDIDATE in challenger.manifest.columns:  # which candidate each challenger model is
        table = table.merge(challenger.manifest[[*keys_by, mf.CANDIDATE, mf.N_TRAIN]], on=keys_by, how="left")
    compared = cv_comparison(challenger.manifest, champion.manifest if champion is not None else None, spec)
    if not len(compared):
        return table.drop(columns=[mf.N_TRAIN], errors="ignore").assign(**{BASIS: "holdout"})
    table = table.merge(compared, on=keys_by, how="left")
    use = np.zeros(len(table), dtype=bool)
    if on_cv:
        scored = np.isfinite(table[CV_CHAMPION].to_numpy(dtype=float))
        scored &= np.isfinite(table[CV_CHALLENGER].to_numpy(dtype=float))
        use = scored & ~table[SAME_MODEL].to_numpy(dtype=bool)
        table.loc[use, CHALLENGER] = table.loc[use, CV_CHALLENGER]
        table.loc[use, CHAMPION] = table.loc[use, CV_CHAMPION]
        # rows: the training rows the folds came from
        table.loc[use, EVAL_ROWS] = table.loc[use, mf.N_TRAIN].fillna(0).astype(np.int64)
    table[BASIS] = np.where(use, "cv", "holdout")
    return table.drop(columns=[mf.N_TRAIN])


def _described(data: Any) -> str:
    return str(data) if isinstance(data, str | Path) else "a data frame"


def _table(
    scored: pd.DataFrame,
    spec: SegmentSpec,
    challenger: Pack,
    champion: Pack | None,
    recorded: pd.DataFrame,
    holdout: bool,
) -> pd.DataFrame:
    """The engine's per-segment metrics joined with what each pack serves, one row per segment of either pack.

    A segment whose challenger model *is* the champion's (carried over by a changed-only run:
    same source run, same fingerprint) was scored once; on its holdout not at all, as the metric
    training recorded was computed on those very rows by that very model.
    """
    keys_by = list(spec.segment_by)
    evaluated = scored.drop(columns=[FINGERPRINT_NOW]).copy()
    if CHAMPION not in evaluated.columns:
        evaluated[CHAMPION] = np.nan
    same = evaluated[keys_by].merge(recorded, on=keys_by, how="left")
    is_same = same[SAME_MODEL].eq(True).to_numpy()
    if holdout:
        evaluated.loc[is_same, CHALLENGER] = same.loc[is_same, "_recorded"].to_numpy(dtype=float)
    if champion is not None:
        evaluated.loc[is_same, CHAMPION] = evaluated.loc[is_same, CHALLENGER].to_numpy(dtype=float)
    evaluated[SAME_MODEL] = is_same
    table = _served(challenger, keys_by).merge(evaluated, on=keys_by, how="outer")
    if champion is not None:
        table = table.merge(_served(champion, keys_by)[keys_by].assign(**{HAS_CHAMPION: True}), on=keys_by, how="outer")
    if HAS_CHAMPION not in table.columns:
        table[HAS_CHAMPION] = False
    table[HAS_CHAMPION] = table[HAS_CHAMPION].astype("boolean").fillna(False).astype(bool)
    table[EVAL_ROWS] = table[EVAL_ROWS].fillna(0).astype(np.int64)
    table[SAME_MODEL] = table[SAME_MODEL].astype("boolean").fillna(False).astype(bool)
    in_either = table[RUN_STATUS].notna().to_numpy() | table[HAS_CHAMPION].to_numpy()
    return table.loc[in_either].reset_index(drop=True)  # segments no model knows are for the fallback


def _shared_models(challenger: Pack, champion: Pack | None, keys_by: list[str], metric: str) -> pd.DataFrame:
    """Segments both packs serve with the same model: their keys, SAME_MODEL, the challenger's recorded metric."""
    manifest = challenger.manifest
    empty = manifest[keys_by].iloc[:0]
    if champion is None or mf.SOURCE_RUN not in manifest.columns or metric not in manifest.columns:
        return empty.assign(**{SAME_MODEL: pd.Series(dtype=bool), "_recorded": pd.Series(dtype=float)})
    mine = mf.served(manifest)[[*keys_by, mf.SOURCE_RUN, mf.FINGERPRINT, metric]]
    theirs = champion.manifest[[*keys_by, mf.SOURCE_RUN, mf.FINGERPRINT]]
    both = mine.merge(theirs, on=keys_by, how="inner", suffixes=("", "_champion"))
    same = (both[mf.SOURCE_RUN] == both[f"{mf.SOURCE_RUN}_champion"]) & (
        both[mf.FINGERPRINT] == both[f"{mf.FINGERPRINT}_champion"]
    )
    same = same.fillna(False).to_numpy(dtype=bool)
    recorded = both.loc[same, keys_by].assign(**{SAME_MODEL: True, "_recorded": both.loc[same, metric].to_numpy()})
    return recorded.reset_index(drop=True)


def _served(pack: Pack, keys_by: list[str]) -> pd.DataFrame:
    columns = [*keys_by, mf.STATUS, mf.ERROR, mf.ROWS]
    return pack.manifest[columns].rename(columns={mf.STATUS: RUN_STATUS, mf.ERROR: RUN_ERROR, mf.ROWS: TRAIN_ROWS})


def _holdout_warnings(scored: pd.DataFrame, spec: SegmentSpec, challenger: Pack, champion: Pack | None) -> list[str]:
    """Where a holdout comparison is not fair: rows changed since either side trained (by fingerprint).

    A random split of changed rows is a new split: some of today's holdout rows were training
    rows of the run that trained on the older rows, which flatters that run (the champion, as a
    rule). A time split is fair as long as the cutoff only moves forward.
    """
    if spec.split_by is not None:
        return []
    keys_by = list(spec.segment_by)
    current = scored[[*keys_by, FINGERPRINT_NOW]].rename(columns={FINGERPRINT_NOW: "_now"})
    warnings = []
    sides = [("the challenger", challenger)] + ([("the champion", champion)] if champion is not None else [])
    for who, pack in sides:
        ok = mf.served(pack.manifest)[[*keys_by, mf.FINGERPRINT]]
        both = current.merge(ok, on=keys_by, how="inner")
        rows_now = both["_now"].astype(str).str.split("-", n=1).str[1]  # a fingerprint is <spec>-<rows>-<hash>
        rows_then = both[mf.FINGERPRINT].astype(str).str.split("-", n=1).str[1]
        changed = int((rows_now != rows_then).sum())
        if changed:
            warnings.append(
                f"{changed:,} segment(s) have other rows than {who} trained on: with a random split their holdout "
                f"includes rows {who} trained on, which flatters it; evaluate on fresh rows (--data) or split by time"
            )
    return warnings


def save_evaluation(
    target: Target, registry: ModelRegistry, challenger: RunInfo, champion: VersionInfo | None, result: Evaluation
) -> str:
    """Log the table in the challenger's run, tag the run, and point alias `challenger` at its version."""
    tracker = target.tracker
    artifact = evaluation_artifact(champion)
    summary = {**result.counts, "data": result.data, "passed": result.passed}
    with tempfile.TemporaryDirectory(prefix="manymodels-eval-") as tmp:
        local = Path(tmp) / Path(artifact).name
        write_parquet(result.table, local)
        page = write_report(local.with_suffix(".html"), result.model, "evaluation",
                            lambda: [evaluation_report(target, result)], result.warnings.append)
        try:
            tracker.client.log_artifact(challenger.run_id, str(local), EVALUATION_FOLDER)
            if page is not None:
                tracker.client.log_artifact(challenger.run_id, str(page), EVALUATION_FOLDER)
            tracker.client.set_tag(challenger.run_id, TAG + "evaluation", artifact)
            tracker.client.set_tag(challenger.run_id, TAG + "evaluation.summary", json.dumps(summary))
        except Exception as exc:
            raise RegistryError(f"cannot save the evaluation in run {challenger.run_id}: {exc}") from exc
    registry.ensure()
    version = challenger_version(registry, challenger)
    registry.set_alias(CHALLENGER_ALIAS, version.version)
    return artifact


def evaluation_report(target: Target, result: Evaluation) -> Section:
    """The evaluation's section of a report: what was compared on which rows, and the per-segment verdict."""
    champion = "none yet"
    if result.champion_version is not None:
        champion = f"version {result.champion_version} (run {result.champion_run})"
    facts = [("challenger run", result.challenger_run), ("champion", champion), ("evaluated on", result.data),
             ("gate", "passed" if result.passed else "failed"), ("target", target.name)]
    section = evaluation_section(result.table, list(target.model(result.model).segment_by), result.metric,
                                 f"Evaluation: challenger vs champion ({result.metric})", facts)
    section.notes += [*result.problems, *result.warnings]
    return section


def challenger_version(registry: ModelRegistry, run: RunInfo) -> VersionInfo:
    """The version serving a training run's own pack, registered on first use."""
    for version in registry.versions_of_run(run.run_id):
        if version.tags.get(TAG + "kind") == "run":
            return version
    segments = int(run.metrics.get("segments_ok", 0))
    return registry.register(
        run.run_id,
        f"{run.artifact_uri.rstrip('/')}/{PackLayout.MODEL}",
        {
            TAG + "kind": "run",
            TAG + "segments": str(segments),
            TAG + "source_runs": run.run_id,
            TAG + "registered_by": current_user(),
        },
        description=f"training run {run.run_id} as it was trained",
    )


def load_evaluation(target: Target, challenger: RunInfo, champion: VersionInfo | None) -> pd.DataFrame | None:
    """The table saved by `evaluate` for this challenger against this champion, if there is one."""
    tracker = target.tracker
    artifact = evaluation_artifact(champion)
    if challenger.tags.get(TAG + "evaluation") != artifact:
        return None
    with tempfile.TemporaryDirectory(prefix="manymodels-eval-") as tmp:
        try:
            local = tracker.client.download_artifacts(challenger.run_id, artifact, tmp)
        except Exception:  # noqa: BLE001 - a missing table is evaluated again
            return None
        return pd.read_parquet(local)
