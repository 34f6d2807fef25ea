"""deploy / destroy / summary against a real `mlflow server`, read back with MLflow's own client."""

from __future__ import annotations

import json
import socket
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from helpers import edit_bundle, git, model_block, segment_frame, write_bundle
from manymodels.cli.main import app
from manymodels.registry import Tracker
from manymodels.registry.version_info import LockedError
from manymodels.registry.versions import ModelRegistry

runner = CliRunner()


def cli(root: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--bundle", str(root), *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def two_targets(root: Path, uri: str) -> Path:
    path = write_bundle(root, frame=segment_frame(segments=3, rows=40), tracking_uri=uri,
                        models={"demand": model_block(), "price": model_block()},
                        extra={"bundle": {"name": f"dep-{root.name[-12:]}"}})
    edit_bundle(path, lambda doc: doc["targets"].update(staging={"tracking_uri": uri}))
    return path


@pytest.mark.slow
def test_deploy_redeploy_second_target_destroy(tmp_path: Path, mlflow_server: str) -> None:
    path = two_targets(tmp_path, mlflow_server)
    client = MlflowClient(mlflow_server)
    code, out = cli(tmp_path, "deploy", "-t", "dev")
    assert code == 0, out
    bundle = f"dep-{tmp_path.name[-12:]}"
    for model in ("demand", "price"):
        exp = client.get_experiment_by_name(f"{bundle}/dev/{model}")
        assert exp is not None and exp.tags["manymodels.target"] == "dev"
        assert len(exp.tags["manymodels.bundle_hash"]) == 16
        reg = client.get_registered_model(f"{bundle}.dev.{model}")
        assert reg.tags["manymodels.bundle"] == bundle and reg.tags["manymodels.model"] == model
    records = client.search_runs([client.get_experiment_by_name(f"{bundle}/dev/deployments").experiment_id])
    assert len(records) == 1 and records[0].data.tags["manymodels.kind"] == "deploy"
    assert records[0].data.tags["mlflow.user"]

    code, out = cli(tmp_path, "deploy", "-t", "dev")  # nothing changed: nothing happens
    assert code == 0 and "nothing changed" in out, out
    assert len(client.search_runs([records[0].info.experiment_id])) == 1

    code, out = cli(tmp_path, "deploy", "-t", "staging")  # same server, its own everything
    assert code == 0, out
    assert client.get_registered_model(f"{bundle}.staging.demand").tags["manymodels.target"] == "staging"

    code, out = cli(tmp_path, "summary", "-t", "dev", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["deployment"]["current"] is True and report["target"] == "dev"
    assert report["models"]["demand"]["registered_model"] == f"{bundle}.dev.demand"
    assert report["resolved"]["target"] == "dev"

    edit_bundle(path, lambda doc: doc["resources"]["models"]["demand"].update(min_rows=7))
    code, out = cli(tmp_path, "summary", "-t", "dev", "--json")
    assert json.loads(out)["deployment"]["current"] is False  # the bundle changed since
    code, out = cli(tmp_path, "deploy", "-t", "dev")
    assert code == 0 and "re-tagged" in out, out
    assert len(client.search_runs([records[0].info.experiment_id])) == 2

    code, out = cli(tmp_path, "destroy", "-t", "dev")  # asks first; no answer is no
    assert code == 1 and "nothing removed" in out, out
    assert client.get_experiment_by_name(f"{bundle}/dev/demand").lifecycle_stage == "active"
    code, out = cli(tmp_path, "destroy", "-t", "dev", "--auto-approve")
    assert code == 0, out
    assert client.get_experiment_by_name(f"{bundle}/dev/demand") is None
    assert client.search_registered_models(f"name = '{bundle}.dev.demand'") == []
    staging = client.get_experiment_by_name(f"{bundle}/staging/demand")  # the other target is intact
    assert staging is not None and staging.lifecycle_stage == "active"
    assert client.get_registered_model(f"{bundle}.staging.price") is not None
    code, out = cli(tmp_path, "deploy", "-t", "dev")  # and the names are free again
    assert code == 0, out


@pytest.mark.slow
def test_a_second_deploy_or_run_while_one_holds_the_target_fails_naming_the_holder(
        tmp_path: Path, mlflow_server: str) -> None:
    two_targets(tmp_path, mlflow_server)
    bundle = f"dep-{tmp_path.name[-12:]}"
    lock = ModelRegistry(Tracker(mlflow_server), f"{bundle}.dev.__target__")
    with lock.lock("deploy"):
        code, out = cli(tmp_path, "deploy", "-t", "dev")
        assert code == 1 and "is locked by" in out and "deploy, since" in out, out
        code, out = cli(tmp_path, "run", "weekly", "-t", "dev")
        assert code == 1 and "is locked by" in out, out
        code, out = cli(tmp_path, "deploy", "-t", "staging")  # another target is free
        assert code == 0, out
    with lock.lock("deploy"):  # held by a live process here: --force-lock once refuses, twice breaks it
        code, out = cli(tmp_path, "deploy", "-t", "dev", "--force-lock")
        assert code == 1 and "still running on this host" in out and "--force-lock twice" in out, out
        code, out = cli(tmp_path, "deploy", "-t", "dev", "--force-lock", "--force-lock")
    assert code == 0, out

    # a lock left by a process that died on this host is taken over; one from another host needs --force-lock once
    dead = subprocess.Popen(["true"])  # noqa: S607 - a process that is gone once waited for
    dead.wait()
    lock_name = f"{bundle}.dev.__target__.lock"
    holder = {"user": "x", "host": socket.gethostname(), "pid": str(dead.pid), "purpose": "deploy", "since": "then"}
    MlflowClient(mlflow_server).create_registered_model(lock_name, description=json.dumps(holder))
    code, out = cli(tmp_path, "deploy", "-t", "dev")
    assert code == 0, out
    holder["host"] = "elsewhere"
    MlflowClient(mlflow_server).create_registered_model(lock_name, description=json.dumps(holder))
    code, out = cli(tmp_path, "deploy", "-t", "dev")
    assert code == 1 and "x@elsewhere (pid" in out, out
    code, out = cli(tmp_path, "deploy", "-t", "dev", "--force-lock")
    assert code == 0, out


def test_a_lock_is_released_only_by_its_holder(tmp_path: Path, mlflow_server: str) -> None:
    """B broke A's lock with --force-lock twice and holds it: when A finishes, B's lock stays (before, A deleted it
    and a third process ran beside B)."""
    name = f"locks-{tmp_path.name[-12:]}"
    first, second, third = (ModelRegistry(Tracker(mlflow_server), name) for _ in range(3))
    with ExitStack() as later:
        with first.lock("promote"):
            with pytest.raises(LockedError, match="still running on this host"), second.lock("promote", force=1):
                pass
            later.enter_context(second.lock("promote", force=2))  # the second holds it from here
        held = first.held_lock()
        assert held is not None and "still running" in held  # the first's release left it alone
        with pytest.raises(LockedError, match="is locked by"), third.lock("promote"):
            pass
    assert first.held_lock() is None  # the second released its own
    with third.lock("promote"):
        pass


def test_production_refuses_a_dirty_tree_or_another_branch(tmp_path: Path) -> None:
    path = write_bundle(tmp_path)
    edit_bundle(path, lambda doc: (doc["targets"].update(prod={"mode": "production"}),
                                   doc["bundle"].update(git={"branch": "main"})))
    code, out = cli(tmp_path, "deploy", "-t", "prod")
    assert code == 2 and "not a git checkout" in out, out
    git(tmp_path, "init", "-q", "-b", "feature")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "x")
    code, out = cli(tmp_path, "deploy", "-t", "prod")
    assert code == 2 and "on branch feature, but bundle.git.branch is 'main'" in out, out
    git(tmp_path, "checkout", "-q", "-b", "main")
    (tmp_path / "notes.txt").write_text("uncommitted")
    code, out = cli(tmp_path, "deploy", "-t", "prod")
    assert code == 2 and "1 uncommitted change(s)" in out and "--force" in out, out
    code, out = cli(tmp_path, "deploy", "-t", "prod", "--force")
    assert code == 0, out
    (tmp_path / "notes.txt").unlink()
    code, out = cli(tmp_path, "deploy", "-t", "prod")
    assert code == 0, out


def test_production_takes_a_detached_head_only_at_a_commit_of_its_branch(tmp_path: Path) -> None:
    path = write_bundle(tmp_path)
    edit_bundle(path, lambda doc: (doc["targets"].update(prod={"mode": "production"}),
                                   doc["bundle"].update(git={"branch": "main"})))
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "release")
    git(tmp_path, "tag", "v1.0.0")
    git(tmp_path, "checkout", "-q", "-b", "feature")
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "not released")
    git(tmp_path, "tag", "v1.1.0-feature")
    git(tmp_path, "checkout", "-q", "--detach", "v1.1.0-feature")
    code, out = cli(tmp_path, "deploy", "-t", "prod")
    assert code == 2 and "HEAD is detached at a commit that is not on 'main'" in out, out
    git(tmp_path, "checkout", "-q", "--detach", "v1.0.0")  # what CI checks out for a release tag
    code, out = cli(tmp_path, "deploy", "-t", "prod")
    assert code == 0, out
