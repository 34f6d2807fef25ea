"""Promote and roll back: the champion version of a model family, per-segment composite packs.

A promotion writes a new pack taking, per segment, the challenger's model where the
evaluation says promote and the champion's elsewhere, logs it as one MLflow run (kind
`promote`), registers it as a version, and moves alias `champion` to it last, so a promotion
that fails on the way leaves the old champion serving. The old champion keeps alias
`previous`; `rollback` moves `champion` back without retraining anything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from manymodels import faults
from manymodels.data import write_parquet
from manymodels.engines import Engine
from manymodels.errors import GateError, RegistryError
from manymodels.jobs.context import Target
from manymodels.jobs.decide import CHALLENGER as CHALLENGER_METRIC
from manymodels.jobs.decide import DECISION, PROMOTE, REASON, gate_problems
from manymodels.jobs.evaluate import Evaluation, evaluate, load_evaluation
from manymodels.jobs.pages import PROMOTION_TABLE, evaluation_section, run_facts, training_sections, write_report
from manymodels.jobs.prune import remove_dead_promotions
from manymodels.registry import Pack
from manymodels.registry import manifest as mf
from manymodels.registry.compose import compose_pack
from manymodels.registry.manifest import PackLayout
from manymodels.registry.pack_info import FORECAST, TIME
from manymodels.registry.provenance import current_user
from manymodels.registry.pyfunc import describe_model, save_pack_model
from manymodels.registry.run_state import TAG
from manymodels.registry.signing import SignatureError
from manymodels.registry.version_info import CHAMPION, COMPLETE, PREVIOUS, VersionInfo
from manymodels.report import REPORT_FILE, Section
from manymodels.segment.spec import ForecastPlan

if TYPE_CHECKING:  # MLflow's import waits until a command asks the registry
    from manymodels.registry.versions import ModelRegistry


@dataclass
class PromoteOutcome:
    """What a promotion did: the new champion version (None when nothing won), where each segment came from."""

    model: str
    registered_model: str
    version: int | None
    previous: int | None
    challenger_run: str
    promoted: int
    kept: int
    run_id: str | None = None
    evaluation: Evaluation | None = None
    sources: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether a new version became champion."""
        return self.version is not None


@dataclass
class RollbackOutcome:
    """Which version served before and which serves now."""

    model: str
    registered_model: str
    before: int
    after: int


def promote(
    target: Target,
    name: str,
    run_id: str | None = None,
    take_all: bool = False,
    force_lock: int = 0,
    force: bool = False,
    engine: Engine | None = None,
) -> PromoteOutcome:
    """Make a new champion version: the challenger where it won, the champion elsewhere.

    Args:
        target: the bundle resolved for a target.
        name: the model family.
        run_id: the challenger training run (default: the latest successful one).
        take_all: take every segment the challenger has a model for, whatever the evaluation says.
        force_lock: break a lock left by a promotion that died.
        force: promote the segments that won even when the evaluation's gate failed.
        engine: the engine to evaluate on when no evaluation was saved (a job's); default: the target's.

    Raises:
        GateError: the evaluation's gate failed (and not `force`): nothing was promoted.
        LockedError: another promotion or rollback of this model is running.
        RegistryError: nothing to promote from, or MLflow refused a step (the champion is unchanged).
    """
    registry = target.registry(name)
    registry.ensure(tags={TAG + "bundle": target.config.name, TAG + "target": target.name, TAG + "model": name})
    with registry.lock("promote", force=force_lock):
        cleaned = _remove_incomplete(registry)
        dead = remove_dead_promotions(target, name)
        champion = registry.by_alias(CHAMPION)
        challenger = target.resolve_run(name, run_id)
        challenger_pack = target.open_pack(challenger)
        refused, was = None, champion.version if champion else None
        try:
            champion_pack = target.open_pack(target.tracker.run(champion.run_id)) if champion else None
        except SignatureError as exc:  # never composed into a signed version: that would vouch for its models
            if not take_all:
                raise SignatureError(f"{exc}; `promote --all` replaces champion version {was} with the challenger "
                                     "alone", unsigned=exc.unsigned) from None
            champion_pack, refused = None, str(exc)
        keys = list(challenger_pack.segment_by)
        evaluation = None
        if take_all:
            table = mf.served(challenger_pack.manifest)[keys].copy()
            table[DECISION], table[REASON] = PROMOTE, "promote --all"
        else:
            table = load_evaluation(target, challenger, champion)
            if table is None:
                evaluation = evaluate(target, name, run_id=challenger.run_id, engine=engine)
                table = evaluation.table
            problems = gate_problems(table, target.model(name))
            if problems and not force:
                raise GateError(
                    f"the promotion gate failed for run {challenger.run_id}: {'; '.join(problems)}; nothing was "
                    "promoted (look at `manymodels evaluate`'s table; `promote --force` promotes the winners anyway)"
                )
        chosen = table.loc[table[DECISION] == PROMOTE, [*keys, REASON]]
        parts = [(challenger_pack, _rows_of(challenger_pack, chosen, keys))]
        if champion_pack is not None:
            kept = _rows_not_in(champion_pack.manifest, chosen, keys)
            kept[REASON] = "kept from the champion"
            parts.append((champion_pack, kept))
        outcome = PromoteOutcome(
            model=name,
            registered_model=registry.name,
            version=None,
            previous=champion.version if champion else None,
            challenger_run=challenger.run_id,
            promoted=len(parts[0][1]),
            kept=len(parts[1][1]) if len(parts) > 1 else 0,
            evaluation=evaluation,
        )
        outcome.warnings += [
            f"removed version {v} of {registry.name!r}: a promotion that died before its aliases moved left it"
            for v in cleaned
        ]
        outcome.warnings += [f"removed run {r}: a promotion killed before it finished left it (a partial pack)"
                             for r in dead]
        if refused is not None:
            outcome.warnings.append(f"no segment is kept from champion version {was} (its pack is refused: {refused}): "
                                    "the challenger alone serves")
        if outcome.promoted == 0:
            return outcome  # nothing won: the champion stays as it is
        _register(target, name, registry, champion, challenger_pack, parts, table, outcome)
    return outcome


def _rows_of(pack: Pack, chosen: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return mf.served(pack.manifest).merge(chosen, on=keys, how="inner")


def _rows_not_in(manifest: pd.DataFrame, chosen: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    marked = manifest.merge(chosen[keys].assign(_chosen=True), on=keys, how="left")
    return marked.loc[marked["_chosen"].isna()].drop(columns="_chosen")


def composite_plan(plans: list[ForecastPlan]) -> ForecastPlan:
    """The plan of a pack whose segments were trained with these plans (the challenger's first): each segment
    forecasts with its own (its model keeps it); the pack's names every known and static feature any of them reads,
    and the shortest horizon, which all of them were measured for.

    Raises:
        RegistryError: the plans put times on different grids (another time column or freq).
    """
    first = plans[0]
    for other in plans[1:]:
        if other.grid_key != first.grid_key:
            raise RegistryError(
                f"the challenger forecasts on {first.time!r} by {first.freq}, the champion on {other.time!r} by "
                f"{other.freq}: one pack cannot hold both; promote every segment of the challenger (--all)"
            )
    known = list(dict.fromkeys(c for p in plans for c in p.known))
    static = list(dict.fromkeys(c for p in plans for c in p.static))
    return replace(first, known=tuple(known), static=tuple(static), horizon=min(p.horizon for p in plans))


def _register(
    target: Target,
    name: str,
    registry: ModelRegistry,
    champion: VersionInfo | None,
    challenger: Pack,
    parts: list[tuple[Pack, pd.DataFrame]],
    table: pd.DataFrame,
    outcome: PromoteOutcome,
) -> None:
    tracker = target.tracker
    exp_id = tracker.experiment_id(target.experiment(name))
    assert exp_id is not None  # noqa: S101 - create=True always returns an id
    tags = {
        TAG + "bundle": target.config.name,
        TAG + "target": target.name,
        TAG + "model": name,
        TAG + "kind": "promote",
        TAG + "challenger_run": outcome.challenger_run,
        "mlflow.user": current_user(),
    }
    params = {
        "challenger_run": outcome.challenger_run,
        "champion_version": champion.version if champion else "none",
        "registered_model": registry.name,
    }
    before = registry.by_alias(PREVIOUS)  # put back if this promotion stops after moving it
    run_id, artifact_uri = tracker.start_run(exp_id, f"{name}-promote-{time.strftime('%Y%m%d-%H%M%S')}", tags, params)
    outcome.run_id = run_id
    with tracker.run_folder(run_id, artifact_uri) as folder:
        # Self-contained like a training run's model: the project's estimator code, a signature, an example.
        model_dir = folder.path / PackLayout.MODEL
        spec = target.segment_spec(name, challenger.info.features)
        pack_dir = save_pack_model(model_dir, code=target.estimator_code(spec),
                                   packages=target.model_packages(spec))
        # A seasonal baseline on either side keeps the time column among the pack's inputs.
        extra: dict[str, object] = {k: v for pack, _ in parts for k, v in pack.info.extra.items() if k == TIME}
        info = replace(challenger.info, run_id=run_id, extra={**extra, "kind": "composite"})
        plans = [pack.plan for pack, rows in parts if pack.plan is not None and len(rows)]
        if plans:  # a forecast: the plan every kept segment's forecast can start from
            plan = composite_plan(plans)
            info = replace(info, features=list(plan.known), extra={**info.extra, FORECAST: asdict(plan)})
        example = target.example_rows(name, info.inputs)
        if example is not None:
            describe_model(model_dir, example, forecast=bool(plans))
        manifest = compose_pack(pack_dir, info, parts, fallback_from=[pack for pack, _ in parts])
        faults.point("promote.composed")
        write_parquet(table, folder.path / PROMOTION_TABLE)
        sources = manifest[mf.SOURCE_RUN].value_counts().to_dict()
        outcome.sources = {str(k): int(v) for k, v in sources.items()}
        summary = {"segments_promoted": float(outcome.promoted), "segments_kept": float(outcome.kept)}
        _write_promotion_report(folder.path / REPORT_FILE, target, name, spec.metric, run_id, manifest, table, outcome,
                                champion)
        tracker.finish_run(run_id, summary, True, artifacts=folder.upload, tags={TAG + "segments": str(len(manifest))})
        registered = registry.register(
            run_id,
            f"{artifact_uri.rstrip('/')}/{PackLayout.MODEL}",
            {
                TAG + "kind": "composite",
                TAG + "segments": str(len(manifest)),
                TAG + "promoted": str(outcome.promoted),
                TAG + "kept": str(outcome.kept),
                TAG + "challenger_run": outcome.challenger_run,
                TAG + "source_runs": json.dumps(outcome.sources)[:5000],
                TAG + "registered_by": current_user(),
                TAG + "previous_version": str(champion.version) if champion else "",
                COMPLETE: "false",  # until the aliases moved: a promotion that dies before leaves it marked
                PRIOR_PREVIOUS: str(before.version) if before else "",  # what `previous` was, for the next promote
            },
            description=f"{outcome.promoted} segment(s) from run {outcome.challenger_run}, {outcome.kept} kept",
        )
        faults.point("promote.registered")
        try:
            if champion is not None:
                registry.set_alias(PREVIOUS, champion.version)
            faults.point("promote.previous_moved")
            registry.set_alias(CHAMPION, registered.version)  # the commit point: from here the new version serves
        except BaseException:
            # registered but never champion: nothing half-done stays, and `previous` is what it was
            if before is not None:
                _best_effort(lambda: registry.set_alias(PREVIOUS, before.version))
            else:
                registry.delete_alias(PREVIOUS)
            registry.delete_version(registered.version)
            raise
        registry.set_tag(registered.version, COMPLETE, "true")
        outcome.version = registered.version


PRIOR_PREVIOUS = TAG + "prior_previous"  # a version tag: alias `previous` before its promotion moved it


def _best_effort(step: Callable[[], None]) -> None:
    try:
        step()
    except Exception:  # noqa: BLE001, S110 - the error being handled is the one to report
        pass


def _remove_incomplete(registry: ModelRegistry) -> list[int]:
    """Delete the versions a promotion registered but died before making champion (tagged incomplete, holding no
    alias); called under the lock, so no live promotion is finishing one. Returns their numbers."""
    removed = []
    for version in registry.versions():
        if version.tags.get(COMPLETE) == "false" and not version.aliases:
            aliases = registry.aliases() or {}
            prior = version.tags.get(PRIOR_PREVIOUS)
            if prior is not None and CHAMPION in aliases and aliases.get(PREVIOUS) == aliases[CHAMPION]:
                # it died after moving `previous` onto the champion: the real previous comes back
                if prior:
                    registry.set_alias(PREVIOUS, int(prior))
                else:
                    registry.delete_alias(PREVIOUS)
            registry.delete_version(version.version)
            removed.append(version.version)
    return removed


def rollback(target: Target, name: str, to: int | None = None, force_lock: int = 0) -> RollbackOutcome:
    """Point `champion` back at an earlier version (default: the one with alias `previous`).

    The version that served until now takes alias `previous`, so a second rollback undoes the first.

    Raises:
        RegistryError: no champion, no such version, or no previous version to go back to.
    """
    registry = target.registry(name)
    with registry.lock("rollback", force=force_lock):
        _remove_incomplete(registry)  # a promotion killed half-way may have left `previous` on the champion
        aliases = registry.aliases()
        if not aliases or CHAMPION not in aliases:
            raise RegistryError(f"registered model {registry.name!r} has no champion to roll back")
        current = aliases[CHAMPION]
        if to is None:
            if PREVIOUS not in aliases:
                raise RegistryError(
                    f"registered model {registry.name!r} has no previous champion; name a version with --to"
                )
            to = aliases[PREVIOUS]
        if to == current:
            raise RegistryError(f"version {to} of {registry.name!r} is already the champion")
        version = registry.get(to)  # it exists
        if version.tags.get(COMPLETE) == "false":
            raise RegistryError(f"version {to} of {registry.name!r} is an unfinished promotion's; it never served")
        try:  # its models must still be there before it serves again
            target.open_pack(target.tracker.run(version.run_id)).verify()
        except RegistryError as exc:
            raise RegistryError(
                f"version {to} of {registry.name!r} cannot serve: {exc}; nothing was changed (the champion is still "
                f"version {current})"
            ) from exc
        registry.set_alias(PREVIOUS, current)
        registry.set_alias(CHAMPION, to)
        registry.set_tag(to, TAG + "rolled_back_from", f"{current} by {current_user()} at {_now()}")
    return RollbackOutcome(name, registry.name, current, to)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def models_overview(target: Target) -> list[dict[str, object]]:
    """Every model family of the bundle: registered model, champion version and its segments, latest run."""
    rows: list[dict[str, object]] = []
    for name in target.config.resolved.resources.models:
        registry = target.registry(name)
        versions = registry.versions()
        champion = next((v for v in versions if CHAMPION in v.aliases), None)
        latest = target.tracker.runs(target.experiment(name), name, only_ok=True, limit=1)
        rows.append(
            {
                "model": name,
                "registered_model": registry.name,
                "champion": champion.version if champion else None,
                "segments": champion.segments if champion else None,
                "versions": len(versions),
                "latest_run": latest[0].run_id if latest else None,
            }
        )
    return rows


def champion_sources(target: Target, name: str) -> dict[str, int]:
    """How many of the champion's segments each training run supplied ({} without a champion)."""
    champion = target.champion(name)
    if champion is None:
        return {}
    if champion.tags.get(TAG + "kind") == "run":
        return {champion.run_id: champion.segments}
    try:
        sources = json.loads(champion.tags.get(TAG + "source_runs") or "{}")
    except ValueError:  # cut at 5,000 characters for a very mixed composite
        return {}
    return {str(run): int(count) for run, count in sources.items()}


def model_versions(target: Target, name: str) -> tuple[str, list[VersionInfo]]:
    """A model family's registered model name and its versions, newest first."""
    registry = target.registry(name)
    return registry.name, registry.versions()


def _write_promotion_report(path: Path, target: Target, name: str, metric: str, run_id: str, manifest: pd.DataFrame,
                            table: pd.DataFrame, outcome: PromoteOutcome, champion: VersionInfo | None) -> None:
    """The new champion's fleet (where each segment's model comes from) and the evaluation that decided it."""
    model = target.model(name)
    before = f"version {champion.version}" if champion else "none"
    facts = run_facts(run_id, time.time(), target.name, [
        ("model", name), ("challenger run", outcome.challenger_run), ("champion before", before),
        ("segments promoted", f"{outcome.promoted:,}"), ("segments kept", f"{outcome.kept:,}"),
    ])

    def sections() -> list[Section]:
        parts = training_sections(manifest, list(model.segment_by), metric, facts)
        if CHALLENGER_METRIC in table.columns and DECISION in table.columns:
            parts.append(evaluation_section(table, list(model.segment_by), metric, "The evaluation it followed", []))
        return parts

    write_report(path, name, "promotion", sections, outcome.warnings.append)
