"""A forecast model in the bundle: the issue's bundle as written, each mistake a located line, its data checked."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import ISSUE_25_MODEL, bundle_problems, series_frame
from manymodels.bundle import load_config

HEAD = """\
bundle: {name: shop}
resources:
  datasets:
    sales: {path: sales.parquet}
  models:
    demand:
      dataset: sales
      segment_by: [store]
      label: units
"""

ISSUE = ISSUE_25_MODEL  # the bundle of issue 25, as written


def sales(steps: int = 120, stores: int = 3) -> pd.DataFrame:
    frame = series_frame(segments=stores, steps=steps).rename(columns={"segment": "store"})
    return frame.assign(promo=(frame["week"].dt.day < 8).astype(int))


def problems(tmp_path: Path, model: str, data: pd.DataFrame | None = None) -> list[str]:
    """Every problem `validate` reports for a model section (YAML, 6 spaces in); with `data`, its rows too."""
    return bundle_problems(tmp_path, HEAD + model, data)


def test_the_issues_bundle_validates_as_written(tmp_path: Path) -> None:
    assert problems(tmp_path, ISSUE) == []
    assert problems(tmp_path, ISSUE, sales()) == []
    model = load_config(tmp_path / "manymodels.yml").resolved.resources.models["demand"]
    assert model.lags == [1, 2, 3, 52] and model.transforms == [("diff", 1)]
    assert model.feature_columns == ["price", "promo", "region"]


def test_the_smallest_forecast_names_task_time_horizon_segment_and_label(tmp_path: Path) -> None:
    assert problems(tmp_path, "      task: forecast\n      time: week\n      horizon: 4\n", sales()) == []
    model = load_config(tmp_path / "manymodels.yml").resolved.resources.models["demand"]
    assert (model.lags, model.transforms, model.strategy, model.gaps) == ([1, 2, 3], [("diff", 1)], "recursive",
                                                                          "error")


ENSEMBLE = ("      task: forecast\n      time: week\n      horizon: 4\n      candidates:\n        - {name: lgbm}\n"
            "        - {name: ridge, type: sklearn, entry: sklearn.linear_model.Ridge}\n")


@pytest.mark.parametrize(
    ("model", "line", "message"),
    [
        ("      task: forecast\n      time: week\n", 6, "task forecast needs horizon"),
        ("      task: forecast\n      horizon: 4\n", 6, "task forecast needs time (the time column"),
        ("      horizon: 4\n", 6, "horizon is for task forecast"),
        ("      task: forecast\n      time: week\n      horizon: 4\n      split: {test_size: 0.2}\n", 6,
         "a forecast holds out each segment's last horizon (4) steps: a split (random ones train on the future) "
         "does not apply; remove split"),
        ("      task: forecast\n      time: week\n      horizon: 4\n      validation: {kind: kfold}\n", 6,
         "validation kind kfold trains on the future"),
        ("      task: forecast\n      time: week\n      horizon: 4\n      validation: {horizon: 2}\n", 6,
         "each validation window forecasts the model's horizon: remove validation.horizon"),
        ("      task: forecast\n      time: week\n      horizon: 4\n      features: [price]\n", 6,
         "features of a forecast are a mapping"),
        ("      task: forecast\n      time: week\n      horizon: 4\n      features: {lagz: [1]}\n", 13,
         "demand.features.lagz is not a known key (did you mean 'lags'?)"),
        ("      task: forecast\n      time: week\n      horizon: 4\n      features: {lags: [0]}\n", 13,
         "demand.features.lags[0] must be >= 1"),
        ("      task: forecast\n      time: week\n      horizon: 4\n      features: {calendar: [weekday]}\n", 13,
         "demand.features.calendar[0] must be one of"),
        ("      task: forecast\n      time: week\n      horizon: 4\n      features: {known: [p], static: [p]}\n", 13,
         "p cannot be both known and static"),
        ("      task: forecast\n      time: week\n      horizon: 4\n      target_transform: [{diff: 1, log1p: true}]\n",
         13, "each transform is one of {diff: N}, {log1p: true} or {scale: standard}"),
        ("      task: forecast\n      time: week\n      horizon: 4\n      strategy: sideways\n", 13,
         "demand.strategy must be one of 'recursive' or 'direct'"),
        ("      task: forecast\n      time: week\n      horizon: 4\n      candidates:\n"
         "        - {name: l, type: baseline, method: last}\n", 6,
         "method last is for regression tasks; a forecast's baselines are naive, seasonal_naive, drift, "
         "window_average, mean, median (did you mean 'naive'?)"),
        ("      task: forecast\n      time: week\n      horizon: 4\n      candidates:\n"
         "        - {name: a, type: baseline, method: window_average}\n", 14, "window_average needs window"),
        ("      validation: {kind: time, by: week}\n      candidates:\n"
         "        - {name: n, type: baseline, method: naive}\n", 6, "baseline(s) n forecast from an origin"),
        ("      task: forecast\n      time: week\n      horizon: 4\n      fallback: {segment_by: [region]}\n", 6,
         "a forecast's fallback is global (one model over every segment's history): fallback by parent groups is "
         "not built for forecasts yet"),
        ("      task: forecast\n      time: step\n      horizon: 4\n", 11, "column 'step' has a name manymodels gives"),
        ("      task: forecast\n      time: week\n      horizon: 4\n      candidates:\n"
         "        - {name: n, type: baseline, method: naive, scope: global}\n", 14,
         "scope global is for models (lightgbm, sklearn, python)"),
        ("      validation: {kind: kfold}\n      candidates:\n        - {name: g, scope: global}\n", 6,
         "candidate(s) g: scope global (one model over every segment's series) is for task forecast"),
        ("      task: forecast\n      time: week\n      horizon: 4\n      candidates:\n"
         "        - {name: g, scope: global}\n      tuning:\n        g: {space: {num_leaves: [4, 8]}}\n", 6,
         "tuning.g: tuning a candidate of scope global is not built"),
        ("      task: forecast\n      time: week\n      horizon: 4\n      candidates:\n"
         "        - {name: g, scope: all}\n", 14, "scope must be one of 'segment' or 'global'"),
        # ensembles: members that are candidates of this model, fixed, and the model a forecast
        (ENSEMBLE + "        - {name: mix, type: ensemble, members: [lgbm, ridgge]}\n", 16,
         "candidates[2].members[1]: member 'ridgge' of ensemble mix is not a candidate (did you mean 'ridge'?)"),
        (ENSEMBLE + "        - {name: mix, type: ensemble, members: [lgbm]}\n", 16,
         "an ensemble needs members: two or more"),
        (ENSEMBLE + "        - {name: mix, type: ensemble, members: [lgbm, ridge], params: {a: 1}}\n", 16,
         "an ensemble combines its members' forecasts: it takes members and weights, not params"),
        (ENSEMBLE + "        - {name: mix, type: ensemble, members: [lgbm, ridge], weights: best}\n", 16,
         "weights must be one of 'equal' or 'cv'"),
        (ENSEMBLE + "        - {name: mix, type: ensemble, members: [lgbm, ridge]}\n"
         "        - {name: mix2, type: ensemble, members: [mix, ridge]}\n", 6,
         "candidate mix2: member mix is an ensemble; members are models and baselines"),
        (ENSEMBLE + "        - {name: mix, type: ensemble, members: [lgbm, ridge]}\n      tuning:\n"
         "        lgbm: {space: {num_leaves: [4, 8]}}\n", 6, "candidate mix: member lgbm is tuned per segment"),
        (ENSEMBLE + "        - {name: mix, type: ensemble, members: [lgbm, ridge]}\n      tuning:\n"
         "        mix: {space: {num_leaves: [4, 8]}}\n", 6, "tuning.mix: an ensemble has no parameters to tune"),
        (ENSEMBLE + "        - {name: mix, type: ensemble, members: [lgbm, ridge], weights: cv}\n"
         "      selection: {metric: r2}\n", 6, "weights cv weigh members by their inverse error"),
        (ENSEMBLE + "        - {name: r2, type: baseline, method: mean, members: [lgbm, ridge]}\n", 16,
         "members and weights are for type ensemble"),
        ("      refit: true\n", 6, "refit is for task forecast"),
        # selection rule fleet: a forecast's, on an error
        (ENSEMBLE + "      selection: {rule: fleet, metric: r2}\n", 6, "selection.rule fleet divides each candidate's "
         "error by the segment's best: metric r2 is not an error"),
        (ENSEMBLE + "      selection: {sample: 50}\n", 16, "sample is for rule fleet"),
        ("      validation: {kind: kfold}\n      selection: {rule: fleet}\n", 6,
         "selection.rule fleet is for task forecast"),
        ("      validation: {kind: kfold}\n      selection: {regret: true}\n", 6,
         "selection.regret is for task forecast"),
        ("      validation: {kind: kfold}\n      candidates:\n        - {name: a}\n        - {name: b, "
         "type: baseline, method: mean}\n        - {name: mix, type: ensemble, members: [a, b]}\n", 6,
         "candidate(s) mix: type ensemble (a mean of members' forecasts) is for task forecast"),
        # statsforecast's models: a model class, the candidate a forecast's own
        (ENSEMBLE + "        - {name: ets, type: statsforecast}\n", 16, "type statsforecast needs model: a "
         "statsforecast model class, e.g. AutoETS"),
        (ENSEMBLE + "        - {name: ets, type: statsforecast, model: AutoETS, entry: x.Y}\n", 16,
         "type statsforecast takes model and params (its constructor's), not entry"),
        (ENSEMBLE + "        - {name: ets, type: statsforecast, model: AutoETS, scope: global}\n", 16,
         "a statsforecast model is fitted on one series' values: scope global is for lightgbm"),
        (ENSEMBLE + "        - {name: l2, model: AutoETS}\n", 16, "model is for type statsforecast"),
        ("      validation: {kind: kfold}\n      candidates:\n        - {name: a}\n"
         "        - {name: ets, type: statsforecast, model: AutoETS}\n", 6,
         "candidate(s) ets: type statsforecast (a statistical forecast model) is for task forecast"),
    ],
)
def test_each_mistake_is_one_located_line(tmp_path: Path, model: str, line: int, message: str) -> None:
    found = problems(tmp_path, model)
    assert len(found) == 1, found
    assert found[0].startswith(f"manymodels.yml:{line}: "), found
    assert message in found[0], found


def smallest(**extra: str) -> str:
    lines = {"task": "forecast", "time": "week", "horizon": "4", **extra}
    return "".join(f"      {k}: {v}\n" for k, v in lines.items())


@pytest.mark.parametrize(
    ("model", "change", "line", "message"),
    [
        (smallest(), lambda f: f.assign(week=f["week"].astype(str).where(f.index != 5, "last tuesday")), 11,
         "time.* 'last tuesday' does not parse as a date"),
        (smallest(), lambda f: pd.concat([f, f.iloc[[3]]]), 11, "has time .* more than once"),
        (smallest(freq="MS"), lambda f: f, 13, "time 2024-.* is not on the grid MS"),
        (smallest(), lambda f: f.assign(week=f["week"] + pd.to_timedelta((f.index == 7) * 1, unit="D")), 11,
         "is not on the grid W-MON .*inferred from the fleet's spacing; set freq"),
        (smallest(horizon="120"), lambda f: f, 12, "horizon 120 leaves no history to train on"),
        (smallest(features="{lags: [1, 200]}"), lambda f: f, 13,
         r"features.lags\[1\]: lag 200 reaches back further than any segment's history"),
        (smallest(features="{known: [cost]}"), lambda f: f, 13, "column 'cost' is not in dataset 'sales'"),
        (smallest(features="{known: [region]}"), lambda f: f, 13, "known feature 'region' must be numeric"),
        (smallest(target_transform="[{diff: 200}]"), lambda f: f, 13,
         r"target_transform\[0\].diff: a difference of 200"),
        (smallest(candidates="[{name: s, type: baseline, method: seasonal_naive, period: 400}]"), lambda f: f, 13,
         r"candidates\[0\].period: a season of 400 steps is longer"),
        (smallest(freq="5"), lambda f: f, 13, "freq 5 is a number, but the times are dates"),
        (smallest(features="{calendar: [month]}"), lambda f: f.assign(week=np.arange(len(f)) % 120), 13,
         "calendar features read dates; time column 'week' holds numbers"),
    ],
)
def test_validate_checks_the_time_column_and_the_history_each_setting_needs(
        tmp_path: Path, model: str, change: object, line: int, message: str) -> None:
    data = change(sales())  # type: ignore[operator]
    found = problems(tmp_path, model, data)
    assert len(found) == 1, found
    assert found[0].startswith(f"manymodels.yml:{line}: "), found
    assert re.search(message, found[0]), found


def test_a_numeric_time_on_its_step_validates(tmp_path: Path) -> None:
    frame = series_frame(segments=2, steps=12).rename(columns={"segment": "store"})
    frame["week"] = 1952 + 5 * frame.groupby("store").cumcount()  # gapminder's years
    assert problems(tmp_path, smallest(horizon="2", freq="5"), frame) == []
    assert problems(tmp_path, smallest(horizon="2"), frame) == []  # the step inferred


def test_a_statistical_candidate_without_the_extra_names_it(tmp_path: Path) -> None:
    """Without statsforecast (this virtualenv: it asks for pandas < 3), validate says which extra to install, at the
    candidate's type; the forecast extra's own tests run in .venv-forecast."""
    pytest.importorskip("pandas", minversion="3")  # where statsforecast cannot be installed beside it
    if importlib.util.find_spec("statsforecast") is not None:
        pytest.skip("statsforecast is installed here")
    found = problems(tmp_path, ENSEMBLE + "        - {name: ets, type: statsforecast, model: AutoETS}\n")
    assert found == ["manymodels.yml:16: resources.models.demand.candidates[2].type: type statsforecast needs "
                     "statsforecast, which is not installed: pip install 'manymodels[forecast]'"], found
