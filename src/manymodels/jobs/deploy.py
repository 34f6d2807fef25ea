"""Deploy, destroy and summarise a bundle on a target: its experiments and registered models, and a record.

`deploy` creates the experiments and registered models the bundle declares in the target's
MLflow, tags them (bundle, target, git commit, a content hash of the resolved bundle) and
records the deployment (who, when, what) as a run of the target's deployment experiment.
Deploying again with nothing changed changes nothing. `destroy` removes what carries this
bundle's and target's tags, and nothing else. Deploys, destroys and job runs of one target
hold the target's lock, so they cannot interleave.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from manymodels import faults
from manymodels.errors import ManymodelsError, RegistryError
from manymodels.jobs.context import Target
from manymodels.registry.leases import LEASED, holders
from manymodels.registry.mlflow_env import mlflow_message
from manymodels.registry.provenance import current_user, git_branch, git_commit, git_dirty, git_on_branch
from manymodels.registry.run_state import STATUS_DEAD, TAG, run_status
from manymodels.registry.version_info import CHAMPION

if TYPE_CHECKING:
    from manymodels.registry.tracking import Tracker
    from manymodels.registry.versions import ModelRegistry

HASH = TAG + "bundle_hash"
RECORD = "bundle.json"


class DeployRefused(ManymodelsError):
    """A production deployment from a dirty tree or another branch than bundle.git.branch (without --force)."""

    exit_code = 2


@dataclass
class DeployOutcome:
    """What a deployment did: what it created or re-tagged, and its record (None when nothing changed)."""

    target: str
    bundle_hash: str
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    record_run: str | None = None

    @property
    def changed(self) -> bool:
        """Whether anything was created, re-tagged or recorded."""
        return bool(self.created or self.updated or self.record_run)


def bundle_hash(target: Target) -> str:
    """A content hash of the bundle as resolved for the target (what it declares, not how it is written)."""
    config = target.config
    text = config.resolved.model_dump_json()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def deployment_experiment(target: Target) -> str:
    """The experiment holding a target's deployment records."""
    config = target.config
    return f"{config.name}/{config.target}/{target.development_prefix()}deployments"


def target_lock(target: Target, tracker: Tracker) -> ModelRegistry:
    """The registry entry whose lock (`<bundle>.<target>.__target__.lock`) guards a target's deploys, destroys, runs."""
    config = target.config
    from manymodels.registry.versions import ModelRegistry

    return ModelRegistry(tracker, target.registry_name(f"{config.name}.{config.target}.__target__"))


@contextmanager
def holding_target(target: Target, purpose: str, force_lock: int = 0) -> Iterator[None]:
    """Hold the target's lock while `purpose` runs (a second deploy, destroy or run fails, naming the holder)."""
    tracker = target.tracker
    with target_lock(target, tracker).lock(purpose, force=force_lock):
        yield


def check_production(target: Target) -> list[str]:
    """Why a production deployment should not go ahead: uncommitted changes, another branch than bundle.git.branch.

    A detached HEAD (CI building a release tag) passes when its commit is on that branch, locally or at origin.
    """
    config = target.config
    if config.resolved.mode != "production":
        return []
    problems = []
    dirty = git_dirty(config.root, ignore=config.embedded_dir)  # the embedded store is scratch, not source
    if dirty is None:
        problems.append(f"{config.root} is not a git checkout: production deploys come from a commit")
    elif dirty:
        problems.append(f"the git tree has {len(dirty)} uncommitted change(s) (first: {dirty[0].strip()})")
    wanted = config.resolved.bundle.git.branch
    if not wanted or dirty is None:
        return problems
    branch = git_branch(config.root)
    if branch is None:  # a detached HEAD, as CI checks out a release tag: it must be a commit of the branch
        if not git_on_branch(config.root, wanted):
            problems.append(f"HEAD is detached at a commit that is not on {wanted!r} (bundle.git.branch)")
    elif branch != wanted:
        problems.append(f"on branch {branch}, but bundle.git.branch is {wanted!r}")
    return problems


def deploy(target: Target, force: bool = False, force_lock: int = 0) -> DeployOutcome:
    """Create and tag the target's experiments and registered models, and record the deployment.

    Raises:
        DeployRefused: production mode, dirty tree or wrong branch, without `force`.
        LockedError: another deploy, destroy or run of the target is going on.
    """
    config = target.config
    problems = check_production(target)
    if problems and not force:
        raise DeployRefused(f"target {config.target} is in production mode: " + "; ".join(problems) + " (--force)")
    tracker = target.tracker
    digest = bundle_hash(target)
    outcome = DeployOutcome(config.target, digest)
    tags = {
        TAG + "bundle": config.name,
        TAG + "target": config.target,
        HASH: digest,
        TAG + "git_commit": git_commit(config.root) or "",
    }
    with target_lock(target, tracker).lock("deploy", force=force_lock):
        for name in config.resolved.resources.models:
            _ensure_experiment(tracker, target.experiment(name), {**tags, TAG + "model": name}, outcome)
            _ensure_registered(target.registry(name), {**tags, TAG + "model": name}, outcome)
        faults.point("deploy.created")  # a test kills it here: models created, the deployment not yet recorded
        record_exp = _ensure_experiment(tracker, deployment_experiment(target), tags, outcome)
        latest = _latest_record(tracker, record_exp)
        if outcome.created or outcome.updated or latest is None or latest.data.tags.get(HASH) != digest:
            outcome.record_run = _record(tracker, record_exp, target, tags, outcome)
    return outcome


def _ensure_experiment(tracker: Tracker, name: str, tags: dict[str, str], outcome: DeployOutcome) -> str:
    from mlflow.exceptions import MlflowException  # imported by the commands that reach MLflow, not at start

    client = tracker.client
    try:
        existing = client.get_experiment_by_name(name)
        if existing is None:
            exp_id = tracker.experiment_id(name)
            assert exp_id is not None  # noqa: S101 - create=True always returns an id
            outcome.created.append(f"experiment {name}")
            stale = tags
        else:
            if existing.lifecycle_stage == "deleted":
                raise RegistryError(f"experiment {name!r} is deleted in {tracker.tracking_uri}; restore or purge it")
            exp_id = str(existing.experiment_id)
            stale = {k: v for k, v in tags.items() if existing.tags.get(k) != v}
            if stale:
                outcome.updated.append(f"experiment {name}")
        for key, value in stale.items():
            client.set_experiment_tag(exp_id, key, value)
    except MlflowException as exc:
        where = f"MLflow at {tracker.tracking_uri}"
        raise RegistryError(f"{where}: cannot deploy experiment {name!r}: {mlflow_message(exc)}") from exc
    return exp_id


def _ensure_registered(registry: ModelRegistry, tags: dict[str, str], outcome: DeployOutcome) -> None:
    from mlflow.exceptions import MlflowException  # imported by the commands that reach MLflow, not at start

    client = registry.client
    try:
        if not registry.exists():
            registry.ensure(tags=tags)
            outcome.created.append(f"registered model {registry.name}")
            return
        current = client.get_registered_model(registry.name).tags or {}
        stale = {k: v for k, v in tags.items() if current.get(k) != v}
        for key, value in stale.items():
            client.set_registered_model_tag(registry.name, key, value)
        if stale:
            outcome.updated.append(f"registered model {registry.name}")
    except MlflowException as exc:
        raise RegistryError(f"cannot deploy registered model {registry.name!r}: {mlflow_message(exc)}") from exc


def _latest_record(tracker: Tracker, exp_id: str) -> Any:
    from mlflow.exceptions import MlflowException  # imported by the commands that reach MLflow, not at start

    try:
        found = tracker.client.search_runs(
            [exp_id], f"tags.`{TAG}kind` = 'deploy'", order_by=["attributes.start_time DESC"], max_results=1
        )
    except MlflowException as exc:
        raise RegistryError(f"cannot read the deployment records: {mlflow_message(exc)}") from exc
    return found[0] if found else None


def _record(tracker: Tracker, exp_id: str, target: Target, tags: dict[str, str], outcome: DeployOutcome) -> str:
    """One run per deployment: who, when, what (the resolved bundle as an artifact, what changed)."""
    config = target.config
    run_tags = {
        **tags,
        TAG + "kind": "deploy",
        "mlflow.user": current_user(),
        TAG + "created": json.dumps(outcome.created)[:5000],
        TAG + "updated": json.dumps(outcome.updated)[:5000],
    }
    run_id, artifact_uri = tracker.start_run(exp_id, f"deploy-{time.strftime('%Y%m%d-%H%M%S')}", run_tags, {})
    with tracker.run_folder(run_id, artifact_uri) as folder:
        (folder.path / RECORD).write_text(config.resolved.model_dump_json(indent=2), encoding="utf-8")
        tracker.finish_run(run_id, {}, True, artifacts=folder.upload)
    return run_id


@dataclass
class DestroyPlan:
    """What `destroy` would remove: experiments (id, name) and registered models carrying the target's tags."""

    experiments: list[tuple[str, str]] = field(default_factory=list)
    registered_models: list[str] = field(default_factory=list)
    purged: bool = False  # their runs' files were removed from this machine (an embedded store)

    def lines(self) -> list[str]:
        """One line per thing removed."""
        return [f"experiment {name}" for _, name in self.experiments] + [
            f"registered model {name} (all its versions)" for name in self.registered_models
        ]


def destroy_plan(target: Target) -> DestroyPlan:
    """The experiments and registered models deploy (or training) made for this bundle on this target."""
    config = target.config
    tracker = target.tracker
    plan = DestroyPlan()
    mine = {TAG + "bundle": config.name, TAG + "target": config.target}
    names = [target.experiment(m) for m in config.resolved.resources.models] + [deployment_experiment(target)]
    for name in names:
        found = tracker.client.get_experiment_by_name(name)
        if found is not None and found.lifecycle_stage == "active" and _tagged(found.tags, mine):
            plan.experiments.append((str(found.experiment_id), name))
    for model in config.resolved.resources.models:
        registry = target.registry(model)
        if registry.exists() and _tagged(tracker.client.get_registered_model(registry.name).tags or {}, mine):
            plan.registered_models.append(registry.name)
    return plan


def _tagged(tags: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(tags.get(k) == v for k, v in wanted.items())


def destroy(
    target: Target, approve: Callable[[DestroyPlan], bool] | None = None, force_lock: int = 0
) -> DestroyPlan | None:
    """Remove what this bundle deployed on this target; returns what went, or None when `approve` said no.

    Experiments are renamed (so the names are free to deploy again) and deleted; registered
    models are deleted with their versions. On an embedded store the deleted experiments' runs and
    files are then removed from disk (MLflow's `gc`); a server keeps them until its operator runs
    `mlflow gc`.
    """
    from mlflow.exceptions import MlflowException  # imported by the commands that reach MLflow, not at start

    tracker = target.tracker
    with target_lock(target, tracker).lock("destroy", force=force_lock):
        plan = destroy_plan(target)
        busy = [] if force_lock else _busy(target, plan)
        if busy:
            raise RegistryError(
                f"destroy would lose work in progress: {'; '.join(busy[:3])}{' ...' if len(busy) > 3 else ''}; wait "
                "for it to end (a run or lock whose process is gone does not count), or give --force-lock"
            )
        if approve is not None and not approve(plan):
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        try:
            for name in plan.registered_models:
                tracker.client.delete_registered_model(name)
            for exp_id, name in plan.experiments:
                tracker.client.rename_experiment(exp_id, f"{name} (destroyed {stamp} {exp_id})")
                tracker.client.delete_experiment(exp_id)
        except MlflowException as exc:
            raise RegistryError(f"MLflow at {tracker.tracking_uri}: destroy stopped: {mlflow_message(exc)}") from exc
        plan.purged = tracker.purge(experiment_ids=[exp_id for exp_id, _ in plan.experiments])
        for model in target.config.resolved.resources.models:
            target.registry(model).drop_lock()  # a lock left by a process that died goes with the model
    return plan


def _busy(target: Target, plan: DestroyPlan) -> list[str]:
    """What destroying now would cut short: runs still running (their process alive, or on another host) or served
    by a live server (its lease) in the experiments to remove, and families whose lock a live process holds."""
    from mlflow.exceptions import MlflowException  # imported by the commands that reach MLflow, not at start

    tracker = target.tracker
    busy = []
    for exp_id, name in plan.experiments:
        try:
            running = tracker.client.search_runs([exp_id], "attributes.status = 'RUNNING'", max_results=50)
        except MlflowException as exc:
            raise RegistryError(f"MLflow at {tracker.tracking_uri}: cannot list runs: {mlflow_message(exc)}") from exc
        for run in running:
            if run_status(run.data.tags, run.info.status) != STATUS_DEAD:
                where = run.data.tags.get(TAG + "host", "?")
                busy.append(f"run {run.info.run_id} in {name} is running (pid {run.data.tags.get(TAG + 'pid', '?')} "
                            f"on {where})")
    # Served runs: in the experiments to remove, and in the models' own (their registered versions go).
    places = dict(plan.experiments)
    for experiment in sorted({target.experiment(m) for m in target.config.resolved.resources.models}):
        found = tracker.experiment_id(experiment, create=False)
        if found is not None:
            places.setdefault(found, experiment)
    for exp_id, name in places.items():
        try:
            leased = tracker.client.search_runs([exp_id], f"tags.`{LEASED}` = 'true'", max_results=1000)
        except MlflowException as exc:
            raise RegistryError(f"MLflow at {tracker.tracking_uri}: cannot list runs: {mlflow_message(exc)}") from exc
        for run in leased:
            held = holders(run.data.tags)
            if held:
                busy.append(f"run {run.info.run_id} in {name} is served by {', '.join(held)}")
    for model in target.config.resolved.resources.models:
        registry = target.registry(model)
        holder = registry.held_lock(live_only=True)
        if holder is not None:
            busy.append(f"{registry.name} is locked by {holder}")
    return busy


def summary(target: Target, runs: int = 3) -> dict[str, Any]:
    """The target at a glance: the resolved bundle, the last deployment, each model's champion and latest runs."""
    config = target.config
    tracker = target.tracker
    exp = tracker.experiment_id(deployment_experiment(target), create=False)
    record = _latest_record(tracker, exp) if exp is not None else None
    deployment = None
    if record is not None:
        tags = record.data.tags
        deployment = {
            "run_id": record.info.run_id,
            "by": tags.get("mlflow.user"),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.info.start_time / 1000)),
            "bundle_hash": tags.get(HASH),
            "git_commit": tags.get(TAG + "git_commit") or None,
            "current": tags.get(HASH) == bundle_hash(target),
        }
    models = {}
    for name in config.resolved.resources.models:
        registry = target.registry(name)
        champion = registry.by_alias(CHAMPION)
        latest = tracker.runs(target.experiment(name), name, limit=runs)
        models[name] = {
            "experiment": target.experiment(name),
            "registered_model": registry.name,
            "champion": {"version": champion.version, "segments": champion.segments} if champion else None,
            "lock": registry.held_lock(),
            "latest_runs": [
                {"run_id": r.run_id, "status": r.status, "segments_ok": int(r.metrics.get("segments_ok", 0))}
                for r in latest
            ],
        }
    return {
        "bundle": config.name,
        "target": config.target,
        "mode": config.resolved.mode,
        "tracking_uri": config.tracking_uri,
        "bundle_hash": bundle_hash(target),
        "deployment": deployment,
        "models": models,
        "lock": target_lock(target, tracker).held_lock(),
        "resolved": json.loads(config.resolved.model_dump_json()),
    }
