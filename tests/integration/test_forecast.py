"""Forecasting as a user runs it: the issue's bundle as written, from raw rows to `manymodels forecast`, then
evaluate, promote, the pyfunc, `serve` over real HTTP, `monitor` and a job, on one trained project."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import yaml
from typer.testing import CliRunner

import manymodels as mm
from helpers import ISSUE_25_MODEL, open_page, series_frame, serving, stop_after
from manymodels.cli.main import app
from manymodels.registry.pack_info import DamagedModel

runner = CliRunner()
WIDE = {"COLUMNS": "200"}

BUNDLE = """\
bundle: {name: forecasting}
targets:
  dev: {default: true}
resources:
  datasets:
    sales: {format: parquet, path: data/sales.parquet}
    future: {format: parquet, path: data/future.parquet}
  models:
    demand:
      dataset: sales
      segment_by: [store]
      label: units
""" + ISSUE_25_MODEL + """\
  jobs:
    weekly:
      tasks:
        - {key: train, train: demand}
        - {key: forecast, forecast: {model: demand, known: future, output: data/next.parquet}, depends_on: [train]}
"""


def sales() -> pd.DataFrame:
    """120 weeks of 5 stores (price and promo known ahead), plus a store too young to forecast."""
    frame = pd.concat([series_frame(segments=5, steps=120, seed=11),
                       series_frame(names=["young"], steps=30, seed=12)], ignore_index=True)
    frame = frame.rename(columns={"segment": "store"})
    return frame.assign(promo=(frame["week"].dt.day <= 7).astype(np.int64))


def future(frame: pd.DataFrame, steps: int = 12) -> pd.DataFrame:
    weeks = pd.date_range("2026-12-07", periods=steps, freq="W-MON").as_unit("us")
    stores = sorted(frame["store"].unique())
    rows = [(s, w, 1.0 + 0.02 * (k % 5), int(w.day <= 7)) for s in stores for k, w in enumerate(weeks)]
    return pd.DataFrame(rows, columns=["store", "week", "price", "promo"])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The issue's bundle trained once (validate, then train through the CLI)."""
    root = tmp_path_factory.mktemp("forecasting")
    (root / "data").mkdir()
    frame = sales()
    frame.to_parquet(root / "data" / "sales.parquet", index=False)
    future(frame).to_parquet(root / "data" / "future.parquet", index=False)
    (root / "manymodels.yml").write_text(BUNDLE)
    checked = runner.invoke(app, ["--bundle", str(root), "validate"])
    assert checked.exit_code == 0, checked.output
    trained = runner.invoke(app, ["--bundle", str(root), "train", "demand", "--workers", "2"], env=WIDE)
    assert trained.exit_code == 0, trained.output
    assert "5 ok / 1 failed of 6" in trained.output and "won (CV)" in trained.output
    assert "thin: 30 step(s) of history" in trained.output  # the young store, named
    assert "intervals (holdout)" in trained.output and "95%: median coverage" in trained.output
    yield root


def test_forecast_from_the_pack_with_known_future_values(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "next.parquet"
    done = runner.invoke(app, ["--bundle", str(project), "forecast", "demand", "--known", "future", "--out", str(out)],
                         env=WIDE)
    assert done.exit_code == 0, done.output
    assert "5 segments x 12 steps, from the history kept in the pack" in done.output
    assert "1 segments (failed or thin in training" in done.output
    got = pd.read_parquet(out)
    assert list(got.columns) == ["store", "week", "step", "prediction", "model_source"]
    assert len(got) == 60 and got["prediction"].notna().all() and (got["model_source"] == "segment").all()
    assert got.groupby("store")["week"].min().eq(pd.Timestamp("2026-12-07")).all()
    assert got["step"].tolist()[:12] == list(range(1, 13))

    # The Python API in this process gives the same rows; newer history (--data) with no new rows, the same too.
    api = mm.load_bundle(project).forecast("demand", known="future")
    pd.testing.assert_frame_equal(api, got, check_dtype=False)
    page = mm.load_bundle(project).report("demand", out=tmp_path / "report.html").read_text()
    assert "Forecast error by step (holdout)" in page and "worse than naive on the holdout" in page
    assert "95% interval (holdout)" in page and "median coverage" in page
    again = mm.load_bundle(project).forecast("demand", known="future", data="sales")
    np.testing.assert_allclose(again["prediction"].to_numpy(dtype=float), got["prediction"].to_numpy(dtype=float),
                               atol=1e-9)


def test_forecast_errors_are_one_line_and_exit_2(project: Path, tmp_path: Path) -> None:
    known = future(sales())
    short = tmp_path / "short.parquet"
    known[~((known["store"] == "store_02") & (known["week"] == pd.Timestamp("2027-01-04")))].to_parquet(short)
    missing = runner.invoke(app, ["--bundle", str(project), "forecast", "demand", "--known", str(short), "--out",
                                  str(tmp_path / "x.parquet")])
    assert missing.exit_code == 2
    assert "no row for segment 'store_02' at week 2027-01-04T00:00:00" in missing.output
    none = runner.invoke(app, ["--bundle", str(project), "forecast", "demand", "--out", str(tmp_path / "x.parquet")])
    assert none.exit_code == 2 and "reads known feature(s) price, promo: give their future values" in none.output
    past = runner.invoke(app, ["--bundle", str(project), "forecast", "demand", "--known", "future", "--horizon", "13",
                               "--out", str(tmp_path / "x.parquet")])
    assert past.exit_code == 2 and "--horizon 13 is past the 12 steps" in past.output
    level = runner.invoke(app, ["--bundle", str(project), "forecast", "demand", "--known", "future", "--level", "100",
                                "--out", str(tmp_path / "x.parquet")])
    assert level.exit_code == 2 and "--level is a percent between 0 and 100" in level.output
    assert not (tmp_path / "x.parquet").exists()


def test_prediction_intervals_come_from_each_segments_windows(project: Path, tmp_path: Path) -> None:
    """`--level`: lo-<level> and hi-<level> around each forecast, nested (95% around 80%), widening with the step;
    the same from the Python API and from newer rows; training judged them on the holdout (interval_scores)."""
    out = tmp_path / "bands.parquet"
    done = runner.invoke(app, ["--bundle", str(project), "forecast", "demand", "--known", "future", "--level", "80",
                               "--level", "95", "--out", str(out)], env=WIDE)
    assert done.exit_code == 0, done.output
    got = pd.read_parquet(out)
    assert list(got.columns) == ["store", "week", "step", "prediction", "model_source", "lo-80", "hi-80", "lo-95",
                                 "hi-95"]
    assert got[["lo-80", "hi-80", "lo-95", "hi-95"]].notna().all().all()
    assert ((got["lo-95"] <= got["lo-80"]) & (got["lo-80"] < got["prediction"]) & (got["prediction"] < got["hi-80"])
            & (got["hi-80"] <= got["hi-95"])).all()
    width = (got["hi-80"] - got["lo-80"]).to_numpy().reshape(5, 12)
    assert (np.diff(width, axis=1) > 0).all()  # wider each step ahead
    api = mm.load_bundle(project)
    same = api.forecast("demand", known="future", levels=[80, 95])
    pd.testing.assert_frame_equal(same, got, check_dtype=False)
    newer = api.forecast("demand", known="future", data="sales", levels=[80, 95])
    np.testing.assert_allclose(newer["lo-95"].to_numpy(dtype=float), got["lo-95"].to_numpy(dtype=float), atol=1e-9)
    scores = api.manifest("demand").set_index("store")["interval_scores"].dropna().map(json.loads)
    assert len(scores) == 5 and all(0 <= s["95"]["coverage"] <= 1 and s["80"]["winkler"] > 0 for s in scores)


def test_evaluate_and_promote_compare_the_same_horizon(project: Path) -> None:
    evaluated = runner.invoke(app, ["--bundle", str(project), "evaluate", "demand"], env=WIDE)
    assert evaluated.exit_code == 0, evaluated.output
    promoted = runner.invoke(app, ["--bundle", str(project), "promote", "demand"], env=WIDE)
    assert promoted.exit_code == 0, promoted.output
    project_api = mm.load_bundle(project)
    table = project_api.evaluate("demand", save=False).table.set_index("store")
    manifest = project_api.manifest("demand").set_index("store")
    ok = manifest.index[manifest["status"] == "ok"]
    # The challenger's holdout error is what training measured: 12 steps forecast from the same origin.
    np.testing.assert_allclose(table.loc[ok, "challenger"], manifest.loc[ok, "rmse"], atol=1e-9)
    assert (table.loc[ok, "rows"] == 12).all()
    steps = manifest.loc[ok, "step_metric"].map(lambda text: len(json.loads(text)))
    assert (steps == 12).all() and manifest.loc[ok, "holdout_naive"].gt(0).all()


def test_the_champion_answers_rows_of_segment_time_and_known_values(project: Path) -> None:
    """MLflow's pyfunc and `manymodels serve` (real HTTP) forecast the rows' times, as `forecast` does, with the
    same prediction intervals when asked for `levels`."""
    project_api = mm.load_bundle(project)
    banded = project_api.forecast("demand", known="future", levels=[80]).set_index(["store", "week"])
    expected = banded["prediction"]
    rows = future(sales()).query("store != 'young'")
    rows = rows[rows["week"] <= pd.Timestamp("2026-12-21")]  # steps 1 to 3 of every store
    mlflow.set_tracking_uri(project_api.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{project_api.registered_model('demand')}@champion")
    answered = model.predict(rows)["prediction"].to_numpy(dtype=float)
    asked = list(zip(rows["store"], rows["week"], strict=True))
    want = expected.loc[asked].to_numpy(dtype=float)
    np.testing.assert_allclose(answered, want, atol=1e-9)
    with_bands = model.predict(rows, params={"levels": [80]})
    assert list(with_bands.columns) == ["prediction", "model_source", "lo-80", "hi-80"]
    low, high = banded.loc[asked, "lo-80"].to_numpy(dtype=float), banded.loc[asked, "hi-80"].to_numpy(dtype=float)
    np.testing.assert_allclose(with_bands["lo-80"].to_numpy(dtype=float), low, atol=1e-9)
    np.testing.assert_allclose(with_bands["hi-80"].to_numpy(dtype=float), high, atol=1e-9)
    params = model.metadata.get_params_schema()
    assert params is not None and json.loads(params.to_json()) == [{"name": "levels", "type": "double",
                                                                     "default": [], "shape": [-1]}]

    with serving(project) as url:
        records = rows.assign(week=rows["week"].dt.strftime("%Y-%m-%d")).to_dict("records")
        reply = requests.post(f"{url}/invocations", json={"dataframe_records": records}, timeout=30)
        assert reply.status_code == 200, reply.text
        served = [p["prediction"] for p in reply.json()["predictions"]]
        np.testing.assert_allclose(served, want, atol=1e-9)
        body = {"dataframe_records": records, "params": {"levels": [80]}}
        reply = requests.post(f"{url}/invocations", json=body, timeout=30)
        assert reply.status_code == 200, reply.text
        answers = reply.json()["predictions"]
        np.testing.assert_allclose([a["lo-80"] for a in answers], low, atol=1e-9)
        np.testing.assert_allclose([a["hi-80"] for a in answers], high, atol=1e-9)
        for params, said in [({"levels": [100]}, "between 0 and 100"),
                             ({"level": [80]}, "unknown parameter(s) 'level'"), ([80], "must be an object")]:
            refused = requests.post(f"{url}/invocations", json={"dataframe_records": records, "params": params},
                                    timeout=30)
            assert refused.status_code == 400 and said in refused.json()["message"], refused.text
        # Step 3 alone passes through steps 1 and 2, whose known values it was not given: a 4xx naming them.
        alone = [r for r in records if r["week"] == "2026-12-21"][:1]
        refused = requests.post(f"{url}/invocations", json={"dataframe_records": alone}, timeout=30)
        assert refused.status_code == 400 and "passes through step 1" in refused.json()["message"]


def test_monitor_judges_the_forecast_error_per_step(project: Path, tmp_path: Path) -> None:
    project_api = mm.load_bundle(project)
    forecasts = project_api.forecast("demand", known="future")
    actual = future(sales()).merge(forecasts[["store", "week", "prediction"]], on=["store", "week"])
    actual["units"] = actual.pop("prediction").astype(float) + 2.0  # every forecast 2 off
    actual.loc[actual["store"] == "store_01", "units"] += 50.0  # one store's level jumped
    path = tmp_path / "actual.parquet"
    actual.to_parquet(path, index=False)
    watched = runner.invoke(app, ["--bundle", str(project), "monitor", "demand", "--data", str(path)], env=WIDE)
    assert "rmse by step" in watched.output and "1: 23.32" in watched.output, watched.output  # sqrt((4*4 + 52^2)/5)
    outcome = project_api.monitor("demand", path, save=False)
    table = outcome.table.set_index("store")
    assert table.loc["store_01", "status"] == "degraded" and table.loc["store_00", "rows"] == 12
    # 12 of 12 outside the band; the 12 steps of one forecast count as fewer independent rows (design_effect)
    assert table.loc["store_01", "coverage_95"] == 0.0 and table.loc["store_01", "coverage_p"] < 1e-3
    assert (table["design_effect"] > 1).all() and table["design_effect"].nunique() == 1
    assert (table.drop(index="store_01")["coverage_95"] == 1.0).all()  # 2 off: inside every band
    assert outcome.steps is not None and outcome.steps["segments"].tolist() == [5] * 12


def test_a_job_trains_and_forecasts(project: Path) -> None:
    ran = runner.invoke(app, ["--bundle", str(project), "run", "weekly"], env=WIDE)
    assert ran.exit_code == 0, ran.output
    written = pd.read_parquet(project / "data" / "next.parquet")
    assert len(written) == 60 and written["prediction"].notna().all()


def test_a_fallback_forecasts_thin_and_unseen_segments(tmp_path: Path) -> None:
    """`fallback: global` is one model over every store's history: it forecasts a store too young for a model of its
    own from the state kept beside it, and a store unseen in training from its rows (--data)."""
    frame = pd.concat([series_frame(segments=4, steps=40, seed=3), series_frame(names=["young"], steps=10, seed=4)],
                      ignore_index=True).rename(columns={"segment": "store"})
    (tmp_path / "data").mkdir()
    frame.to_parquet(tmp_path / "data" / "sales.parquet", index=False)
    bundle = {
        "bundle": {"name": "fallbacks"},
        "resources": {
            "datasets": {"sales": {"path": "data/sales.parquet"}},
            "models": {"demand": {
                "task": "forecast", "dataset": "sales", "segment_by": ["store"], "label": "units", "time": "week",
                "horizon": 4, "features": {"lags": [1, 2, 4], "known": ["price"]}, "fallback": "global",
                "candidates": [{"name": "lgbm", "params": {"num_boost_round": 20, "min_data_in_leaf": 3}},
                               {"name": "ridge", "type": "sklearn", "entry": "sklearn.linear_model.Ridge"}],
            }},
        },
    }
    (tmp_path / "manymodels.yml").write_text(yaml.safe_dump(bundle))
    trained = runner.invoke(app, ["--bundle", str(tmp_path), "train", "demand"], env=WIDE)
    assert trained.exit_code == 0, trained.output
    assert "4 ok / 1 failed of 5" in trained.output and "it forecasts the 1 thin segment(s)" in trained.output
    known = future(frame, steps=4).query("store != 'young'")
    known = pd.concat([known, future(frame, steps=4).query("store == 'store_00'").assign(store="young")])
    known.to_parquet(tmp_path / "known.parquet", index=False)
    out = tmp_path / "next.parquet"
    done = runner.invoke(app, ["--bundle", str(tmp_path), "forecast", "demand", "--known",
                               str(tmp_path / "known.parquet"), "--out", str(out)], env=WIDE)
    assert done.exit_code == 0, done.output
    assert "1 of them by the fallback" in done.output
    got = pd.read_parquet(out)
    assert got.groupby("store")["model_source"].first().to_dict() == {
        **{f"store_0{i}": "segment" for i in range(4)}, "young": "fallback"}
    assert got["prediction"].notna().all() and len(got) == 5 * 4

    # A store training never saw: the fallback, from its own rows.
    newcomer = frame[frame["store"] == "store_01"].assign(store="newcomer")
    history = pd.concat([frame, newcomer])
    ahead = pd.concat([known, known[known["store"] == "store_01"].assign(store="newcomer")])
    api = mm.load_bundle(tmp_path)
    fresh = api.forecast("demand", data=history, known=ahead)
    assert set(fresh.loc[fresh["store"] == "newcomer", "model_source"]) == {"fallback"}

    # After a promotion, the champion (a composed pack) still forecasts the young store: the state travels.
    api.promote("demand")
    mlflow.set_tracking_uri(api.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{api.registered_model('demand')}@champion")
    rows = known[known["store"] == "young"].head(2)
    answered = model.predict(rows)
    assert answered["model_source"].tolist() == ["fallback", "fallback"]
    np.testing.assert_allclose(answered["prediction"].to_numpy(dtype=float),
                               got.loc[got["store"] == "young", "prediction"].to_numpy(dtype=float)[:2], atol=1e-9)


def stores(root: Path, seed: int, settings: dict[str, object]) -> pd.DataFrame:
    """A bundle in `root` of one forecast model `demand` over 6 stores x 40 weeks (2 stores a chunk), with these
    settings (its candidates, selection...); the stores' rows."""
    frame = series_frame(segments=6, steps=40, seed=seed).rename(columns={"segment": "store"})
    (root / "data").mkdir()
    frame.to_parquet(root / "data" / "sales.parquet", index=False)
    model = {"task": "forecast", "dataset": "sales", "segment_by": ["store"], "label": "units", "time": "week",
             "horizon": 4, "features": {"lags": [1, 2, 4], "known": ["price"]}, **settings}
    bundle = {"bundle": {"name": "stores"},
              "targets": {"dev": {"default": True, "engine": {"max_chunk_rows": 80}}},  # 2 stores a chunk
              "resources": {"datasets": {"sales": {"path": "data/sales.parquet"}}, "models": {"demand": model}}}
    (root / "manymodels.yml").write_text(yaml.safe_dump(bundle))
    return frame


def test_a_global_candidate_is_one_model_the_segments_choose(tmp_path: Path) -> None:
    """`scope: global`: one LightGBM over every store's series, scored per store on the same windows as the stores'
    own models; the stores that chose it share its one file in the pack, forecast, evaluate and are served by it, also
    from a promoted (composed) pack."""
    frame = stores(tmp_path, 21, {
        "candidates": [{"name": "everyone", "scope": "global",
                        "params": {"num_boost_round": 30, "min_data_in_leaf": 3}},
                       {"name": "own", "type": "sklearn", "entry": "sklearn.linear_model.Ridge"},
                       {"name": "mix", "type": "ensemble", "members": ["everyone", "own"]}],
    })
    trained = runner.invoke(app, ["--bundle", str(tmp_path), "train", "demand"], env=WIDE)
    assert trained.exit_code == 0, trained.output
    api = mm.load_bundle(tmp_path)
    manifest = api.manifest("demand").set_index("store")
    chose = manifest.index[manifest["candidate"] == "everyone"]
    assert 0 < len(chose) < 6 and f"everyone {len(chose)}" in trained.output
    assert "mix" in set(manifest["candidate"]), manifest["candidate"].tolist()  # the global model as a member too
    shared = list(tmp_path.glob(".manymodels/artifacts/**/model/pack/shared/*.model"))
    assert len(shared) == 1  # one model, however many stores chose it
    scores = json.loads(manifest.loc[chose[0], "cv_scores"])
    assert len(scores["everyone"]["folds"]) == 3 and len(scores["own"]["folds"]) == 3  # the same windows

    known = future(frame, steps=4)
    out = tmp_path / "next.parquet"
    done = runner.invoke(app, ["--bundle", str(tmp_path), "forecast", "demand", "--out", str(out)], env=WIDE)
    assert done.exit_code == 2 and "price" in done.output  # known values are still asked for
    known.to_parquet(tmp_path / "known.parquet", index=False)
    done = runner.invoke(app, ["--bundle", str(tmp_path), "forecast", "demand", "--known",
                               str(tmp_path / "known.parquet"), "--out", str(out)], env=WIDE)
    assert done.exit_code == 0, done.output
    got = pd.read_parquet(out)
    assert got["prediction"].notna().all() and len(got) == 6 * 4 and (got["model_source"] == "segment").all()

    # What training measured on the holdout is what evaluate measures, for the stores on the shared model too.
    table = api.evaluate("demand", save=False).table.set_index("store")
    np.testing.assert_allclose(table.loc[manifest.index, "challenger"], manifest["rmse"], atol=1e-9)

    # Promoted: the composed pack carries the shared model; MLflow's pyfunc answers as `forecast` did.
    api.promote("demand")
    mlflow.set_tracking_uri(api.tracking_uri)
    champion = mlflow.pyfunc.load_model(f"models:/{api.registered_model('demand')}@champion")
    rows = known[known["store"] == chose[0]]
    answered = champion.predict(rows)
    np.testing.assert_allclose(answered["prediction"].to_numpy(dtype=float),
                               got.loc[got["store"] == chose[0], "prediction"].to_numpy(dtype=float), atol=1e-9)

    # A shared model whose bytes changed is damaged: never loaded; the command names it and writes nothing.
    promoted = list(tmp_path.glob(".manymodels/artifacts/**/model/pack/shared/*.model"))
    assert len(promoted) == 2
    for path in promoted:
        path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    broken = runner.invoke(app, ["--bundle", str(tmp_path), "forecast", "demand", "--known",
                                 str(tmp_path / "known.parquet"), "--out", str(tmp_path / "broken.parquet")], env=WIDE)
    assert broken.exit_code == 1 and "of candidate everyone is damaged: its bytes do not match" in broken.output
    assert not (tmp_path / "broken.parquet").exists()

    # --changed-only cannot retrain a model fitted on every store's rows from the changed stores alone.
    changed = runner.invoke(app, ["--bundle", str(tmp_path), "train", "demand", "--changed-only"], env=WIDE)
    assert changed.exit_code == 2 and "scope global" in changed.output and "whole fleet" in changed.output

    # A run stopped in its second chunk resumes: the global candidate is fitted again (the same model: the same
    # file name), the stores it had finished are kept, and the pack forecasts as the run never stopped did.
    with pytest.raises(KeyboardInterrupt):
        api.train("demand", workers=1, on_progress=stop_after(3))
    stopped = api.runs("demand")[0].run_id
    resumed = api.train("demand", resume=stopped, workers=1)
    assert resumed.run_id == stopped and resumed.summary["segments_ok"] == 6
    assert resumed.summary["segments_resumed"] == 2
    again = api.forecast("demand", run_id=stopped, known=known)
    np.testing.assert_allclose(again["prediction"].to_numpy(dtype=float), got["prediction"].to_numpy(dtype=float),
                               atol=1e-9)
    pack = api.target_context.open_pack(api.target_context.tracker.run(stopped))
    [own] = list(Path(pack.layout.shared).glob("*.model"))
    assert own.name in {p.name for p in shared}

    # verify (serve's start, rollback) finds a shared model missing as surely as a changed one.
    pack.verify()
    own.unlink()
    with pytest.raises(DamagedModel, match="of candidate everyone is damaged"):
        api.target_context.open_pack(api.target_context.tracker.run(stopped)).verify()


def test_selection_rule_fleet_gives_every_segment_one_candidate(tmp_path: Path) -> None:
    """`selection: {rule: fleet}`: one candidate for every store, judged on a sample before the fleet is fitted (the
    run says which and how each fared); a resumed run keeps the choice; --changed-only is refused."""
    frame = stores(tmp_path, 23, {
        "candidates": [{"name": "lgbm", "params": {"num_boost_round": 20, "min_data_in_leaf": 3}},
                       {"name": "ridge", "type": "sklearn", "entry": "sklearn.linear_model.Ridge"},
                       {"name": "drift", "type": "baseline", "method": "drift"},
                       {"name": "mix", "type": "ensemble", "members": ["lgbm", "ridge"]}],
        "selection": {"rule": "fleet", "sample": 4},
        "refit": True,  # the choice fitted again on every step; the measured model kept for evaluate
    })
    trained = runner.invoke(app, ["--bundle", str(tmp_path), "train", "demand"], env=WIDE)
    assert trained.exit_code == 0, trained.output
    api = mm.load_bundle(tmp_path)
    run = api.runs("demand")[0]
    chosen = run.tags["manymodels.selection.chosen"]
    ratios = json.loads(run.tags["manymodels.selection.ratios"])
    assert run.tags["manymodels.selection.sample"] == "4" and set(ratios) == {"lgbm", "ridge", "drift", "mix", "naive"}
    assert ratios[chosen] == min(ratios.values())
    manifest = api.manifest("demand")
    assert set(manifest["candidate"]) == {chosen} and len(manifest) == 6
    scores = json.loads(manifest["cv_scores"].iloc[0])
    assert set(scores) == set(ratios)  # every candidate still measured, and kept in the manifest
    table = api.evaluate("demand", save=False).table.set_index("store")  # judged by the models the holdout measured
    np.testing.assert_allclose(table.loc[manifest["store"], "challenger"], manifest["rmse"], atol=1e-9)
    ahead = api.forecast("demand", known=future(frame, steps=4))
    assert len(ahead) == 6 * 4 and ahead["prediction"].notna().all()

    with pytest.raises(KeyboardInterrupt):
        api.train("demand", workers=1, on_progress=stop_after(3))
    stopped = api.runs("demand")[0]
    resumed = api.train("demand", resume=stopped.run_id, workers=1)
    assert resumed.summary["segments_resumed"] == 2 and set(resumed.manifest["candidate"]) == {chosen}
    assert api.runs("demand")[0].tags["manymodels.selection.chosen"] == chosen

    changed = runner.invoke(app, ["--bundle", str(tmp_path), "train", "demand", "--changed-only"], env=WIDE)
    assert changed.exit_code == 2 and "selection.rule fleet" in changed.output


def test_the_report_draws_the_worst_segments_and_any_other_picked(project: Path, tmp_path: Path,
                                                                   browser: Any) -> None:
    """In headless Chromium: each drawn segment has its history, actual values, forecast and shaded intervals; the
    selector finds a store by part of its name and draws it from the page's own data; `--segment` writes one
    store's page; no console error anywhere. (The champion is a promotion's composite: its plots came along.)"""
    page_file, one = tmp_path / "report.html", tmp_path / "store.html"
    wrote = runner.invoke(app, ["--bundle", str(project), "report", "demand", "--out", str(page_file)], env=WIDE)
    assert wrote.exit_code == 0, wrote.output
    page, problems = open_page(browser, page_file)
    try:
        plots = page.locator("#forecast-plots .charts .js-plotly-plot")
        assert plots.count() == 5  # every store with a model (under the 25 drawn)
        for i in range(plots.count()):
            plot = plots.nth(i)
            names = plot.locator("g.legend text.legendtext").all_text_contents()
            assert {"history", "actual", "forecast", "80% interval", "95% interval"} <= set(names), names
            assert plot.locator("path.js-fill").count() >= 2, f"plot {i + 1} has no shaded interval"
        page.fill("#pick-query", "store_03")
        buttons = page.locator("#pick-list button")
        assert buttons.all_text_contents() == ["store_03"]
        buttons.first.click()
        chart = page.locator("#pick-chart")
        chart.locator("g.trace").first.wait_for()
        assert "store_03" in (chart.locator(".gtitle").text_content() or "")
        assert chart.locator("g.trace").count() == 7 and chart.locator("path.js-fill").count() >= 2
        assert problems == []
    finally:
        page.close()
    alone = runner.invoke(app, ["--bundle", str(project), "report", "demand", "--segment", "store_03", "--out",
                                str(one)], env=WIDE)
    assert alone.exit_code == 0 and "segment report of demand" in alone.output, alone.output
    page, problems = open_page(browser, one)
    try:
        assert page.locator(".js-plotly-plot").count() == 1 and page.locator("path.js-fill").count() >= 2
        assert problems == []
    finally:
        page.close()
    wrong = runner.invoke(app, ["--bundle", str(project), "report", "demand", "--segment", "store_3", "--out",
                                str(one)], env=WIDE)
    assert wrong.exit_code == 2 and "has no segment 'store_3'" in wrong.output and "did you mean" in wrong.output
    trained = [r.run_id for r in mm.load_bundle(project).runs("demand")]  # training runs, newest first
    thin = runner.invoke(app, ["--bundle", str(project), "report", "demand", "--segment", "young", "--run",
                               trained[0], "--out", str(one)], env=WIDE)
    assert thin.exit_code == 2 and "nothing to draw: it failed: thin" in thin.output, thin.output
