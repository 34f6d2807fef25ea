"""Champion / challenger per segment against a real `mlflow server`: evaluate, promote, score, roll back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import manymodels as mm
from helpers import count_tracking_calls, edit_bundle, model_block, segment_frame, tracking_only, write_bundle
from manymodels.cli.main import app
from manymodels.registry import Tracker, tracking
from manymodels.registry.versions import ModelRegistry

runner = CliRunner()
BAD = ["seg_000", "seg_001"]  # the second week's labels of these are noise: its models must lose there


def cli(root: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--bundle", str(root), *args])
    return result.exit_code, result.output


def weeks(segments: int = 6, rows: int = 160) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Week-one rows, week-two rows (BAD segments' labels scrambled), fresh rows of the same truth."""
    frame = segment_frame(segments=segments, rows=rows, noise=0.3)
    train, fresh = frame[frame["record_id"] % 2 == 0], frame[frame["record_id"] % 2 == 1]
    second = train.copy()
    bad = second["segment"].isin(BAD).to_numpy()
    rng = np.random.default_rng(5)
    second.loc[bad, "label"] = rng.permutation(second.loc[bad, "label"].to_numpy())
    return train.reset_index(drop=True), second.reset_index(drop=True), fresh.reset_index(drop=True)


def bundle(root: Path, frame: pd.DataFrame, uri: str, rounds: int, **model: Any) -> Path:
    block = model_block(estimator={"type": "lightgbm", "params": {"num_boost_round": rounds, "min_data_in_leaf": 5}},
                        **model)
    path = write_bundle(root, frame=frame, tracking_uri=uri, models={"demand": block},
                        extra={"bundle": {"name": f"champ-{root.name}"}})
    return path


def first_champion(root: Path, frame: pd.DataFrame, uri: str, **model: Any) -> tuple[Path, str, MlflowClient, str]:
    """Week one trained and promoted: the bundle, its registered model, a client, the champion's version."""
    path = bundle(root, frame, uri, rounds=3, **model)
    project = mm.load_bundle(path)
    project.train("demand", workers=1)
    project.promote("demand")
    name = project.registered_model("demand")
    client = MlflowClient(uri)
    return path, name, client, client.get_model_version_by_alias(name, "champion").version


@pytest.mark.slow
def test_weekly_cycle_evaluate_promote_score_rollback(tmp_path: Path, mlflow_server: str) -> None:
    first, second, fresh = weeks()
    fresh.to_parquet(tmp_path / "fresh.parquet", index=False)
    path = bundle(tmp_path, first, mlflow_server, rounds=3)
    project = mm.load_bundle(path)
    name = project.registered_model("demand")
    assert name == f"champ-{tmp_path.name}.dev.demand"

    # Week one: no champion yet, every segment is new and the first run becomes champion.
    run1 = project.train("demand", workers=1)
    code, out = cli(tmp_path, "evaluate", "demand")
    assert code == 0, out
    assert "6 new" in out and "would promote" in out
    code, out = cli(tmp_path, "promote", "demand")
    assert code == 0, out
    client = MlflowClient(mlflow_server)
    champion_v1 = client.get_model_version_by_alias(name, "champion")
    assert champion_v1.run_id != run1.run_id  # a composite pack of its own (a promote run)
    assert champion_v1.tags["manymodels.segments"] == "6"
    assert client.get_model_version_by_alias(name, "challenger").run_id == run1.run_id

    # Week two: many more rounds (better) but BAD segments trained on noise.
    bundle(tmp_path, second, mlflow_server, rounds=60)
    project = mm.load_bundle(path)
    run2 = project.train("demand", workers=1)
    code, out = cli(tmp_path, "evaluate", "demand", "--data", str(tmp_path / "fresh.parquet"),
                    "--out", str(tmp_path / "eval.csv"))
    assert code == 0, out
    table = pd.read_csv(tmp_path / "eval.csv").set_index("segment")
    assert set(table.loc[BAD, "status"]) == {"lost"} and set(table.loc[BAD, "decision"]) == {"keep"}
    others = table.drop(index=BAD)
    assert set(others["status"]) == {"won"} and set(others["decision"]) == {"promote"}
    assert (others["challenger"] < others["champion"]).all() and (others["change"] < 0).all()
    assert (table["rows"].sort_index() == fresh.groupby("segment").size()).all()  # every fresh row evaluated
    assert table.index[:2].tolist() == table.loc[BAD, "change"].sort_values(ascending=False).index.tolist()
    saved = client.get_run(run2.run_id).data.tags["manymodels.evaluation"]
    assert saved == f"evaluation/vs-v{champion_v1.version}.parquet"

    code, out = cli(tmp_path, "promote", "demand")
    assert code == 0, out
    champion_v2 = client.get_model_version_by_alias(name, "champion")
    assert int(champion_v2.version) > int(champion_v1.version)
    assert client.get_model_version_by_alias(name, "previous").version == champion_v1.version
    promote_run = champion_v2.run_id
    manifest = pd.read_parquet(client.download_artifacts(promote_run, "model/pack/manifest.parquet",
                                                         str(tmp_path / "dl"))).set_index("segment")
    first_run = champion_v1.tags["manymodels.challenger_run"]
    assert set(manifest.loc[BAD, "source_run"]) == {first_run}
    assert set(manifest.drop(index=BAD)["source_run"]) == {run2.run_id}
    assert manifest["reason"].notna().all()

    # MLflow's own client serves the composite: each segment predicted by the run it came from.
    inputs = fresh.drop(columns=["label"])
    mlflow.set_tracking_uri(mlflow_server)
    served = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(inputs)["prediction"].to_numpy()
    by_run1 = project.score("demand", inputs, run_id=run1.run_id)["prediction"].to_numpy()
    by_run2 = project.score("demand", inputs, run_id=run2.run_id)["prediction"].to_numpy()
    bad_rows = inputs["segment"].isin(BAD).to_numpy()
    np.testing.assert_array_equal(served[bad_rows], by_run1[bad_rows])
    np.testing.assert_array_equal(served[~bad_rows], by_run2[~bad_rows])

    # `score` uses the champion by default.
    code, out = cli(tmp_path, "score", "demand", "--data", str(tmp_path / "fresh.parquet"),
                    "--out", str(tmp_path / "scores.parquet"))
    assert code == 0, out
    assert f"champion, version {champion_v2.version}" in out
    np.testing.assert_array_equal(pd.read_parquet(tmp_path / "scores.parquet")["prediction"].to_numpy(), served)

    # Roll back: instantly the old champion serves; rolling back again undoes it.
    code, out = cli(tmp_path, "rollback", "demand")
    assert code == 0, out
    assert client.get_model_version_by_alias(name, "champion").version == champion_v1.version
    np.testing.assert_array_equal(project.score("demand", inputs)["prediction"].to_numpy(), by_run1)
    code, out = cli(tmp_path, "rollback", "demand")
    assert code == 0 and client.get_model_version_by_alias(name, "champion").version == champion_v2.version

    # The same challenger again: ties and two losses (of six, under max_failed_fraction): nothing to promote,
    # which is no failure; promote then makes no version and the champion stays.
    code, out = cli(tmp_path, "evaluate", "demand", "--run", run2.run_id, "--data", str(tmp_path / "fresh.parquet"))
    assert code == 0, out
    assert "no segment improved: nothing to promote" in " ".join(out.replace("│", " ").split())
    code, out = cli(tmp_path, "promote", "demand", "--run", run2.run_id)
    assert code == 0, out
    assert client.get_model_version_by_alias(name, "champion").version == champion_v2.version

    code, out = cli(tmp_path, "models", "--json")
    assert code == 0, out
    assert json.loads(out) == [{"model": "demand", "registered_model": name, "champion": int(champion_v2.version),
                                "segments": 6, "versions": 4, "latest_run": run2.run_id}]
    code, out = cli(tmp_path, "models", "demand", "--json")
    versions = {v["version"]: v for v in json.loads(out)["versions"]}
    assert versions[int(champion_v2.version)]["aliases"] == ["champion"]
    assert versions[int(champion_v1.version)]["aliases"] == ["previous"]
    assert versions[int(champion_v2.version)]["tags"]["manymodels.promoted"] == "4"
    code, out = cli(tmp_path, "models", "demand")
    assert code == 0 and "champion" in out and "previous" in out and "composite" in out


@pytest.mark.slow
def test_a_job_trains_evaluates_and_stops_before_promoting_when_the_gate_fails(
        tmp_path: Path, mlflow_server: str) -> None:
    first, second, fresh = weeks(segments=4)
    path = bundle(tmp_path, first, mlflow_server, rounds=3, promotion={"max_metric": 1e-9})
    gated = {"tasks": [
        {"key": "train", "train": "demand"},
        {"key": "evaluate", "depends_on": ["train"], "evaluate": "demand"},
        {"key": "promote", "depends_on": ["evaluate"], "promote": "demand"},
    ]}
    edit_bundle(path, lambda doc: doc["resources"]["jobs"].update(weekly=gated))
    code, out = cli(tmp_path, "run", "weekly")
    assert code == 1, out
    assert "gate" in out and "skipped" in out  # max_metric unreachable: nothing may be promoted
    registry = mm.load_bundle(path).registered_model("demand")
    assert MlflowClient(mlflow_server).get_registered_model(registry).aliases.get("champion") is None

    edit_bundle(path, lambda doc: doc["resources"]["models"]["demand"].update(promotion={"max_metric": 100.0}))
    code, out = cli(tmp_path, "run", "weekly")
    assert code == 0, out
    assert MlflowClient(mlflow_server).get_registered_model(registry).aliases.get("champion")


@pytest.mark.slow
def test_promote_refuses_after_a_failed_gate_unless_forced(tmp_path: Path, mlflow_server: str) -> None:
    first, second, fresh = weeks()
    fresh.to_parquet(tmp_path / "fresh.parquet", index=False)
    path, name, client, first_version = first_champion(tmp_path, first, mlflow_server,
                                                       promotion={"max_failed_fraction": 0.2})

    bundle(tmp_path, second, mlflow_server, rounds=60, promotion={"max_failed_fraction": 0.2})
    project = mm.load_bundle(path)
    project.train("demand", workers=1)
    code, out = cli(tmp_path, "evaluate", "demand", "--data", str(tmp_path / "fresh.parquet"))
    assert code == 1, out  # the two BAD segments lost: 2 of 6 is more than 20%
    code, out = cli(tmp_path, "promote", "demand")
    assert code == 1, out
    assert "the promotion gate failed" in out and "2 lost" in out and "--force" in out, out
    with pytest.raises(mm.GateError, match="2 of 6 segments regress"):
        project.promote("demand")
    assert client.get_model_version_by_alias(name, "champion").version == first_version  # nothing promoted

    code, out = cli(tmp_path, "promote", "demand", "--force")
    assert code == 0, out
    forced = client.get_model_version_by_alias(name, "champion")
    assert forced.version != first_version and forced.tags["manymodels.promoted"] == "4"  # the winners only


@pytest.mark.slow
def test_promotions_cannot_interleave_and_a_failed_one_leaves_the_champion(
        tmp_path: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second, _ = weeks(segments=4)
    path, name, client, before = first_champion(tmp_path, first, mlflow_server)

    bundle(tmp_path, second, mlflow_server, rounds=60)
    project = mm.load_bundle(path)
    project.train("demand", workers=1)
    registry = ModelRegistry(Tracker(mlflow_server), name)
    with registry.lock("promote"):  # another promotion is running
        code, out = cli(tmp_path, "promote", "demand")
    assert code == 1 and "is locked by" in out and "(pid" in out and "--force-lock" in out, out
    assert client.get_model_version_by_alias(name, "champion").version == before

    def composites() -> set[str]:
        found = client.search_model_versions(f"name = '{name}'")
        return {v.version for v in found if v.tags.get("manymodels.kind") == "composite"}

    versions_before = composites()
    real = ModelRegistry.set_alias

    def failing(self: ModelRegistry, alias: str, version: int) -> None:
        if alias == "champion":
            raise mm.RegistryError("tracking server went away")
        real(self, alias, version)

    monkeypatch.setattr(ModelRegistry, "set_alias", failing)
    with pytest.raises(mm.RegistryError, match="went away"):
        project.promote("demand")
    monkeypatch.setattr(ModelRegistry, "set_alias", real)
    assert client.get_model_version_by_alias(name, "champion").version == before
    assert composites() == versions_before  # the half-made version is gone
    promote_runs = client.search_runs([client.get_experiment_by_name(f"champ-{tmp_path.name}/dev/demand")
                                       .experiment_id], "tags.`manymodels.kind` = 'promote'")
    assert sorted(r.info.status for r in promote_runs) == ["FAILED", "FINISHED"]
    outcome = project.promote("demand")  # the lock was released
    assert outcome.version is not None and outcome.promoted > 0


@pytest.mark.slow
def test_promotion_calls_do_not_grow_with_the_fleet(tmp_path: Path, mlflow_server: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    counts = []
    # One heartbeat when a run starts (sent before its work, not from the beating thread, which on a loaded machine
    # could send it after the count: 46 against 47), none after: a slow machine's promotion outlasting a beat's
    # interval would add a call, and the count would measure the machine, not the code.
    monkeypatch.setattr(tracking, "HEARTBEAT_SECONDS", 3600.0)
    calls = count_tracking_calls(monkeypatch)
    for segments in (5, 200):
        root = tmp_path / f"fleet{segments}"
        path = bundle(root, segment_frame(segments=segments, rows=20), mlflow_server, rounds=2)
        project = mm.load_bundle(path)
        project.train("demand", workers=1)
        project.promote("demand")  # first: evaluate + register + champion
        project.train("demand", workers=1)
        calls.clear()
        project.evaluate("demand")
        outcome = project.promote("demand", take_all=True)
        assert outcome.version is not None and outcome.promoted == segments
        counts.append((len(tracking_only(calls)), len(calls) - len(tracking_only(calls))))
    assert counts[0][0] == counts[1][0], counts  # tracking and registry calls: the same at 5 and 200 segments
    assert max(counts[0][1], counts[1][1]) <= 40, calls  # artifact files: a few per pack, not per segment
    assert counts[0][0] <= 60, calls


def test_clear_errors_before_anything_is_registered(tmp_path: Path) -> None:
    path = write_bundle(tmp_path, frame=segment_frame(segments=3, rows=40))  # embedded store
    code, out = cli(tmp_path, "evaluate", "demand")
    assert code == 1 and "has no successful training run" in out, out
    code, out = cli(tmp_path, "rollback", "demand")
    assert code == 1 and "has no champion to roll back" in out, out
    mm.load_bundle(path).train("demand", workers=1)
    code, out = cli(tmp_path, "evaluate", "demand", "--data", "to_score")  # no label column there
    assert code == 2 and "lacks column(s) label" in out, out
    code, out = cli(tmp_path, "promote", "demand")
    assert code == 0, out
    code, out = cli(tmp_path, "rollback", "demand")
    assert code == 1 and "no previous champion; name a version with --to" in out, out
    code, out = cli(tmp_path, "rollback", "demand", "--to", "99")
    assert code == 2 and "has no version 99" in out, out  # a wrong number is bad input
    code, out = cli(tmp_path, "models", "nosuch")
    assert code == 2 and "no model 'nosuch'" in out, out


def test_a_weekly_job_on_unchanged_data_passes_and_scores_with_the_champion(tmp_path: Path) -> None:
    """Retrained on the same rows, no segment improves: the gate passes, nothing is promoted, scoring runs."""
    weekly = {"tasks": [
        {"key": "train", "train": "demand"},
        {"key": "evaluate", "depends_on": ["train"], "evaluate": "demand"},
        {"key": "promote", "depends_on": ["evaluate"], "promote": "demand"},
        {"key": "score", "depends_on": ["promote"],
         "score": {"model": "demand", "dataset": "to_score", "output": "out/scores.parquet"}},
    ]}
    path = write_bundle(tmp_path, frame=segment_frame(segments=4, rows=80))
    edit_bundle(path, lambda doc: doc["resources"]["jobs"].update(weekly=weekly))
    code, out = cli(tmp_path, "run", "weekly")
    assert code == 0, out
    def champion() -> int:
        (version,) = [v.version for v in mm.load_bundle(path).versions("demand") if "champion" in v.aliases]
        return version

    first = champion()
    (tmp_path / "out" / "scores.parquet").unlink()
    code, out = cli(tmp_path, "run", "weekly")  # the same rows again
    assert code == 0, out
    flat = " ".join(out.replace("│", " ").split())
    assert "no segment improved: nothing to promote" in flat and "skipped" not in flat
    assert champion() == first  # no new champion
    assert pd.read_parquet(tmp_path / "out" / "scores.parquet")["prediction"].notna().all()
