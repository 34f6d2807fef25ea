"""A forecast hierarchy (the `hierarchy` extra), as a user runs it: validate, train every level (the regions and the
total summed from the stores' rows), forecast through the CLI with intervals, and the forecasts add up at every
step; the holdout's accuracy per level before and after reconciliation in the run, the CLI and the report; the same
levels on Spark; each method as hierarchicalforecast gives it.

hierarchicalforecast asks for pandas < 3: `make test` runs this folder in .venv-forecast; elsewhere it is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

pytest.importorskip("hierarchicalforecast", reason="the hierarchy extra runs in .venv-forecast (make test)")

import manymodels as mm  # noqa: E402
from helpers import future_known, hierarchy_block, hierarchy_frame, same_levels_on, write_bundle  # noqa: E402
from manymodels.cli.main import app  # noqa: E402
from manymodels.data.hierarchy import summing  # noqa: E402
from manymodels.estimators.reconcile import reconcile  # noqa: E402

runner = CliRunner()
WIDE = {"COLUMNS": "200"}
STEPS, HORIZON = 40, 4


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Validated and trained through the CLI, once."""
    root = tmp_path_factory.mktemp("hierarchy")
    write_bundle(root, frame=hierarchy_frame(), models={"demand": hierarchy_block()})
    checked = runner.invoke(app, ["--bundle", str(root), "validate"])
    assert checked.exit_code == 0, checked.output
    trained = runner.invoke(app, ["--bundle", str(root), "train", "demand", "--workers", "2"], env=WIDE)
    assert trained.exit_code == 0, trained.output
    assert "10 ok / 0 failed of 10" in trained.output, trained.output  # 6 stores, 3 regions, the total
    assert "levels (holdout)" in trained.output and "own -> reconciled" in trained.output, trained.output
    yield root


def _known(rows: pd.DataFrame) -> pd.DataFrame:
    return future_known(rows, HORIZON).merge(rows[["segment", "region"]].drop_duplicates(), on="segment")


def _levels(forecasts: pd.DataFrame, column: str) -> tuple[pd.Series, pd.Series, pd.Series]:
    """The stores' sum, the regions' sum and the total of one column, by week."""
    stores = forecasts[forecasts["level"] == "segment"].groupby("week")[column].sum()
    regions = forecasts[forecasts["level"] == "region"].groupby("week")[column].sum()
    total = forecasts[forecasts["level"] == "total"].set_index("week")[column]
    return stores, regions, total


def test_every_level_is_forecast_and_the_forecasts_add_up(project: Path) -> None:
    """`forecast` writes the stores, the regions and the total (a `level` column), each from its own model, then
    reconciled (min_trace_shrink, the default): the stores add up to their region and to the total at every step,
    the levels' own forecasts kept as `base_prediction` (which do not add up); intervals hold the forecast."""
    rows = hierarchy_frame()
    (project / "known.parquet").parent.mkdir(exist_ok=True)
    _known(rows).to_parquet(project / "known.parquet", index=False)
    out = project / "next.csv"
    made = runner.invoke(app, ["--bundle", str(project), "forecast", "demand", "--known",
                               str(project / "known.parquet"), "--level", "80", "--level", "95", "--out", str(out)],
                         env=WIDE)
    assert made.exit_code == 0, made.output
    forecasts = pd.read_csv(out)
    assert len(forecasts) == 10 * HORIZON
    assert forecasts["level"].value_counts().to_dict() == {"segment": 24, "region": 12, "total": 4}
    stores, regions, total = _levels(forecasts, "prediction")
    np.testing.assert_allclose(stores.to_numpy(), total.to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(regions.to_numpy(), total.to_numpy(), rtol=1e-9)
    by_region = forecasts[forecasts["level"] == "segment"].groupby(["region", "week"])["prediction"].sum()
    own = forecasts[forecasts["level"] == "region"].set_index(["region", "week"])["prediction"]
    np.testing.assert_allclose(by_region.loc[own.index].to_numpy(), own.to_numpy(), rtol=1e-9)
    base_stores, _, base_total = _levels(forecasts, "base_prediction")
    assert np.abs(base_stores.to_numpy() - base_total.to_numpy()).max() > 1e-6  # reconciliation did something
    for level in (80, 95):
        assert (forecasts[f"lo-{level}"] <= forecasts["prediction"] + 1e-9).all()
        assert (forecasts["prediction"] <= forecasts[f"hi-{level}"] + 1e-9).all()
    assert (forecasts["hi-95"] - forecasts["lo-95"] >= forecasts["hi-80"] - forecasts["lo-80"] - 1e-9).all()


def test_the_levels_are_summed_from_the_rows_and_newer_history_is_summed_too(project: Path) -> None:
    """A region's series is its stores' units summed by week (price: their mean); `forecast --data` with the same
    history (the stores' rows only) sums the levels again and forecasts what the pack's own history forecasts."""
    api = mm.load_bundle(project)
    rows = hierarchy_frame()
    known = _known(rows)
    kept = api.forecast("demand", known=known).sort_values(["region", "segment", "week"], na_position="last")
    given = api.forecast("demand", data=rows, known=known).sort_values(["region", "segment", "week"],
                                                                      na_position="last")
    np.testing.assert_allclose(kept["prediction"].to_numpy(dtype=float), given["prediction"].to_numpy(dtype=float),
                               rtol=1e-9)
    manifest = api.manifest("demand", run_id=api.runs("demand")[-1].run_id)
    regions = manifest[manifest["segment"].isna() & manifest["region"].notna()]
    summed = rows.groupby("region")["units"].size()
    assert sorted(regions["region"]) == sorted(summed.index)
    assert (regions["rows"].to_numpy() == STEPS).all()  # one row per week, summed over its two stores


def test_training_records_each_levels_accuracy_before_and_after(project: Path) -> None:
    """The run's metrics hold each level's median holdout rmse of its own forecasts and reconciled; the report
    shows the same in its hierarchy section."""
    api = mm.load_bundle(project)
    run_id = api.runs("demand")[0].run_id
    mlflow.set_tracking_uri(api.tracking_uri)
    metrics = mlflow.get_run(run_id).data.metrics
    for level in ("total", "region", "segment"):
        assert np.isfinite(metrics[f"level.{level}.rmse_base"])
        assert np.isfinite(metrics[f"level.{level}.rmse_reconciled"])
    page = api.report("demand", out=project / "report.html", run_id=run_id).read_text()
    assert "Hierarchy: accuracy by level (holdout)" in page and "min_trace_shrink" in page
    assert f"{metrics['level.total.rmse_reconciled']:.4g}" in page


def test_each_method_adds_up_as_hierarchicalforecast_reconciles() -> None:
    """bottom_up keeps the stores' forecasts and sums them; top_down keeps the total's and splits it; min_trace_ols
    and min_trace_shrink move every level: all add up at every step."""
    keys = pd.DataFrame({"region": ["a", "a", "b", "a", "b", None], "store": ["s1", "s2", "s3", None, None, None]})
    matrix, bottom, tags = summing(keys, ["region", "store"])
    rng = np.random.default_rng(1)
    base = np.array([[10.0, 11], [20, 21], [30, 31], [33, 30], [29, 33], [64, 60]])
    errors = rng.normal(size=(6, 8))
    for method in ("bottom_up", "top_down", "min_trace_ols", "min_trace_shrink"):
        mean, bounds = reconcile(method, matrix, tags, base, errors, {80.0: np.ones((6, 2))})
        np.testing.assert_allclose(matrix @ mean[bottom], mean, atol=1e-9)
        if method == "bottom_up":
            np.testing.assert_allclose(mean[bottom], base[bottom])
        if method == "top_down":
            np.testing.assert_allclose(mean[5], base[5])
            assert not bounds  # its intervals need whole histories: the caller centres the base widths
        else:
            lower, upper = bounds[80.0]
            assert (lower < mean).all() and (mean < upper).all()


def test_the_levels_on_spark_are_the_local_engines(project: Path, spark: Any) -> None:
    """Spark sums the levels itself (one groupBy per level), in training and in evaluate: the same series, the same
    models and metrics (on Spark Connect: tests/extra/test_statsforecast_connect.py)."""
    api = mm.load_bundle(project)
    first = api.runs("demand")[-1].run_id
    same_levels_on(api, mm.load_bundle(project, spark=spark), first)


def test_evaluate_promote_and_monitor_judge_every_level(project: Path) -> None:
    """evaluate sums the levels from the rows as training did (each series' holdout metric to the digit), the first
    promotion registers every level, and monitor sums the stores' new rows into their region and the total."""
    api = mm.load_bundle(project)
    first = api.runs("demand")[-1].run_id
    manifest = api.manifest("demand", run_id=first)
    table = api.evaluate("demand", run_id=first).table
    key = ["region", "segment"]
    a = manifest.sort_values(key, na_position="last").reset_index(drop=True)
    b = table.sort_values(key, na_position="last").reset_index(drop=True)
    assert len(b) == 10 and b["segment"].isna().sum() == 4
    np.testing.assert_allclose(b["challenger"].to_numpy(dtype=float), a["rmse"].to_numpy(dtype=float), atol=1e-9)
    promoted = api.promote("demand", run_id=first)
    assert promoted.version is not None and promoted.promoted == 10, promoted
    rows = hierarchy_frame()
    ahead = api.forecast("demand", known=_known(rows))
    stores = ahead[ahead["level"] == "segment"]
    noise = np.random.default_rng(2).normal(0, 1.0, len(stores))
    new = stores[["region", "segment", "week"]].assign(units=stores["prediction"].to_numpy() + noise).merge(
        _known(rows), on=["region", "segment", "week"])
    judged = api.monitor("demand", new, save=False).table
    assert len(judged) == 10, judged
    levels = judged[judged["segment"].isna()]
    assert (levels["rows"] == HORIZON).all() and (levels["status"] != "no_data").all(), levels


def test_a_series_without_a_forecast_leaves_the_levels_unreconciled_and_says_so(tmp_path: Path) -> None:
    """A store too thin for a model (no fallback): training warns that the holdout is not reconciled, `forecast`
    writes every other series' own forecast with its level and says why they are not reconciled: nothing lost."""
    rows = hierarchy_frame()
    thin = rows[(rows["segment"] != "store_00") | (rows["week"] > rows["week"].max() - pd.Timedelta(weeks=5))]
    write_bundle(tmp_path, frame=thin, models={"demand": hierarchy_block()})
    trained = runner.invoke(app, ["--bundle", str(tmp_path), "train", "demand"], env=WIDE)
    assert trained.exit_code == 0, trained.output
    text = " ".join(trained.output.split())
    assert "9 ok / 1 failed of 10" in text and "hierarchy: some series have no holdout forecast" in text, text
    known = future_known(thin, HORIZON).merge(thin[["segment", "region"]].drop_duplicates(), on="segment")
    known.to_parquet(tmp_path / "known.parquet", index=False)
    out = tmp_path / "next.parquet"
    made = runner.invoke(app, ["--bundle", str(tmp_path), "forecast", "demand", "--known",
                               str(tmp_path / "known.parquet"), "--out", str(out)], env=WIDE)
    assert made.exit_code == 0, made.output
    said = " ".join(made.output.split())
    assert "1 series have no forecast (first: region='r0', segment='store_00'): the forecasts are not reconciled" \
           in said, said
    forecasts = pd.read_parquet(out)
    assert len(forecasts) == 9 * HORIZON and "base_prediction" not in forecasts.columns
    assert set(forecasts["level"]) == {"segment", "region", "total"}
