"""Hierarchical forecasts: each level's accuracy before and after reconciliation, manymodels against the pipeline a
forecasting user writes (statsforecast's AutoETS on every series of every level, reconciled by hierarchicalforecast).

Every series' last H steps are held out. manymodels: a bundle with `hierarchy:` (the levels summed from the rows),
its candidates chosen per series on rolling-origin windows, trained once per `reconcile` method; the run's metrics
give each level's median holdout RMSE of the series' own forecasts and reconciled. The anchor: hierarchicalforecast's
`aggregate`, statsforecast's AutoETS (`fitted=True`, for MinTrace's residuals), then BottomUp, TopDown (forecast
proportions), MinTrace ols and mint_shrink. Printed: per data set, level and method, the median over the level's
series of the holdout RMSE.

Data sets: plotly's gapminder (GDP = population x GDP per head, in billions: 142 countries in 5 continents, every
5 years, H=2), and ../shared/bench/make_series.py (weekly series with a 52-week season in 10 static regions, H=12).

    python bench/hierarchy_bench.py                       # both
    python bench/hierarchy_bench.py --datasets gapminder

Needs the [bench] extra (statsforecast, hierarchicalforecast, plotly).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

SHARED_BENCH = Path(os.environ.get("MANYMODELS_SHARED_BENCH", Path(__file__).resolve().parents[2] / "shared" / "bench"))
METHODS = ("bottom_up", "top_down", "min_trace_ols", "min_trace_shrink")


@dataclass
class Panel:
    name: str
    frame: pd.DataFrame  # the hierarchy's columns (top first), time, y
    levels: list[str]
    time: str
    horizon: int
    freq: Any  # statsforecast's
    season: int
    candidates: list[dict[str, Any]]
    model: dict[str, Any]


def gapminder() -> Panel:
    import plotly.express as px

    df = px.data.gapminder()
    df["y"] = df["pop"] * df["gdpPercap"] / 1e9
    return Panel("gapminder GDP (142 countries in 5 continents, 5-yearly)", df[["continent", "country", "year", "y"]],
                 ["continent", "country"], "year", 2, 5, 1, [
                     {"name": "ets", "type": "statsforecast", "model": "AutoETS"},
                     {"name": "ridge", "type": "sklearn", "entry": "sklearn.linear_model.Ridge"},
                     {"name": "drift", "type": "baseline", "method": "drift"},
                     {"name": "both", "type": "ensemble", "members": ["ets", "drift"]},
                 ], {"features": {"lags": [1, 2]}, "validation": {"windows": 3, "step": 1}})


def series(count: int = 60, steps: int = 160) -> Panel:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "series.parquet"
        subprocess.run([sys.executable, str(SHARED_BENCH / "make_series.py"), "--series", str(count), "--steps",
                        str(steps), "--period", "52", "--out", str(out)], check=True, capture_output=True)
        frame = pd.read_parquet(out)
    frame = frame.rename(columns={"series": "store"})[["region", "store", "time", "y", "price"]]
    return Panel(f"make_series ({count} stores in 10 regions x {steps} weeks, season 52)", frame,
                 ["region", "store"], "time", 12, "W-MON", 52, [
                     {"name": "lgbm", "type": "lightgbm", "params": {"num_boost_round": 100, "min_data_in_leaf": 5}},
                     {"name": "ridge", "type": "sklearn", "entry": "sklearn.linear_model.Ridge"},
                     {"name": "snaive", "type": "baseline", "method": "seasonal_naive", "period": 52},
                 ], {"features": {"lags": [1, 2, 52], "known": ["price"]}, "validation": {"windows": 2}})


def ours(panel: Panel, method: str, root: Path) -> tuple[dict[str, tuple[float, float]], float]:
    """Each level's median holdout RMSE, own and reconciled, from a training run with `reconcile: method`."""
    import manymodels as mm

    panel.frame.to_parquet(root / "rows.parquet", index=False)
    model = {"task": "forecast", "dataset": "rows", "segment_by": panel.levels, "hierarchy": panel.levels,
             "reconcile": method, "label": "y", "time": panel.time, "horizon": panel.horizon,
             "candidates": panel.candidates, **panel.model}
    doc = {"bundle": {"name": "hier"}, "resources": {"datasets": {"rows": {"path": "rows.parquet"}},
                                                     "models": {"m": model}}}
    (root / "manymodels.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    started = time.perf_counter()
    run = mm.load_bundle(root / "manymodels.yml").train("m", workers=2)
    seconds = time.perf_counter() - started
    s = run.summary
    return {level: (s[f"level.{level}.rmse_base"], s[f"level.{level}.rmse_reconciled"])
            for level in ("total", *panel.levels)}, seconds


def theirs(panel: Panel) -> tuple[dict[str, dict[str, float]], float]:
    """Each level's median holdout RMSE: AutoETS alone and reconciled by each hierarchicalforecast method."""
    from hierarchicalforecast.core import HierarchicalReconciliation
    from hierarchicalforecast.methods import BottomUp, MinTrace, TopDown
    from hierarchicalforecast.utils import aggregate
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS

    started = time.perf_counter()
    rows = panel.frame.rename(columns={panel.time: "ds"}).assign(total="total")
    spec = [["total"]] + [["total", *panel.levels[: i + 1]] for i in range(len(panel.levels))]
    y, s, tags = aggregate(rows[["total", *panel.levels, "ds", "y"]], spec)
    cut = np.sort(y["ds"].unique())[-panel.horizon]
    train, test = y[y["ds"] < cut], y[y["ds"] >= cut]
    sf = StatsForecast(models=[AutoETS(season_length=min(panel.season, 24))], freq=panel.freq, n_jobs=2)
    base = sf.forecast(df=train, h=panel.horizon, fitted=True)
    fitted = sf.forecast_fitted_values()
    rec = HierarchicalReconciliation([BottomUp(), TopDown(method="forecast_proportions"), MinTrace(method="ols"),
                                      MinTrace(method="mint_shrink")]).reconcile(
        Y_hat_df=base, Y_df=fitted, S_df=s, tags=tags)
    seconds = time.perf_counter() - started
    joined = rec.merge(test, on=["unique_id", "ds"])
    columns = {"own": "AutoETS", "bottom_up": "AutoETS/BottomUp",
               "top_down": "AutoETS/TopDown_method-forecast_proportions",
               "min_trace_ols": "AutoETS/MinTrace_method-ols",
               "min_trace_shrink": "AutoETS/MinTrace_method-mint_shrink"}
    out: dict[str, dict[str, float]] = {}
    for level, ids in zip(("total", *panel.levels), tags.values(), strict=True):
        part = joined[joined["unique_id"].isin(ids)]
        errors = part.assign(**{k: (part[v] - part["y"]) ** 2 for k, v in columns.items()})
        out[level] = {k: float(np.sqrt(errors.groupby("unique_id")[k].mean()).median()) for k in columns}
    return out, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="gapminder,series")
    args = parser.parse_args()
    makers = {"gapminder": gapminder, "series": series}
    for name in args.datasets.split(","):
        panel = makers[name]()
        print(f"\n## {panel.name}: holdout {panel.horizon} steps, median RMSE over each level's series")
        anchor, anchor_s = theirs(panel)
        mine: dict[str, dict[str, tuple[float, float]]] = {}
        seconds: dict[str, float] = {}
        for method in METHODS:
            with tempfile.TemporaryDirectory() as tmp:
                mine[method], seconds[method] = ours(panel, method, Path(tmp))
        print(f"| level | manymodels own | {' | '.join(f'manymodels {m}' for m in METHODS)} | AutoETS own | "
              f"{' | '.join(f'AutoETS {m}' for m in METHODS)} |")
        print("|" + "---|" * (3 + 2 * len(METHODS)))
        for level in ("total", *panel.levels):
            own = mine[METHODS[0]][level][0]
            cells = [f"{own:.4g}", *[f"{mine[m][level][1]:.4g}" for m in METHODS],
                     f"{anchor[level]['own']:.4g}", *[f"{anchor[level][m]:.4g}" for m in METHODS]]
            print(f"| {level} | " + " | ".join(cells) + " |")
        print(f"wall: manymodels {np.mean(list(seconds.values())):.1f} s per training (selection, MLflow run, pack); "
              f"statsforecast + hierarchicalforecast {anchor_s:.1f} s")


if __name__ == "__main__":
    main()
