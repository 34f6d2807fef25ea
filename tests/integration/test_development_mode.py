"""mode: development: each developer's experiments and registered models carry their name."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import manymodels as mm
from helpers import edit_bundle, segment_frame, write_bundle


def as_user(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    for var in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(var, name)


@pytest.mark.slow
def test_two_developers_deploying_the_same_bundle_never_collide(
        tmp_path: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_bundle(tmp_path, frame=segment_frame(segments=3, rows=60), tracking_uri=mlflow_server,
                        extra={"bundle": {"name": "devmode"}})
    edit_bundle(path, lambda doc: doc["targets"]["dev"].update(mode="development"))
    seen = {}
    for user in ("alice", "Bob.Smith"):
        as_user(monkeypatch, user)
        project = mm.load_bundle(path)
        run = project.train("demand", workers=1)
        outcome = project.promote("demand")
        seen[user] = (run.run_id, project.registered_model("demand"), outcome.version)
    assert seen["alice"][1] == "dev_alice_devmode.dev.demand"
    assert seen["Bob.Smith"][1] == "dev_bob_smith_devmode.dev.demand"
    client = MlflowClient(mlflow_server)
    alice = client.get_experiment_by_name("devmode/dev/dev_alice_demand")
    bob = client.get_experiment_by_name("devmode/dev/dev_bob_smith_demand")
    assert alice is not None and bob is not None
    assert [r.info.run_id for r in client.search_runs([alice.experiment_id], "tags.`manymodels.kind` = 'train'")] \
        == [seen["alice"][0]]
    for user in ("alice", "Bob.Smith"):  # each one's champion is their own run's
        champion = client.get_model_version_by_alias(seen[user][1], "champion")
        assert champion.tags["manymodels.challenger_run"] == seen[user][0]
    as_user(monkeypatch, "alice")
    assert mm.load_bundle(path).runs("demand")[0].run_id == seen["alice"][0]
