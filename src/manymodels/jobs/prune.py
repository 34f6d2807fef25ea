"""`manymodels gc`: remove a model family's old runs, keeping what serves and the newest few.

Every training run is a whole pack (hundreds of MB at 10,000 segments), and every promotion
writes a composite pack of its own, so a weekly pipeline grows the store by a pack or two a
week. `gc` keeps the runs behind an alias (`champion`, `previous`, `challenger`) and the
`keep` newest training runs, and the runs a live server holds (its lease); the other runs, and the registered
versions that serve them, go.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from manymodels.errors import RegistryError
from manymodels.jobs.context import Target
from manymodels.registry import RunInfo
from manymodels.registry.leases import holders
from manymodels.registry.mlflow_env import mlflow_message
from manymodels.registry.references import REFERS_TAG
from manymodels.registry.run_state import STATUS_DEAD, is_run_id
from manymodels.registry.version_info import VersionInfo

_SEARCH_LIMIT = 10_000


@dataclass
class PrunePlan:
    """What `gc` keeps (run id -> why) and removes (runs, and the versions that serve them)."""

    model: str
    kept: dict[str, str] = field(default_factory=dict)
    runs: list[RunInfo] = field(default_factory=list)
    versions: list[VersionInfo] = field(default_factory=list)
    purged: bool = False  # the runs' files were removed here (an embedded store), not left to a server

    def lines(self) -> list[str]:
        """One line per thing to remove."""
        return [f"run {r.run_id} ({r.tags.get('manymodels.kind', 'train')}"
                f"{', dead: its process was killed before it finished' if r.status == STATUS_DEAD else ''})"
                for r in self.runs] + [
            f"version {v.version} of {v.name}" for v in self.versions
        ]


def prune_plan(target: Target, name: str, keep: int) -> PrunePlan:
    """The runs of `name` that `gc` would remove: not behind an alias, older than the `keep` newest training runs.

    Runs still running are never removed.
    """
    tracker = target.tracker
    registry = target.registry(name)
    versions = registry.versions() if registry.exists() else []
    plan = PrunePlan(name)
    for version in versions:
        for alias in version.aliases:
            plan.kept.setdefault(version.run_id, f"version {version.version} ({alias})")
    experiment = target.experiment(name)
    trained = tracker.runs(experiment, name, limit=_SEARCH_LIMIT)
    for run in trained[:keep]:
        plan.kept.setdefault(run.run_id, "one of the newest training runs")
    promoted = tracker.runs(experiment, name, limit=_SEARCH_LIMIT, kind="promote")
    listed = {r.run_id: r for r in [*trained, *promoted]}
    for run in listed.values():  # a live server reads its files: they stay while it lives
        held = holders(run.tags)
        if held:
            plan.kept.setdefault(run.run_id, f"served by {', '.join(held)}")
    for run_id in list(plan.kept):  # a kept run's pack may refer to another's shards (a changed-only run's)
        info = listed.get(run_id)
        for other in (info.tags.get(REFERS_TAG, "") if info is not None else "").split(","):
            if other and other != run_id:
                plan.kept.setdefault(other, f"its models are carried by reference by run {run_id}")
    finished = [r for r in listed.values() if r.end_time is not None and r.status != "running"]
    plan.runs = [r for r in finished if r.run_id not in plan.kept]
    # A promotion killed before it finished: a partial pack no version serves and nothing resumes.
    plan.runs += [r for r in promoted if r.status == STATUS_DEAD and r.end_time is None and r.run_id not in plan.kept]
    gone = {r.run_id for r in plan.runs}
    plan.versions = [v for v in versions if v.run_id in gone and not v.aliases]
    return plan


def prune(
    target: Target,
    name: str,
    keep: int = 5,
    approve: Callable[[PrunePlan], bool] | None = None,
    force_lock: int = 0,
) -> PrunePlan | None:
    """Remove the old runs of a model family (see `prune_plan`); None when `approve` said no.

    Holds the family's lock, so no promotion moves an alias meanwhile. On an embedded store the
    runs' files are removed from disk at once; on a server they are deleted as MLflow deletes
    (its operator's `mlflow gc` frees their artifacts).
    """
    registry = target.registry(name)
    with registry.lock("gc", force=force_lock):
        plan = prune_plan(target, name, keep)
        if approve is not None and not approve(plan):
            return None
        plan.purged = remove_runs(target, name, plan.runs, plan.versions)
    return plan


def remove_dead_promotions(target: Target, name: str) -> list[str]:
    """Remove the runs of promotions of `name` killed before they finished (a partial pack no version serves), with
    their files; called under the model's lock, so no live promotion is writing one. Returns their ids."""
    dead = [r for r in target.tracker.runs(target.experiment(name), name, limit=_SEARCH_LIMIT, kind="promote")
            if r.status == STATUS_DEAD and r.end_time is None]
    if not dead:  # the usual case: no registry read, no store purge on every promotion
        return []
    registry = target.registry(name)
    registered = {v.run_id for v in registry.versions()} if registry.exists() else set()
    dead = [r for r in dead if r.run_id not in registered]
    remove_runs(target, name, dead, [])
    return [r.run_id for r in dead]


def remove_runs(target: Target, name: str, runs: list[RunInfo], versions: list[VersionInfo]) -> bool:
    """Delete versions and runs; on an embedded store their files go at once (a server's operator runs `mlflow gc`).
    Returns whether files were removed here."""
    from mlflow.exceptions import MlflowException  # imported by the commands that reach MLflow, not at start

    tracker = target.tracker
    try:
        for version in versions:
            tracker.client.delete_model_version(version.name, str(version.version))
        for run in runs:
            tracker.client.delete_run(run.run_id)
    except MlflowException as exc:
        raise RegistryError(f"MLflow at {tracker.tracking_uri}: gc stopped: {mlflow_message(exc)}") from exc
    purged: list[str] = []
    removed = False
    if tracker.holds_files_here:  # this and any earlier gc's deleted runs: their files go now
        purged = tracker.deleted_runs(target.experiment(name), name)
        removed = tracker.purge(run_ids=purged)
    for run_id in {*purged, *(r.run_id for r in runs)}:
        if is_run_id(run_id):  # ids from MLflow, checked before they name a folder
            shutil.rmtree(target.config.embedded_dir / "cache" / run_id, ignore_errors=True)  # downloaded packs
            _remove_empty(target, run_id)
    return removed


def _remove_empty(target: Target, run_id: str) -> None:
    """The empty folder MLflow's gc leaves where an embedded run's artifacts were."""
    root = target.config.embedded_artifacts
    if root is None or not root.is_dir():
        return
    for folder in root.glob(f"*/{run_id}"):
        if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
            shutil.rmtree(folder, ignore_errors=True)
