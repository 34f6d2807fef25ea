"""Forecast accuracy: manymodels (YAML only) against the tools a forecasting user picks, on the same series.

For each data set, every series' last H steps are held out; each method sees the rest. Printed per method:
the median over series of RMSE and MAE at h=1 (H rolling one-step forecasts, each from the actual history
before it, no refit) and at h=H (one origin, H steps ahead); and at each horizon, on how many series each of
manymodels and the anchors (AutoETS, AutoARIMA, mlforecast) has the lowest RMSE among them (issue 26's "wins at
least as many series as any one of them").

Anchors: statsforecast (AutoETS, AutoARIMA, Naive, SeasonalNaive) and mlforecast (LightGBM on the same lags
and calendar features, with and without a first difference of the target). manymodels: a bundle with the
same lags and features and candidates LightGBM (per series, and one global over every series), Ridge, naive,
seasonal naive and drift, chosen per series on rolling-origin windows; `Project.forecast` from the pack (h=H)
and from each newer history (h=1).

Data sets shipped inside packages: plotly's gapminder (life expectancy, 142 countries every 5 years),
statsmodels' macrodata (12 US quarterly series) and grunfeld (investment of 11 firms, yearly), and
../shared/bench/make_series.py (weekly series with level, trend, a 52-week season and a known price).

    python bench/forecast_bench.py                    # every data set
    python bench/forecast_bench.py --datasets gapminder,grunfeld

Needs the [bench] extra (statsforecast, mlforecast, statsmodels).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

warnings.filterwarnings("ignore")
os.environ.setdefault("NIXTLA_ID_AS_COL", "1")

import manymodels as mm  # noqa: E402
from _common import SHARED_BENCH  # noqa: E402


@dataclass
class Panel:
    """Series in long form (unique_id, ds, y[, exog]) and how to forecast them."""

    name: str
    frame: pd.DataFrame
    horizon: int
    season: int  # 1: none
    freq: Any  # a pandas offset alias, or an integer step
    lags: list[int]
    calendar: list[str] = field(default_factory=list)
    exog: list[str] = field(default_factory=list)
    windows: int = 3


def gapminder() -> Panel:
    import plotly.express as px

    data = px.data.gapminder()
    frame = data.rename(columns={"country": "unique_id", "year": "ds", "lifeExp": "y"})[["unique_id", "ds", "y"]]
    return Panel("gapminder lifeExp (142 x 12, 5-yearly)", frame, horizon=2, season=1, freq=5, lags=[1, 2],
                 windows=2)


def macrodata() -> Panel:
    import statsmodels.api as sm

    data = sm.datasets.macrodata.load_pandas().data
    ds = pd.PeriodIndex.from_fields(year=data["year"].astype(int), quarter=data["quarter"].astype(int),
                                    freq="Q").to_timestamp()
    value = data.drop(columns=["year", "quarter"]).assign(ds=ds)
    frame = value.melt(id_vars="ds", var_name="unique_id", value_name="y")[["unique_id", "ds", "y"]]
    return Panel("macrodata (12 x 203, quarterly)", frame, horizon=8, season=4, freq="QS", lags=[1, 2, 3, 4, 8],
                 calendar=["quarter"])


def grunfeld() -> Panel:
    import statsmodels.api as sm

    data = sm.datasets.grunfeld.load_pandas().data
    frame = data.rename(columns={"firm": "unique_id", "year": "ds", "invest": "y"})[["unique_id", "ds", "y"]]
    frame["ds"] = frame["ds"].astype(int)
    return Panel("grunfeld invest (11 x 20, yearly)", frame, horizon=3, season=1, freq=1, lags=[1, 2, 3],
                 windows=2)


def series(count: int = 30, steps: int = 200) -> Panel:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "series.parquet"
        subprocess.run([sys.executable, str(SHARED_BENCH / "make_series.py"), "--series", str(count), "--steps",
                        str(steps), "--period", "52", "--freq", "W-MON", "--out", str(out)], check=True,
                       capture_output=True)
        data = pd.read_parquet(out)
    frame = data.rename(columns={"series": "unique_id", "time": "ds"})[["unique_id", "ds", "y", "price"]]
    return Panel(f"make_series ({count} x {steps}, weekly, season 52, known price)", frame, horizon=12, season=52,
                 freq="W-MON", lags=[1, 2, 3, 52], calendar=["week_of_year", "month"], exog=["price"])


PANELS: dict[str, Callable[[], Panel]] = {"gapminder": gapminder, "macrodata": macrodata, "grunfeld": grunfeld,
                                          "series": series}


def split(panel: Panel) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every series' last `horizon` rows held out."""
    frame = panel.frame.sort_values(["unique_id", "ds"]).reset_index(drop=True)
    rank = frame.groupby("unique_id").cumcount(ascending=False)
    return frame[rank >= panel.horizon].reset_index(drop=True), frame[rank < panel.horizon].reset_index(drop=True)


def per_series(predicted: pd.DataFrame, actual: pd.DataFrame, column: str = "p") -> pd.DataFrame:
    """RMSE and MAE of each series (index: unique_id)."""
    both = actual.merge(predicted[["unique_id", "ds", column]], on=["unique_id", "ds"], how="left")
    err = both[column].to_numpy(dtype=float) - both["y"].to_numpy(dtype=float)
    both["sq"], both["abs"] = err**2, np.abs(err)
    per = both.groupby("unique_id").agg(sq=("sq", "mean"), mae=("abs", "mean"))
    return pd.DataFrame({"rmse": np.sqrt(per["sq"]), "mae": per["mae"]})


def scores(predicted: pd.DataFrame, actual: pd.DataFrame, column: str) -> tuple[float, float]:
    """Median over series of RMSE and MAE."""
    per = per_series(predicted, actual, column)
    return float(np.median(per["rmse"])), float(np.median(per["mae"]))


# The single methods issue 26 compares the selected fleet with: statsforecast's AutoETS and AutoARIMA, mlforecast.
ANCHORS = ("statsforecast AutoETS", "statsforecast AutoARIMA", "mlforecast")


def series_wins(runs: dict[str, pd.DataFrame], actual: pd.DataFrame, key: str) -> dict[str, int]:
    """On how many series each of manymodels and the anchors has the lowest RMSE among them (a tie counts for each)."""
    compared = {m: per_series(f.loc[key], actual)["rmse"] for m, f in runs.items()
                if m.startswith(ANCHORS) or m.startswith("manymodels")}
    table = pd.DataFrame(compared)
    best = table.min(axis=1)
    return {m: int((table[m] <= best).sum()) for m in table}


LEVELS = (80, 95)
BANDS: dict[str, pd.DataFrame] = {}  # method -> its h=H forecast with lo-<level> / hi-<level> columns


def coverage(bands: pd.DataFrame, actual: pd.DataFrame, level: int) -> tuple[float, float, int]:
    """Median over series of the share of held-out values inside the interval (in steps of 1/H per series), the
    share over every held-out value that had an interval, and how many series had one."""
    both = actual.merge(bands, on=["unique_id", "ds"], how="left")
    lo, hi = both[f"lo-{level}"].to_numpy(dtype=float), both[f"hi-{level}"].to_numpy(dtype=float)
    y = both["y"].to_numpy(dtype=float)
    both["inside"] = np.where(np.isfinite(lo) & np.isfinite(hi), (y >= lo) & (y <= hi), np.nan)
    per = both.groupby("unique_id")["inside"].mean().dropna()
    pooled = float(np.nanmean(both["inside"])) if np.isfinite(both["inside"]).any() else float("nan")
    return (float(per.median()) if len(per) else float("nan")), pooled, len(per)


# statsforecast ---------------------------------------------------------------------------------------------


def statsforecast_runs(panel: Panel, train: pd.DataFrame, full: pd.DataFrame,
                       future_exog: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    """statsforecast's models; the known regressors (`panel.exog`) given as a user would, to the models that read
    them (AutoARIMA; the others ignore them), as mlforecast and manymodels get them."""
    from statsforecast import StatsForecast
    from statsforecast.models import AutoARIMA, AutoETS, Naive, SeasonalNaive

    models: list[Any] = [AutoETS(season_length=panel.season), AutoARIMA(season_length=panel.season), Naive()]
    if panel.season > 1:
        models.append(SeasonalNaive(season_length=panel.season))
    sf = StatsForecast(models=models, freq=panel.freq, n_jobs=2)  # manymodels trains on 2 workers too
    columns = ["unique_id", "ds", "y", *panel.exog]
    ahead = sf.forecast(df=train[columns], h=panel.horizon, level=list(LEVELS), X_df=future_exog)
    for n in ("AutoETS", "AutoARIMA"):  # their own (model-based) intervals
        BANDS[f"statsforecast {n}"] = ahead[["unique_id", "ds"]].assign(
            **{f"{side}-{lv}": ahead[f"{n}-{side}-{lv}"] for lv in LEVELS for side in ("lo", "hi")})
    one = sf.cross_validation(df=full[columns], h=1, n_windows=panel.horizon, step_size=1,
                              refit=False)
    names = [str(m) for m in models]
    return {f"statsforecast {n}": pd.concat({"H": ahead[["unique_id", "ds", n]].rename(columns={n: "p"}),
                                             "1": one[["unique_id", "ds", n]].rename(columns={n: "p"})})
            for n in names}


# mlforecast ------------------------------------------------------------------------------------------------


MLFORECAST_DATES = {"day_of_week": "dayofweek", "day_of_month": "day"}  # pandas' names of our calendar parts


def week_of_year(dates: pd.DatetimeIndex) -> np.ndarray:
    """The ISO week, as manymodels' calendar feature `week_of_year` (mlforecast takes a function)."""
    return dates.isocalendar().week.to_numpy(dtype=np.int64)


def mlforecast_runs(panel: Panel, train: pd.DataFrame, full: pd.DataFrame,
                    future_exog: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    import lightgbm as lgb
    from mlforecast import MLForecast
    from mlforecast.target_transforms import Differences

    out = {}
    dates = [week_of_year if name == "week_of_year" else MLFORECAST_DATES.get(name, name) for name in panel.calendar]
    for label, transforms in (("LightGBM + Differences([1])", [Differences([1])]), ("LightGBM, levels", [])):
        def make(transforms: list[Any] = transforms) -> Any:
            return MLForecast(models={"lgbm": lgb.LGBMRegressor(n_estimators=100, min_child_samples=5, verbose=-1,
                                                                 n_jobs=1)},
                              freq=panel.freq, lags=panel.lags, date_features=dates or None,
                              target_transforms=transforms or None)
        mlf = make()
        mlf.fit(train, static_features=[])
        ahead = mlf.predict(panel.horizon, X_df=future_exog)
        cv = make().cross_validation(df=full, n_windows=panel.horizon, h=1, refit=False, static_features=[])
        out[f"mlforecast {label}"] = pd.concat({"H": ahead.rename(columns={"lgbm": "p"})[["unique_id", "ds", "p"]],
                                                "1": cv.rename(columns={"lgbm": "p"})[["unique_id", "ds", "p"]]})
    return out


# manymodels ------------------------------------------------------------------------------------------------


ONLY: list[str] = []  # --candidates: manymodels' candidates to keep (all by default)
RULE: list[str] = []  # --rule: the selection rule (best: per series, the default; fleet: one for every series)
STATISTICAL: list[bool] = []  # --statistical: statsforecast's AutoETS and AutoARIMA among the candidates too
OWN_INTERVALS: list[bool] = []  # --model-intervals: those two give their own intervals (`intervals: model`)
MANYMODELS_ONLY: list[bool] = []  # --manymodels-only: the anchors not run
REFIT: list[bool] = []  # --refit: fit the chosen model again on every step once the holdout has measured it


def manymodels_bundle(panel: Panel) -> dict[str, Any]:
    features: dict[str, Any] = {"lags": panel.lags, "calendar": panel.calendar, "known": panel.exog}
    candidates: list[dict[str, Any]] = [
        {"name": "lgbm", "type": "lightgbm", "params": {"num_boost_round": 100, "min_data_in_leaf": 5}},
        # one LightGBM over every series, as mlforecast fits it: each series chooses between it and its own models
        {"name": "global_lgbm", "type": "lightgbm", "scope": "global",
         "params": {"num_boost_round": 100, "min_data_in_leaf": 5}},
        {"name": "ridge", "type": "sklearn", "entry": "sklearn.linear_model.Ridge"},
        {"name": "naive", "type": "baseline", "method": "naive"},
        {"name": "drift", "type": "baseline", "method": "drift"},
    ]
    if panel.season > 1:
        candidates.append({"name": "snaive", "type": "baseline", "method": "seasonal_naive", "period": panel.season})
    # means of several: on short series the choice of one by a few windows is noisy (the selection's regret)
    candidates += [
        {"name": "models", "type": "ensemble", "members": ["lgbm", "global_lgbm", "ridge"]},
        {"name": "global_rules", "type": "ensemble", "members": ["global_lgbm", "naive", "drift"]},
        {"name": "everything", "type": "ensemble", "members": ["lgbm", "global_lgbm", "ridge", "naive", "drift"],
         "weights": "cv"},
    ]
    if STATISTICAL and STATISTICAL[0]:  # the anchors' own models, as candidates (the forecast extra)
        season = {"season_length": panel.season} if panel.season > 1 else {}
        own = {"intervals": "model"} if OWN_INTERVALS and OWN_INTERVALS[0] else {}
        candidates += [
            {"name": "ets", "type": "statsforecast", "model": "AutoETS", "params": season, **own},
            {"name": "arima", "type": "statsforecast", "model": "AutoARIMA", "params": season, **own},
            # issue 26's combination: on its panel the equal mean of these four beat every single method
            {"name": "combo", "type": "ensemble", "members": ["ets", "arima", "lgbm", "ridge"]},
        ]
    if ONLY:
        candidates = [c for c in candidates if c["name"] in ONLY]
        kept = {c["name"] for c in candidates}
        candidates = [c for c in candidates if set(c.get("members", [])) <= kept]
    return {
        "bundle": {"name": "forecast-bench"},
        "targets": {"dev": {"default": True}},
        "resources": {
            "datasets": {"train": {"format": "parquet", "path": "train.parquet"},
                         "known": {"format": "parquet", "path": "known.parquet"}},
            "models": {"fleet": {
                "task": "forecast", "dataset": "train", "segment_by": ["unique_id"], "label": "y", "time": "ds",
                "horizon": panel.horizon, "features": features, "validation": {"windows": panel.windows},
                "candidates": candidates,
                # regret: every candidate also forecasts manymodels' own holdout, so the run says what choosing cost
                "selection": {"rule": RULE[0] if RULE else "best", "regret": True},
                "refit": bool(REFIT and REFIT[0]),
            }},
        },
    }


def manymodels_runs(panel: Panel, train: pd.DataFrame, full: pd.DataFrame,
                    future_exog: pd.DataFrame | None) -> dict[str, pd.DataFrame]:
    with tempfile.TemporaryDirectory(prefix="mm-forecast-bench-") as tmp:
        root = Path(tmp)
        train.to_parquet(root / "train.parquet", index=False)
        known = future_exog if future_exog is not None else full.iloc[:0]
        known.to_parquet(root / "known.parquet", index=False)
        (root / "manymodels.yml").write_text(yaml.safe_dump(manymodels_bundle(panel), sort_keys=False))
        project = mm.load_bundle(root)
        started = time.perf_counter()
        run = project.train("fleet", workers=2)
        fitted = time.perf_counter() - started
        won = run.manifest["candidate"].value_counts().to_dict()
        ok = int(run.summary["segments_ok"])
        known_arg = "known" if panel.exog else None
        ahead = project.forecast("fleet", known=known_arg, levels=list(LEVELS))
        BANDS["manymodels (selected per series)"] = ahead.drop(columns=["prediction"])
        # h=1: one step from each newer history (the actual rows before it), the same models
        origins = sorted(full["ds"].unique())[-panel.horizon - 1 : -1]
        steps = []
        for origin in origins:
            history = full[full["ds"] <= origin]
            nxt = full[full["ds"] > origin].groupby("unique_id").head(1)[["unique_id", "ds", *panel.exog]]
            steps.append(project.forecast("fleet", horizon=1, data=history, known=nxt if panel.exog else None))
        project.close()
    one = pd.concat(steps, ignore_index=True)
    frames = pd.concat({"H": ahead.rename(columns={"prediction": "p"})[["unique_id", "ds", "p"]],
                        "1": one.rename(columns={"prediction": "p"})[["unique_id", "ds", "p"]]})
    frames["p"] = frames["p"].astype(float)
    print(f"    manymodels: {ok} of {full['unique_id'].nunique()} series forecast; winners {won}; "
          f"train {fitted:.1f} s", flush=True)
    if "regret_p50" in run.summary:
        print(f"    manymodels' selection on its own holdout: {int(run.summary['segments_chose_best'])} of {ok} chose "
              f"the best candidate; regret (RMSE) median {run.summary['regret_p50']:.4g}, mean "
              f"{run.summary['regret_mean']:.4g}", flush=True)
    return {"manymodels (selected per series)": frames}


def run(panel: Panel) -> dict[str, dict[str, float]]:
    train, test = split(panel)
    full = panel.frame.sort_values(["unique_id", "ds"]).reset_index(drop=True)
    future_exog = test[["unique_id", "ds", *panel.exog]] if panel.exog else None
    results: dict[str, dict[str, float]] = {}
    runs: dict[str, pd.DataFrame] = {}
    makers = (("statsforecast", lambda: statsforecast_runs(panel, train, full, future_exog)),
              ("mlforecast", lambda: mlforecast_runs(panel, train, full, future_exog)),
              ("manymodels", lambda: manymodels_runs(panel, train, full, future_exog)))
    for name, maker in makers[2:] if any(MANYMODELS_ONLY) else makers:
        started = time.perf_counter()
        runs.update(maker())
        print(f"    {name}: {time.perf_counter() - started:.1f} s", flush=True)
    one_step = test  # the h=1 forecasts are of the same held-out rows, each from the rows before it
    for method, frame in runs.items():
        h_rmse, h_mae = scores(frame.loc["H"], test, "p")
        o_rmse, o_mae = scores(frame.loc["1"], one_step, "p")
        results[method] = {"h1_rmse": o_rmse, "h1_mae": o_mae, "hH_rmse": h_rmse, "hH_mae": h_mae}
    if not any(MANYMODELS_ONLY):
        for key, h in (("1", "h1"), ("H", "hH")):
            for method, won in series_wins(runs, test, key).items():
                results[method][f"wins_{h}"] = won
    for method, bands in BANDS.items():  # prediction intervals at h=H: the median series' coverage per level
        for level in LEVELS:
            covered, pooled, series = coverage(bands, test, level)
            results[method][f"coverage_{level}"] = covered
            results[method][f"coverage_{level}_pooled"] = pooled
            print(f"    {method}: {level}% interval, median coverage {covered:.3f} over {series} series; "
                  f"{pooled:.3f} of every held-out value", flush=True)
    BANDS.clear()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(PANELS))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--manymodels-only", action="store_true", help="skip the anchors (their figures do not "
                        "depend on manymodels' commit): to compare two commits of manymodels")
    parser.add_argument("--candidates", default="", help="keep only these manymodels candidates (comma-separated; "
                        "naive is always measured)")
    parser.add_argument("--rule", choices=["best", "fleet"], default="best",
                        help="manymodels' selection rule: best per series (default), or one for the fleet")
    parser.add_argument("--refit", action="store_true", help="manymodels' refit: true (the chosen model fitted "
                        "again on every step before forecasting)")
    parser.add_argument("--statistical", action="store_true", help="statsforecast's AutoETS and AutoARIMA among "
                        "manymodels' candidates, and an ensemble of them with LightGBM and ridge")
    parser.add_argument("--model-intervals", action="store_true", help="with --statistical: AutoETS and AutoARIMA "
                        "give their own prediction intervals where they win (intervals: model)")
    args = parser.parse_args()
    STATISTICAL.append(args.statistical)
    OWN_INTERVALS.append(args.model_intervals)
    ONLY.extend(n for n in args.candidates.split(",") if n)
    RULE.append(args.rule)
    REFIT.append(args.refit)
    MANYMODELS_ONLY.append(args.manymodels_only)
    everything = {}
    for key in args.datasets.split(","):
        panel = PANELS[key]()
        print(f"{panel.name}: H = {panel.horizon}", flush=True)
        results = run(panel)
        everything[key] = results
        print(f"  {'method':<46} {'h=1 RMSE':>9} {'h=1 MAE':>9} {'h=H RMSE':>9} {'h=H MAE':>9}")
        for method, r in sorted(results.items(), key=lambda kv: kv[1]["hH_rmse"]):
            print(f"  {method:<46} {r['h1_rmse']:>9.3f} {r['h1_mae']:>9.3f} {r['hH_rmse']:>9.3f} {r['hH_mae']:>9.3f}")
        if args.manymodels_only:
            print()
            continue
        ours = results["manymodels (selected per series)"]
        ml = min((r for m, r in results.items() if m.startswith("mlforecast")), key=lambda r: r["hH_rmse"])
        naive = results["statsforecast Naive"]
        verdict = {h: (ours[f"{h}_rmse"] <= ml[f"{h}_rmse"], ours[f"{h}_rmse"] <= naive[f"{h}_rmse"])
                   for h in ("h1", "hH")}
        print(f"  manymodels <= best mlforecast / <= naive (RMSE): h=1 {verdict['h1']}, h=H {verdict['hH']}",
              flush=True)
        # issue 26: the fleet beats the best single anchor and wins at least as many series as any one of them
        anchors = {m: r for m, r in results.items() if m.startswith(ANCHORS)}
        for h in ("h1", "hH"):
            wins = ", ".join(f"{m} {r[f'wins_{h}']}" for m, r in sorted(results.items(), key=lambda kv: -kv[1].get(
                f"wins_{h}", -1)) if f"wins_{h}" in r)
            beats = ours[f"{h}_rmse"] < min(r[f"{h}_rmse"] for r in anchors.values())
            most = ours[f"wins_{h}"] >= max(r[f"wins_{h}"] for r in anchors.values())
            print(f"  {h}: series won (lowest RMSE among manymodels and the anchors): {wins}; manymodels beats "
                  f"the best anchor {beats}, wins as many series as any {most}", flush=True)
        print(flush=True)
    if args.json:
        args.json.write_text(json.dumps(everything, indent=2))


if __name__ == "__main__":
    main()
