"""Retrain only what changed: fingerprints against the champion's, the rest carried over as they are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import manymodels as mm
from helpers import edit_bundle, model_block, segment_frame, write_bundle
from manymodels.cli.main import app
from manymodels.engines import Dataset, make_engine
from manymodels.registry.pack import Pack, publish_pack

runner = CliRunner()


def next_week(frame: pd.DataFrame) -> pd.DataFrame:
    """seg_000's labels change, seg_007 is gone, seg_new appears; the rest is the same rows reshuffled."""
    week = frame[frame["segment"] != "seg_007"].copy()
    week.loc[week["segment"] == "seg_000", "label"] += 1.0
    new = frame[frame["segment"] == "seg_001"].assign(segment="seg_new")
    return pd.concat([week, new]).sample(frac=1.0, random_state=3).reset_index(drop=True)


def test_changed_only_trains_changed_and_new_segments_and_carries_the_rest(tmp_path: Path) -> None:
    frame = segment_frame(segments=8, rows=60)
    path = write_bundle(tmp_path, frame=frame)
    project = mm.load_bundle(path)
    first = project.train("demand", workers=1)
    project.promote("demand")

    write_bundle(tmp_path, frame=next_week(frame))
    result = runner.invoke(app, ["--bundle", str(path), "train", "demand", "--changed-only", "--workers", "1"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "2 trained (1 changed, 1 new), 6 carried from the champion, 1 gone" in result.output
    second = mm.load_bundle(path).runs("demand")[0]
    manifest = project.manifest("demand", second.run_id).set_index("segment")
    assert sorted(manifest.index[~manifest["carried"]]) == ["seg_000", "seg_new"]
    carried = manifest[manifest["carried"]]
    assert set(carried["source_run"]) == {first.run_id}
    before = first.manifest.set_index("segment").loc[carried.index]
    assert (carried["fingerprint"] == before["fingerprint"]).all()
    assert (carried["rmse"] == before["rmse"]).all()
    assert set(manifest.loc[~manifest["carried"], "source_run"]) == {second.run_id}
    # The carried models are not copied: the new pack names the champion's own shard files, by its run.
    champion_run = project.versions("demand")[0].run_id
    assert carried["shard"].str.startswith(f"{champion_run}/shard-").all()
    pack = next((tmp_path / ".manymodels" / "artifacts").glob(f"*/{second.run_id}/artifacts/model/pack"))
    assert sorted(p.name for p in (pack / "shards").iterdir()) == ["shard-00000.parquet"]  # the 2 it trained
    references = json.loads((pack / "pack.json").read_text())["extra"]["references"]
    assert list(references) == [champion_run]
    assert references[champion_run].endswith(f"/{champion_run}/artifacts/model/pack")
    assert mm.load_bundle(path).runs("demand")[0].tags["manymodels.refers"] == champion_run
    inputs = next_week(frame).drop(columns=["label"])
    whole = Pack(pack).predict(inputs)["prediction"].to_numpy()
    alone = Pack(pack, whole_shards=False)  # as a server reads: one model at a time
    alone.verify()  # every shard it names, the champion's among them, whole and as checksummed
    np.testing.assert_array_equal(alone.predict(inputs)["prediction"].to_numpy(), whole)
    published = publish_pack(pack, str(tmp_path / "staging" / "packs" / second.run_id))  # a cluster's copy
    assert (tmp_path / "staging" / "packs" / champion_run / "pack.json").exists()  # and what it refers to
    np.testing.assert_array_equal(Pack(published).predict(inputs)["prediction"].to_numpy(), whole)
    (pack / "pack.json").write_text((pack / "pack.json").read_text().replace(champion_run, "f" * 32))
    with pytest.raises(mm.RegistryError, match=f"carries models of run {'f' * 32} by reference"):
        Pack(pack)
    (pack / "pack.json").write_text((pack / "pack.json").read_text().replace("f" * 32, champion_run))

    carried_rows = inputs["segment"].isin(carried.index).to_numpy()
    new_scores = project.score("demand", inputs, run_id=second.run_id)["prediction"].to_numpy()
    old_scores = project.score("demand", inputs, run_id=first.run_id)["prediction"].to_numpy()
    np.testing.assert_array_equal(new_scores[carried_rows], old_scores[carried_rows])  # the very same models

    evaluation = project.evaluate("demand", run_id=second.run_id)
    statuses = evaluation.table.set_index("segment")["status"]
    assert set(statuses[carried.index]) == {"tied"} and statuses["seg_new"] == "new"
    assert statuses["seg_007"] == "absent"
    promoted = project.promote("demand", run_id=second.run_id, take_all=True)  # a version holds its models itself
    composed = project.manifest("demand", promoted.run_id)
    assert "stored_index" not in composed.columns and not composed["shard"].str.contains("/").any()
    np.testing.assert_array_equal(project.score("demand", inputs)["prediction"].to_numpy(), new_scores)
    assert evaluation.warnings == [  # seg_000's rows changed: a random split mixes the champion's training rows in
        "1 segment(s) have other rows than the champion trained on: with a random split their holdout includes "
        "rows the champion trained on, which flatters it; evaluate on fresh rows (--data) or split by time"]


def test_nothing_changed_carries_everything_and_new_params_retrain_everything(tmp_path: Path) -> None:
    frame = segment_frame(segments=4, rows=60)
    path = write_bundle(tmp_path, frame=frame, models={"demand": model_block(fallback="global")})
    project = mm.load_bundle(path)
    project.train("demand", workers=1)
    project.promote("demand")
    write_bundle(tmp_path, frame=frame.sample(frac=1.0, random_state=9),  # same rows, another order
                 models={"demand": model_block(fallback="global")})
    same = mm.load_bundle(path).train("demand", workers=1, changed_only=True)
    assert (same.summary["segments_trained"], same.summary["segments_carried"]) == (0, 4)
    scores = mm.load_bundle(path).score("demand", frame.drop(columns=["label"]), run_id=same.run_id)
    assert scores["prediction"].notna().all()
    # A pipeline (CD on a push that changed no data) goes on: the gate passes, promote makes no version.
    champion = [v.version for v in mm.load_bundle(path).versions("demand") if "champion" in v.aliases]
    result = runner.invoke(app, ["--bundle", str(path), "evaluate", "demand"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "passed (nothing changed since the champion trained: nothing to promote)" in result.output
    assert "the champion's own model, carried over (its rows did not change)" in result.output
    result = runner.invoke(app, ["--bundle", str(path), "promote", "demand"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert [v.version for v in mm.load_bundle(path).versions("demand") if "champion" in v.aliases] == champion

    edit_bundle(path, lambda doc: doc["resources"]["models"]["demand"]["estimator"]["params"].update(
        num_boost_round=7))
    changed = mm.load_bundle(path).train("demand", workers=1, changed_only=True)
    assert (changed.summary["segments_trained"], changed.summary["segments_carried"]) == (4, 0)


def test_changed_only_and_segments_together_is_refused(tmp_path: Path) -> None:
    path = write_bundle(tmp_path)
    result = runner.invoke(app, ["--bundle", str(path), "train", "demand", "--changed-only", "--segments", "seg_000"])
    assert result.exit_code == 2 and "give --segments or --changed-only, not both" in result.output


@pytest.mark.slow
def test_spark_fingerprints_equal_the_local_engines(tmp_path: Path, spark: Any) -> None:
    frame = segment_frame(segments=9, rows=40)
    frame["f0"] = frame["f0"].astype("float32")  # Spark reads it as float, pandas as float32: same hashes
    path = write_bundle(tmp_path, frame=frame)
    project = mm.load_bundle(path)
    spec, dataset = project.target_context.training_spec("demand")
    data_path, fmt = dataset.path, dataset.fmt
    local = make_engine("local", 1)
    on_spark = make_engine("spark", None, {}, session=spark)
    local_fleet = local.load(Dataset(data_path, fmt), spec)
    spark_fleet = on_spark.load(Dataset(data_path, fmt), spec)
    assert local.fingerprints(local_fleet, spec) == on_spark.fingerprints(spark_fleet, spec)

    mm.load_bundle(path, spark=spark).train("demand")
    project.promote("demand")
    write_bundle(tmp_path, frame=next_week(frame))
    run = mm.load_bundle(path, spark=spark).train("demand", changed_only=True)
    assert (run.summary["segments_trained"], run.summary["segments_carried"], run.summary["segments_gone"]) == \
        (9 - 7, 7, 1)  # seg_000 changed (and seg_new new); seg_001..seg_006, seg_008 carried; seg_007 gone
    # Spark's executors read the carried models where the run's pack refers to them (the champion's files)
    inputs = next_week(frame).drop(columns=["label"])
    on_executors = mm.load_bundle(path, spark=spark).score("demand", inputs, run_id=run.run_id).toPandas()
    in_process = mm.load_bundle(path).score("demand", inputs, run_id=run.run_id)
    order = ["segment", "f1", "f2"]
    on_executors = on_executors.sort_values(order, ignore_index=True)
    in_process = in_process.sort_values(order, ignore_index=True)
    assert len(on_executors) == len(inputs) and on_executors["prediction"].notna().all()
    np.testing.assert_allclose(on_executors["prediction"], in_process["prediction"], rtol=1e-6)
