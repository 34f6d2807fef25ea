"""A forecast hierarchy in the bundle and in the rows: each mistake a located line (a segment under two parents or
ending early named), the levels summed from the rows as the README says, and without hierarchicalforecast a
clear error naming the extra before any work."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from helpers import bundle_problems, forecast_block, series_frame, write_bundle
from manymodels.bundle import load_config
from manymodels.cli.main import app
from manymodels.data.hierarchy import level_names, summing, with_levels
from manymodels.errors import BundleError, DataError

HEAD = """\
bundle: {name: shop}
resources:
  datasets:
    sales: {path: sales.parquet}
  models:
    demand:
      dataset: sales
      label: units
      task: forecast
      time: week
      horizon: 4
"""
NOT_INSTALLED = "hierarchicalforecast, which is not installed"


def sales() -> pd.DataFrame:
    return series_frame(segments=6, steps=30).rename(columns={"segment": "store"})


def problems(tmp_path: Path, model: str, data: pd.DataFrame | None = None) -> list[str]:
    """What `validate` says of a model section (6 spaces in), less the missing extra (said once, tested below)."""
    return [p for p in bundle_problems(tmp_path, HEAD + model, data) if NOT_INSTALLED not in p]


def test_a_hierarchy_over_the_segment_columns_validates(tmp_path: Path) -> None:
    model = "      segment_by: [region, store]\n      hierarchy: [region, store]\n      reconcile: bottom_up\n"
    assert problems(tmp_path, model, sales()) == []
    spec = load_config(tmp_path / "manymodels.yml").resolved.resources.models["demand"]
    assert spec.hierarchy == ["region", "store"] and spec.reconcile == "bottom_up"


@pytest.mark.parametrize(
    ("model", "line", "message"),
    [
        ("      segment_by: [store]\n      hierarchy: [region, store]\n", 6,
         "hierarchy names region, not in segment_by ['store']: a hierarchy orders segment_by's columns from the top "
         "level down (add region to segment_by)"),
        ("      segment_by: [region, store]\n      hierarchy: [region]\n", 6,
         "hierarchy leaves out segment_by's store"),
        ("      segment_by: [region, store]\n      hierarchy: [region, store, region]\n", 6,
         "hierarchy lists region twice"),
        ("      segment_by: [store]\n      reconcile: bottom_up\n", 6, "reconcile is for a hierarchy"),
        ("      segment_by: [region, store]\n      hierarchy: [region, store]\n      reconcile: mint\n", 14,
         "reconcile"),
        ("      segment_by: [region, store]\n      hierarchy: [region, store]\n      null_segments: own\n", 6,
         "null_segments own: a hierarchy marks its aggregated series with a null"),
        ("      segment_by: [level, store]\n      hierarchy: [level, store]\n", 12,
         "segment_by[0]: column 'level' has a name manymodels gives its own columns"),
    ],
)
def test_each_mistake_is_one_located_line(tmp_path: Path, model: str, line: int, message: str) -> None:
    found = problems(tmp_path, model)
    assert len(found) == 1, found
    assert found[0].startswith(f"manymodels.yml:{line}: "), found
    assert message in found[0], found


def test_a_hierarchy_is_for_forecasts(tmp_path: Path) -> None:
    (tmp_path / "manymodels.yml").write_text(HEAD.replace("      task: forecast\n      time: week\n      horizon: 4\n",
                                                          "      segment_by: [store]\n      hierarchy: [store]\n"))
    with pytest.raises(BundleError) as raised:
        load_config(tmp_path / "manymodels.yml")
    assert any("hierarchy is for task forecast" in p for p in raised.value.problems), raised.value.problems


def test_validate_names_a_segment_under_two_parents_and_one_that_ends_early(tmp_path: Path) -> None:
    model = "      segment_by: [region, store]\n      hierarchy: [region, store]\n"
    rows = sales()
    moved = rows.assign(region=rows["region"].where(~((rows["store"] == "store_01") & (rows.index % 2 == 0)), "r9"))
    found = problems(tmp_path, model, moved)
    assert len(found) == 1 and found[0].startswith("manymodels.yml:13: resources.models.demand.hierarchy: "), found
    assert "segment store='store_01' is under (region=" in found[0], found
    assert "(region='r1')" in found[0] and "(region='r9')" in found[0], found
    assert "each segment of a hierarchy nests in one parent" in found[0], found
    last = rows["week"].max()
    early = rows[~((rows["store"] == "store_04") & (rows["week"] == last))]
    found = problems(tmp_path, model, early)
    assert len(found) == 1 and "segment (region='r1', store='store_04') ends at" in found[0], found
    assert "a hierarchy's forecasts add up step by step" in found[0], found


def test_the_levels_are_summed_from_the_rows() -> None:
    """A region's label is its stores' sum at each time; a number its stores' mean; text kept where they share it,
    else null; the total is every store's; the levels are keyed by nulls below them."""
    rows = pd.DataFrame({"region": ["a", "a", "a", "a", "b", "b"], "store": [1, 2, 1, 2, 3, 3],
                         "week": [1, 1, 2, 2, 1, 2], "units": [1, 2, 3, 4, 5, 6], "price": [1.0, 3.0, 1, 1, 2, 2],
                         "kind": ["x", "x", "x", "y", "z", "z"]})
    out = with_levels(rows, ["region", "store"], "units", "week")
    assert len(out) == 6 + 4 + 2
    region_a = out[(out["region"] == "a") & out["store"].isna()].set_index("week")
    assert region_a["units"].to_dict() == {1: 3.0, 2: 7.0} and region_a["price"].to_dict() == {1: 2.0, 2: 1.0}
    assert region_a.loc[1, "kind"] == "x" and pd.isna(region_a.loc[2, "kind"])
    total = out[out["region"].isna()].set_index("week")
    assert total["units"].to_dict() == {1: 8.0, 2: 13.0}
    assert out["store"].dtype == "Int64"  # an integer key stays one, nullable
    keys = out[["region", "store"]].drop_duplicates().reset_index(drop=True)
    assert list(level_names(keys, ["region", "store"])) == ["store"] * 3 + ["region"] * 2 + ["total"]
    matrix, bottom, tags = summing(keys, ["region", "store"])
    assert list(bottom) == [0, 1, 2] and list(tags) == ["total", "region", "store"]
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 0, 1], [1, 1, 1]])
    with pytest.raises(DataError, match="1 rows have a null in segment column"):
        with_levels(rows.assign(store=rows["store"].astype("Int64").where(rows.index != 0)), ["region", "store"],
                    "units", "week")


def test_without_hierarchicalforecast_validate_and_train_name_the_extra(tmp_path: Path) -> None:
    """This virtualenv has no hierarchicalforecast (it asks for pandas < 3): validate says which extra to install at
    the model's hierarchy, and train stops before any work (exit 2, no run)."""
    if importlib.util.find_spec("hierarchicalforecast") is not None:
        pytest.skip("hierarchicalforecast is installed here")
    frame = series_frame(segments=4, steps=30)
    write_bundle(tmp_path, frame=frame, models={"demand": forecast_block(
        segment_by=["region", "segment"], hierarchy=["region", "segment"], features={"lags": [1]})})
    runner = CliRunner()
    checked = runner.invoke(app, ["--bundle", str(tmp_path), "validate"], env={"COLUMNS": "200"})
    assert checked.exit_code == 2, checked.output
    assert "resources.models.demand.hierarchy: a hierarchy's forecasts are reconciled by hierarchicalforecast, which " \
           "is not installed: pip install 'manymodels[hierarchy]'" in " ".join(checked.output.split()), checked.output
    trained = runner.invoke(app, ["--bundle", str(tmp_path), "train", "demand"], env={"COLUMNS": "200"})
    assert trained.exit_code == 2, trained.output
    assert "manymodels[hierarchy]" in trained.output, trained.output
    assert not list((tmp_path / ".manymodels").glob("artifacts/*/*/artifacts/model/shards/*"))
