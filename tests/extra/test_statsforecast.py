"""statsforecast's models as forecast candidates (the `forecast` extra), as a user runs them: validate, train among
LightGBM and baselines, forecast from the pack through the CLI, evaluate and promote; the forecasts are
statsforecast's own, the saved models load without pickle and refuse anything else.

statsforecast asks for pandas < 3: `make test` runs this folder in a second virtualenv (.venv-forecast, made from
the `test-forecast` extra); in .venv, which has pandas 3 and no statsforecast, it is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from typer.testing import CliRunner

pytest.importorskip("statsforecast", reason="the forecast extra runs in .venv-forecast (make test)")

import skops.io  # noqa: E402
from statsforecast import StatsForecast  # noqa: E402
from statsforecast.models import AutoARIMA, AutoETS  # noqa: E402

import manymodels as mm  # noqa: E402
from helpers import (  # noqa: E402
    forecast_block,
    future_known,
    latest_pack,
    series_frame,
    serving,
    write_bundle,
)
from manymodels.cli.main import app  # noqa: E402
from manymodels.estimators.statistical import dump_statistical, load_statistical  # noqa: E402
from manymodels.segment.forecaster import load_forecaster  # noqa: E402

runner = CliRunner()
WIDE = {"COLUMNS": "200"}
STATISTICAL = [
    {"name": "ets", "type": "statsforecast", "model": "AutoETS", "params": {"season_length": 4}},
    {"name": "arima", "type": "statsforecast", "model": "AutoARIMA", "params": {"season_length": 4}},
    {"name": "croston", "type": "statsforecast", "model": "CrostonOptimized"},
]


def frame() -> pd.DataFrame:
    return series_frame(segments=6, steps=48, seed=3, noise=1.0).drop(columns=["price", "region"])


def block(**overrides: object) -> dict[str, object]:
    made = forecast_block(features={"lags": [1, 2, 4]}, candidates=[
        *STATISTICAL,
        {"name": "lgbm", "type": "lightgbm", "params": {"num_boost_round": 20, "min_data_in_leaf": 3}},
        {"name": "naive", "type": "baseline", "method": "naive"},
        {"name": "stats", "type": "ensemble", "members": ["ets", "arima"]},
    ], refit=True, selection={"regret": True})
    made.update(overrides)
    return made


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Validated and trained through the CLI, once."""
    root = tmp_path_factory.mktemp("statsforecast")
    write_bundle(root, frame=frame(), models={"demand": block()})
    checked = runner.invoke(app, ["--bundle", str(root), "validate"])
    assert checked.exit_code == 0, checked.output
    trained = runner.invoke(app, ["--bundle", str(root), "train", "demand", "--workers", "2"], env=WIDE)
    assert trained.exit_code == 0, trained.output
    assert "6 ok / 0 failed of 6" in trained.output, trained.output
    assert "regret (holdout)" in trained.output and "chose the holdout's best candidate" in trained.output
    yield root


def test_statistical_candidates_are_chosen_per_segment_and_forecast_as_statsforecast_does(project: Path) -> None:
    """Each segment chooses among statsforecast's models, LightGBM, a baseline and an ensemble on the same windows;
    with `refit`, a segment won by AutoETS or AutoARIMA forecasts what statsforecast itself forecasts from the same
    rows, through the CLI, from the pack alone."""
    api = mm.load_bundle(project)
    manifest = api.manifest("demand").set_index("segment")
    scored = json.loads(manifest["cv_scores"].iloc[0])
    assert {"ets", "arima", "croston", "lgbm", "naive", "stats"} <= set(scored)  # all judged on the same windows
    assert all(len(scored[n]["folds"]) == 2 for n in ("ets", "arima", "lgbm"))
    assert all("holdout" in scored[n] for n in ("ets", "arima", "croston", "lgbm", "naive", "stats"))
    won = manifest.index[manifest["candidate"].isin(["ets", "arima"])]
    assert len(won) >= 1, manifest["candidate"].tolist()
    out = project / "next.parquet"
    made = runner.invoke(app, ["--bundle", str(project), "forecast", "demand", "--out", str(out)], env=WIDE)
    assert made.exit_code == 0, made.output
    forecasts = pd.read_parquet(out)
    assert len(forecasts) == 6 * 4 and forecasts["prediction"].notna().all()
    history = frame().sort_values(["segment", "week"])
    for segment in won:
        rows = history[history["segment"] == segment]
        model = {"ets": AutoETS, "arima": AutoARIMA}[manifest.loc[segment, "candidate"]](season_length=4)
        theirs = StatsForecast(models=[model], freq="W-MON").forecast(
            df=pd.DataFrame({"unique_id": segment, "ds": rows["week"].to_numpy(), "y": rows["units"].to_numpy()}), h=4)
        ours = forecasts[forecasts["segment"] == segment].sort_values("week")
        np.testing.assert_allclose(ours["prediction"].to_numpy(), theirs.iloc[:, -1].to_numpy(), atol=1e-6)
        assert (ours["week"].to_numpy() == theirs["ds"].to_numpy()).all()


def test_evaluate_and_promote_judge_the_model_the_holdout_measured(project: Path) -> None:
    """`refit` keeps the measured model inside: evaluate on the holdout gives training's metric, to the digit, for
    statistical winners too; the first promotion registers every segment."""
    api = mm.load_bundle(project)
    manifest = api.manifest("demand").set_index("segment")
    table = api.evaluate("demand").table.set_index("segment")
    np.testing.assert_allclose(table.loc[manifest.index, "challenger"], manifest["rmse"], atol=1e-9)
    promoted = api.promote("demand")
    assert promoted.version is not None and promoted.previous is None and promoted.promoted == 6, promoted
    expected = api.forecast("demand")  # the champion, from the registry
    assert len(expected) == 6 * 4


def test_mlflow_pyfunc_and_serve_answer_with_the_statistical_models(project: Path) -> None:
    """The champion (promoted above) loads in MLflow's pyfunc and in `manymodels serve` (real HTTP), answers rows of
    segment and time as `forecast` does, and its requirements pin statsforecast and skops."""
    api = mm.load_bundle(project)
    if not api.versions("demand"):
        api.promote("demand")
    expected = api.forecast("demand").set_index(["segment", "week"])["prediction"]
    rows = expected.reset_index()[["segment", "week"]]
    rows = rows[rows.groupby("segment").cumcount() < 2]
    want = expected.loc[list(zip(rows["segment"], rows["week"], strict=True))].to_numpy(dtype=float)
    mlflow.set_tracking_uri(api.tracking_uri)
    uri = f"models:/{api.registered_model('demand')}@champion"
    answered = mlflow.pyfunc.load_model(uri).predict(rows)["prediction"].to_numpy(dtype=float)
    np.testing.assert_allclose(answered, want, atol=1e-9)
    required = Path(mlflow.artifacts.download_artifacts(f"{uri}/requirements.txt")).read_text().split()
    assert {r.split("==")[0] for r in required} >= {"statsforecast", "skops", "lightgbm"}, required

    with serving(project) as url:
        records = rows.assign(week=rows["week"].dt.strftime("%Y-%m-%d")).to_dict("records")
        reply = requests.post(f"{url}/invocations", json={"dataframe_records": records}, timeout=60)
        assert reply.status_code == 200, reply.text
        np.testing.assert_allclose([p["prediction"] for p in reply.json()["predictions"]], want, atol=1e-9)


def test_a_saved_statistical_model_is_skops_and_loads_only_statsforecast_types(project: Path) -> None:
    """The pack keeps a statistical model in skops' format, never pickle; loading it builds only its model class and
    statsforecast's result records, and refuses a file that names any other type before building anything."""
    api = mm.load_bundle(project)
    pack = latest_pack(api)
    manifest = pack.manifest.set_index("segment")
    segment = int(manifest.loc[manifest["candidate"].isin(["ets", "arima"]), "segment_index"].iloc[0])
    forecaster = pack.model_of(segment)
    assert forecaster.formats == ["statsforecast-skops"]
    blob = forecaster.measured.blobs[0]  # the model the holdout measured; the forecaster's own is fitted again
    assert set(skops.io.get_untrusted_types(data=blob)) <= {"statsforecast.models.AutoETS",
                                                             "statsforecast.models.AutoARIMA",
                                                             "statsforecast.utils.results"}
    assert load_forecaster(forecaster.to_bytes()).models[0].model.__class__.__name__ in ("AutoETS", "AutoARIMA")

    ran = []
    hostile = skops.io.dumps(Planted(ran))
    with pytest.raises(ValueError, match="must not hold"):
        load_statistical(hostile)
    assert not ran
    assert load_statistical(dump_statistical(AutoETS(season_length=4).fit(np.arange(20.0)))).model_ is not None


class Planted:
    """A type no statsforecast model holds: what a tampered file would name."""

    def __init__(self, ran: list[str]) -> None:
        self.ran = ran

    def __setstate__(self, state: dict[str, object]) -> None:
        state["ran"].append("built")  # type: ignore[attr-defined]
        self.__dict__.update(state)


def test_validate_names_an_unknown_model_and_parameter_at_their_lines(tmp_path: Path) -> None:
    """A model statsforecast does not have, and a parameter its constructor does not take: each at its own line,
    with the closest name."""
    write_bundle(tmp_path, frame=frame(), models={"demand": block(candidates=[
        {"name": "ets", "type": "statsforecast", "model": "AutoETs"},
        {"name": "arima", "type": "statsforecast", "model": "AutoARIMA", "params": {"season_lenght": 4}},
    ])})
    checked = runner.invoke(app, ["--bundle", str(tmp_path), "validate"], env=WIDE)
    assert checked.exit_code == 2, checked.output
    text = " ".join(checked.output.split())
    assert "candidates[0].model: statsforecast has no model 'AutoETs' (did you mean 'AutoETS'?)" in text, text
    assert "candidates[1].params.season_lenght: statsforecast's AutoARIMA has no parameter 'season_lenght' (did you " \
           "mean 'season_length'?)" in text, text
    assert "manymodels.yml:" in text


def test_a_segment_with_a_gap_fails_the_statistical_candidates_not_the_run(tmp_path: Path) -> None:
    """statsforecast's models take no missing value: with `gaps: missing` a segment with a hole is judged without
    them (each one's error kept), and chooses among the others."""
    rows = frame()
    holed = rows.drop(rows[(rows["segment"] == "store_00")].sort_values("week").index[20])
    write_bundle(tmp_path, frame=holed, models={"demand": block(gaps="missing", refit=False)})
    api = mm.load_bundle(tmp_path)
    run = api.train("demand", workers=1)
    manifest = run.manifest.set_index("segment")
    assert (manifest["status"] == "ok").all(), manifest["error"].tolist()
    scored = json.loads(manifest.loc["store_00", "cv_scores"])
    assert "need every step's label" in scored["ets"]["error"], scored["ets"]
    assert manifest.loc["store_00", "candidate"] not in ("ets", "arima", "croston", "stats")


def test_a_model_that_reads_regressors_takes_the_known_features(tmp_path: Path) -> None:
    """AutoARIMA reads the `known` features as exogenous regressors: in its windows, its fit and its forecasts
    (from the pack's kept history of them and the values ahead); with `refit`, what statsforecast forecasts with the
    same regressors. On series that price moves, it beats the same model without them."""
    rows = series_frame(segments=4, steps=48, seed=5).drop(columns=["region"])
    t = (rows["week"] - rows["week"].min()).dt.days.to_numpy() // 7
    noise = np.random.default_rng(5).normal(0, 0.5, len(rows))
    rows["units"] = 50 + 0.3 * t - 30 * (rows["price"].to_numpy() - 1) + noise  # price moves units; no season
    arima = {"name": "arima", "type": "statsforecast", "model": "AutoARIMA"}
    with_price = block(features={"lags": [1], "known": ["price"]}, candidates=[arima])
    write_bundle(tmp_path / "with", frame=rows, models={"demand": with_price})
    write_bundle(tmp_path / "without", frame=rows, models={"demand": block(features={"lags": [1]},
                                                                                 candidates=[arima])})
    ahead = future_known(rows)
    ahead.to_parquet(tmp_path / "with" / "future.parquet", index=False)
    api, plain = mm.load_bundle(tmp_path / "with"), mm.load_bundle(tmp_path / "without")
    trained, alone = api.train("demand", workers=1), plain.train("demand", workers=1)
    manifest = trained.manifest.set_index("segment")
    won = manifest.index[manifest["candidate"] == "arima"]
    assert len(won) >= 2, manifest["candidate"].tolist()
    with_rmse = manifest.loc[won, "rmse"]
    assert with_rmse.median() < alone.manifest.set_index("segment").loc[won, "rmse"].median()

    ours = api.forecast("demand", known=str(tmp_path / "with" / "future.parquet"))
    history = rows.sort_values(["segment", "week"])
    for segment in won:
        part = history[history["segment"] == segment]
        frame_ = pd.DataFrame({"unique_id": segment, "ds": part["week"].to_numpy(), "y": part["units"].to_numpy(),
                               "price": part["price"].to_numpy()})
        future_ = ahead[ahead["segment"] == segment].rename(columns={"segment": "unique_id", "week": "ds"})
        theirs = StatsForecast(models=[AutoARIMA()], freq="W-MON").forecast(
            df=frame_, h=4, X_df=future_[["unique_id", "ds", "price"]])
        got = ours[ours["segment"] == segment].sort_values("week")["prediction"].to_numpy()
        np.testing.assert_allclose(got, theirs["AutoARIMA"].to_numpy(), atol=1e-6)
    # without the values ahead, a model that reads them cannot forecast: the command says so
    with pytest.raises(Exception, match="price"):
        api.forecast("demand")


def test_statistical_candidates_on_spark_give_the_local_engines_models(project: Path, spark: Any) -> None:
    """The engine contract for statistical candidates: the module's bundle trained on Spark (local[2], executors
    importing statsforecast as the driver does) gives every segment the local engine's winner, holdout metric,
    regret scores and forecast."""
    api = mm.load_bundle(project)
    local_run = api.runs("demand")[-1].run_id  # the module's first training, on the local engine
    on_spark = mm.load_bundle(project, spark=spark).train("demand")
    a = api.manifest("demand", local_run).set_index("segment").sort_index()
    b = on_spark.manifest.set_index("segment").sort_index()
    assert (b["status"] == "ok").all(), b["error"].tolist()
    assert a["candidate"].tolist() == b["candidate"].tolist()
    np.testing.assert_allclose(a["rmse"].to_numpy(), b["rmse"].to_numpy(), atol=1e-9)
    for mine_, theirs_ in zip(a["cv_scores"].map(json.loads), b["cv_scores"].map(json.loads), strict=True):
        assert mine_.keys() == theirs_.keys()
        assert [mine_[n]["holdout"] for n in mine_] == pytest.approx([theirs_[n]["holdout"] for n in mine_], abs=1e-9)
    mine = api.forecast("demand", run_id=local_run).sort_values(["segment", "week"])
    theirs = api.forecast("demand", run_id=on_spark.run_id).sort_values(["segment", "week"])
    np.testing.assert_allclose(mine["prediction"].to_numpy(), theirs["prediction"].to_numpy(), atol=1e-9)


def test_a_statistical_model_gives_its_own_intervals_when_asked(tmp_path: Path) -> None:
    """`intervals: model`: a segment won by AutoETS forecasts statsforecast's own prediction intervals (with
    `refit`, the same as StatsForecast's from the same rows, at 80% and at 95%, where 2 windows of 4 steps are
    too few for a conformal 95%); training measures them on the holdout; a segment won by the baseline keeps its
    conformal 80% and has no 95%. On another type, `intervals: model` is a validate error at its line."""
    ets = {"name": "ets", "type": "statsforecast", "model": "AutoETS", "params": {"season_length": 4},
           "intervals": "model"}
    write_bundle(tmp_path, frame=frame(), models={"demand": block(candidates=[
        ets, {"name": "naive", "type": "baseline", "method": "naive"}])})
    api = mm.load_bundle(tmp_path)
    manifest = api.train("demand", workers=1).manifest.set_index("segment")
    won = manifest.index[manifest["candidate"] == "ets"]
    assert len(won) >= 1, manifest["candidate"].tolist()
    scores = manifest.loc[won, "interval_scores"].map(json.loads)
    assert all(s["95"]["coverage"] is not None and s["95"]["winkler"] > 0 for s in scores)  # the model's own
    ours = api.forecast("demand", levels=[80, 95])
    history = frame().sort_values(["segment", "week"])
    for segment in won:
        rows = history[history["segment"] == segment]
        theirs = StatsForecast(models=[AutoETS(season_length=4)], freq="W-MON").forecast(
            df=pd.DataFrame({"unique_id": segment, "ds": rows["week"].to_numpy(), "y": rows["units"].to_numpy()}),
            h=4, level=[80, 95])
        got = ours[ours["segment"] == segment].sort_values("week")
        for column in ("lo-80", "hi-80", "lo-95", "hi-95"):
            np.testing.assert_allclose(got[column].to_numpy(dtype=float), theirs[f"AutoETS-{column}"].to_numpy(),
                                       atol=1e-6)
    others = ours[~ours["segment"].isin(won)]
    if len(others):  # the baseline's: conformal 80% from its 8 window errors, no 95% (19 needed)
        assert others["lo-80"].notna().all() and others["lo-95"].isna().all()

    wrong = block(candidates=[{"name": "naive", "type": "baseline", "method": "naive", "intervals": "model"},
                              {"name": "lgbm", "type": "lightgbm"}])
    write_bundle(tmp_path / "wrong", frame=frame(), models={"demand": wrong})
    checked = runner.invoke(app, ["--bundle", str(tmp_path / "wrong"), "validate"], env=WIDE)
    text = " ".join(checked.output.split())
    assert checked.exit_code == 2 and "intervals: model (a model's own prediction intervals) is for type " \
                                      "statsforecast" in text and "manymodels.yml:" in text, text


def test_a_model_reads_its_own_regressors_from_a_pack_that_knows_more(tmp_path: Path) -> None:
    """A promotion's composite pack keeps every plan's known features; a statistical model fitted with fewer reads
    its own from them (history and values ahead): the same forecasts and intervals as under its own plan."""
    from manymodels.data.timegrid import TimeGrid
    from manymodels.segment.forecast import forecast_many, model_widths, origins_from_series
    from manymodels.segment.forecaster import fit_forecaster, tail_width
    from manymodels.segment.series import series_of
    from manymodels.segment.spec import Candidate, ForecastPlan

    rows = series_frame(segments=1, steps=40, seed=7).drop(columns=["region"])
    rows["promo"] = np.arange(len(rows)) % 2 * 1.0
    grid = TimeGrid.of("W-MON", "date")
    own = ForecastPlan(time="week", horizon=4, freq="W-MON", lags=(1,), known=("price",), transforms=())
    wide = replace(own, known=("promo", "price"))
    arima = Candidate("arima", "statsforecast", entry="AutoARIMA", own_intervals=True)
    fitted = replace(fit_forecaster(arima, {}, own, series_of(rows, own, "units", grid)), plan=own)
    ahead = np.column_stack([np.ones(4), np.linspace(0.9, 1.1, 4)])  # promo, price
    alone = forecast_many(own, grid, [fitted], origins_from_series([series_of(rows, own, "units", grid)], own,
                                                                     tail_width(own, fitted)), 4, ahead[None, :, 1:])
    origins = origins_from_series([series_of(rows, wide, "units", grid)], wide, tail_width(wide, fitted))
    together = forecast_many(wide, grid, [fitted], origins, 4, ahead[None])
    assert np.isfinite(alone).all()
    np.testing.assert_allclose(together, alone, atol=1e-9)
    widths = model_widths(wide, [fitted], origins, 4, ahead[None], [80])
    assert np.isfinite(widths).all() and (widths > 0).all()
