"""Model selection as a user runs it: a weekly panel, candidates and baselines, train -> show -> score -> promote."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import manymodels as mm
from helpers import edit_bundle, write_bundle
from manymodels.cli.main import app

runner = CliRunner()
SEASON = np.array([4.0, -2.0, 0.0, 6.0])


def panel(stores: int = 6, weeks: int = 40, seasonal: int = 3, seed: int = 0) -> pd.DataFrame:
    """Weekly sales: the first `seasonal` stores repeat a 4-week pattern (a seasonal baseline's case); the rest
    follow their features (a model's case)."""
    rng = np.random.default_rng(seed)
    parts = []
    for s in range(stores):
        week = np.arange(weeks)
        x = rng.random((weeks, 3))
        label = SEASON[week % 4] * (s + 1) if s < seasonal else 8 * x[:, 0] - 5 * x[:, 1] + rng.normal(0, 0.1, weeks)
        part = pd.DataFrame({"segment": f"store_{s}", "week": week, "f0": x[:, 0], "f1": x[:, 1], "f2": x[:, 2],
                             "label": label})
        parts.append(part)
    return pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=1).reset_index(drop=True)


def selecting_model() -> dict[str, object]:
    return {
        "dataset": "train",
        "segment_by": ["segment"],
        "label": "label",
        "features": ["f0", "f1", "f2"],
        "split": {"by": "week", "cutoff": 32},
        "validation": {"kind": "time", "windows": 3, "horizon": 4},
        "candidates": [
            {"name": "ridge", "type": "sklearn", "entry": "sklearn.linear_model.Ridge", "params": {"alpha": 0.01}},
            {"name": "lgbm", "params": {"num_boost_round": 10, "min_data_in_leaf": 3}},
            {"name": "season", "type": "baseline", "method": "seasonal", "period": 4},
            {"name": "mean", "type": "baseline", "method": "mean"},
        ],
        "tuning": {"lgbm": {"space": {"num_leaves": [2, 4, 8]}, "trials": 2, "sampler": "grid"}},
    }


def test_train_chooses_per_segment_and_the_pack_serves_every_winner(tmp_path: Path) -> None:
    frame = panel()
    path = write_bundle(tmp_path, frame=frame, models={"demand": selecting_model()})
    result = runner.invoke(app, ["--bundle", str(path), "train", "demand", "--workers", "2"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "won (CV)" in result.output and "ridge 3" in result.output and "season 3" in result.output
    assert "winners beat the best baseline by 0.0% (median)" not in result.output

    project = mm.load_bundle(path)
    run = project.runs("demand")[0]
    manifest = project.manifest("demand", run.run_id).set_index("segment")
    assert manifest["status"].eq("ok").all()
    winners = manifest["candidate"].to_dict()
    assert winners == {f"store_{s}": "season" if s < 3 else "ridge" for s in range(6)}
    assert set(manifest["model_format"]) == {"baseline-json", "sklearn-skops"}  # one pack, mixed kinds
    assert (manifest["cv_folds"] == 3).all()
    scores = json.loads(manifest.loc["store_4", "cv_scores"])
    assert set(scores) == {"ridge", "lgbm", "season", "mean"} and scores["lgbm"]["trials"] == 2
    assert manifest.loc["store_0", "rmse"] < 1e-9  # the seasonal baseline, on the holdout weeks 32-39
    metrics = mlflow.MlflowClient(project.tracking_uri).get_run(run.run_id).data.metrics
    assert metrics["won.season"] == 3 and metrics["won.ridge"] == 3 and metrics["segments_baseline_won"] == 3
    # `runs` and `show` name the candidates and their wins, not the model's unused default estimator
    listed = runner.invoke(app, ["--bundle", str(path), "runs", "demand"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "won: ridge 3, season 3, lgbm 0" in listed.output, listed.output
    shown = runner.invoke(app, ["--bundle", str(path), "show", run.run_id], env={"COLUMNS": "200"})
    assert "candidates" in shown.output and "ridge" in shown.output, shown.output
    assert "estimator.params." not in shown.output and "lightgbm" not in shown.output, shown.output

    # Scoring next weeks: the seasonal stores read the week, the others their features.
    ahead = panel(seed=0, weeks=44)
    ahead = ahead[ahead["week"] >= 40].drop(columns=["label"])
    out = tmp_path / "scores.parquet"
    scored = runner.invoke(app, ["--bundle", str(path), "score", "demand", "--data",
                                 str(_write(ahead, tmp_path / "ahead.parquet")), "--out", str(out)])
    assert scored.exit_code == 0, scored.output
    got = pd.read_parquet(out)
    seasonal = got[got["segment"] == "store_1"].sort_values("week")
    np.testing.assert_allclose(seasonal["prediction"].to_numpy(dtype=float), SEASON * 2, atol=1e-9)
    missing_week = ahead.drop(columns=["week"])
    bad = runner.invoke(app, ["--bundle", str(path), "score", "demand", "--data",
                              str(_write(missing_week, tmp_path / "noweek.parquet")), "--out", str(tmp_path / "x.csv")])
    assert bad.exit_code == 2 and "segment='store_0' (segment_index 0) need column 'week'" in bad.output
    # Rows of segments whose models do not read the time need no time column.
    featured = missing_week[missing_week["segment"].isin(["store_3", "store_4"])]
    fine = runner.invoke(app, ["--bundle", str(path), "score", "demand", "--data",
                               str(_write(featured, tmp_path / "featured.parquet")), "--out", str(tmp_path / "y.csv")])
    assert fine.exit_code == 0, fine.output
    assert pd.read_csv(tmp_path / "y.csv")["prediction"].notna().all()

    # Promote: the composite pack keeps the time column among its inputs; MLflow's loader serves it.
    project.evaluate("demand")
    promoted = project.promote("demand", force=True)
    assert promoted.version is not None
    mlflow.set_tracking_uri(project.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{project.registered_model('demand')}@champion")
    served = model.predict(ahead)
    both = ahead.assign(p=served["prediction"].to_numpy(dtype=float)).merge(got, on=["segment", "week"])
    np.testing.assert_allclose(both["p"], both["prediction"].to_numpy(dtype=float), atol=1e-9)

    # Monitoring the champion reads the time column its seasonal baselines need (it failed: "input lacks week").
    fresh = panel(seed=0, weeks=44)
    fresh = fresh[fresh["week"] >= 40]
    watched = project.monitor("demand", fresh, save=False).table.set_index("segment")
    assert watched.loc["store_1", "rows"] == 4 and watched.loc["store_1", "rmse"] == pytest.approx(0.0, abs=1e-9)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path, index=False)
    return path


def test_a_fleet_won_by_baselines_says_so_loudly(tmp_path: Path) -> None:
    frame = panel(stores=4, seasonal=4)
    model = selecting_model()
    path = write_bundle(tmp_path, frame=frame, models={"demand": model})
    result = runner.invoke(app, ["--bundle", str(path), "train", "demand", "--workers", "1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "a baseline won 4 of 4 segments (100%: season 4, mean 0)" in result.output


def test_global_tuning_finds_one_parameter_set_and_fits_every_segment_with_it(tmp_path: Path) -> None:
    model = selecting_model()
    model["candidates"] = [{"name": "lgbm", "params": {"num_boost_round": 10, "min_data_in_leaf": 3}},
                           {"name": "mean", "type": "baseline", "method": "mean"}]
    model["tuning"] = {"lgbm": {"space": {"num_leaves": [2, 4, 8], "learning_rate": {"float": [0.05, 0.5]}},
                                "trials": 4, "scope": "global", "sample": 3}}
    path = write_bundle(tmp_path, frame=panel(stores=6, seasonal=0), models={"demand": model})
    project = mm.load_bundle(path)
    first = project.train("demand", workers=2)
    again = project.train("demand", workers=1)
    params = {r.run_id: mlflow.MlflowClient(project.tracking_uri).get_run(r.run_id).data.params
              for r in (first, again)}
    best = json.loads(params[first.run_id]["tuning.lgbm.best"])
    assert best == json.loads(params[again.run_id]["tuning.lgbm.best"])  # seeded: the same sample, the same trials
    assert best["num_leaves"] in (2, 4, 8) and 0.05 <= best["learning_rate"] <= 0.5 and best["num_boost_round"] == 10
    assert params[first.run_id]["tuning.lgbm.sample"] == "3"
    won_by_lgbm = first.manifest[first.manifest["candidate"] == "lgbm"]
    assert len(won_by_lgbm) > 0
    assert {json.dumps(json.loads(p), sort_keys=True) for p in won_by_lgbm["params"]} == {
        json.dumps(best, sort_keys=True)}


def test_a_globally_tuned_run_resumes_with_the_parameters_its_study_found(tmp_path: Path) -> None:
    import pytest

    model = selecting_model()
    model["candidates"] = [{"name": "lgbm", "params": {"num_boost_round": 10, "min_data_in_leaf": 3}}]
    model["tuning"] = {"lgbm": {"space": {"num_leaves": [2, 4, 8], "learning_rate": {"float": [0.05, 0.5]}},
                                "trials": 3, "scope": "global", "sample": 3}}
    path = write_bundle(tmp_path, frame=panel(stores=6, seasonal=0), models={"demand": model})
    edit_bundle(path, lambda doc: doc["targets"]["dev"].update(engine={"max_chunk_rows": 80}))  # 2 stores a chunk
    project = mm.load_bundle(path)
    done = [0]

    def stop(n: int) -> None:
        done[0] += n
        if done[0] >= 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        project.train("demand", workers=1, on_progress=stop)
    run_id = project.runs("demand")[0].run_id
    resumed = project.train("demand", resume=run_id, workers=1)
    # the 4 stores of the chunks finished were kept: the spec with the study's parameters is the one they were
    # fitted with (a new study could have found others, and every model would have been fitted again)
    assert resumed.summary["segments_resumed"] == 4 and resumed.summary["segments_ok"] == 6
    params = {json.dumps(json.loads(p), sort_keys=True) for p in resumed.manifest["params"]}
    best = mlflow.MlflowClient(project.tracking_uri).get_run(run_id).data.params["tuning.lgbm.best"]
    assert params == {json.dumps(json.loads(best), sort_keys=True)}


def test_global_tuning_that_fails_every_trial_stops_before_any_run(tmp_path: Path) -> None:
    model = selecting_model()
    model["candidates"] = [{"name": "ridge", "type": "sklearn", "entry": "sklearn.linear_model.Ridge"}]
    model["tuning"] = {"ridge": {"space": {"alpha": ["not", "numbers"]}, "trials": 2, "scope": "global",
                                 "sampler": "grid"}}
    path = write_bundle(tmp_path, frame=panel(stores=3, seasonal=0), models={"demand": model})
    result = runner.invoke(app, ["--bundle", str(path), "train", "demand", "--workers", "1"], env={"COLUMNS": "200"})
    assert result.exit_code != 0
    assert "global tuning of candidate 'ridge': all 2 trial(s) failed on the 3 sampled segment(s)" in result.output
    assert mm.load_bundle(path).runs("demand") == []


def test_evaluate_on_cv_compares_the_champions_configuration_on_the_same_folds(tmp_path: Path) -> None:
    model = selecting_model()
    model["promotion"] = {"basis": "cv"}
    path = write_bundle(tmp_path, frame=panel(stores=4, seasonal=0), models={"demand": model})
    project = mm.load_bundle(path)
    project.train("demand", workers=1)
    project.promote("demand", force=True)  # week one: ridge everywhere
    assert set(project.manifest("demand")["candidate"]) == {"ridge"}

    write_bundle(tmp_path, frame=panel(stores=4, seasonal=4), models={"demand": model})  # now a pure season
    project = mm.load_bundle(path)
    project.train("demand", workers=1)
    evaluation = project.evaluate("demand")
    table = evaluation.table.set_index("segment")
    assert set(table["basis"]) == {"cv"}
    challenger = project.manifest("demand").set_index("segment")
    for store, row in table.iterrows():
        scores = json.loads(challenger.loc[store, "cv_scores"])
        assert row["cv_champion"] == scores["ridge"]["mean"]  # ridge (the champion's pick) on this week's folds
        assert row["champion"] == row["cv_champion"] and row["challenger"] == challenger.loc[store, "cv_mean"]
        assert row["rows"] == challenger.loc[store, "n_train"] and row["cv_folds"] == 3
    assert set(challenger["candidate"]) == {"season"}
    assert set(table["status"]) == {"won"} and set(table["cv_folds_won"]) == {3.0}
    assert set(table["decision"]) == {"promote"}


def test_the_fallback_is_the_first_model_candidate_fitted_on_every_row(tmp_path: Path) -> None:
    model = selecting_model()
    model["fallback"] = "global"
    path = write_bundle(tmp_path, frame=panel(stores=4, seasonal=2), models={"demand": model})
    project = mm.load_bundle(path)
    run = project.train("demand", workers=1)
    assert run.summary["fallback_ok"] == 1
    unseen = panel(stores=1, seasonal=0, weeks=4).assign(segment="store_new").drop(columns=["label"])
    scored = project.score("demand", unseen)
    assert set(scored["model_source"]) == {"fallback"} and scored["prediction"].notna().all()
