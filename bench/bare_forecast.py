#!/usr/bin/env python3
"""The floor of a forecast fleet's training: the same LightGBM fits on the same lag matrix, no framework.

What `manymodels train` does for each series of a forecast model with lags [1, 2, 3, 52], the week of
year and a known price as features, the label differenced once, a 12-step horizon and 3 validation
windows: build the lag matrix, and for each window's origin and for the holdout's, fit LightGBM (100
rounds, one thread) on the steps before it and forecast the 12 steps after it recursively (each
forecast fed back as the next step's lag 1). That is 4 fits and 48 one-row predictions per series,
here with numpy, pandas and LightGBM alone, on a process pool of --jobs workers.

    python bench/bare_forecast.py --data series.parquet --jobs 2
Prints one JSON line (fit_s: the fits and forecasts; load_s: reading and grouping the data).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import lightgbm as lgb
import numpy as np
import pandas as pd
from joblib import Parallel, delayed

LAGS = (1, 2, 3, 52)
HORIZON, WINDOWS = 12, 3


def features(z: np.ndarray, week: np.ndarray, price: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Lags of the differenced label, the target's week of year and price, at positions `at`."""
    cols = [np.where(at - lag >= 0, z[np.maximum(at - lag, 0)], np.nan) for lag in LAGS]
    return np.column_stack([*cols, week[at], price[at]])


def fit_and_forecast(y: np.ndarray, week: np.ndarray, price: np.ndarray, origin: int) -> np.ndarray:
    """Fit on steps up to `origin`, forecast the next HORIZON recursively; back in the label's units."""
    z = np.full(len(y), np.nan)
    z[1:] = np.diff(y)
    at = np.arange(1 + max(LAGS), origin + 1)
    model = lgb.train({"objective": "regression", "verbose": -1, "num_threads": 1},
                      lgb.Dataset(features(z, week, price, at), label=z[at]), num_boost_round=100)
    ahead = z.copy()
    ahead[origin + 1 :] = np.nan
    for step in range(1, HORIZON + 1):
        p = origin + step
        ahead[p] = model.predict(features(ahead, week, price, np.array([p])))[0]
    return y[origin] + np.cumsum(ahead[origin + 1 : origin + 1 + HORIZON])


def fit_series(key: str, y: np.ndarray, week: np.ndarray, price: np.ndarray) -> tuple[str, float]:
    n = len(y)
    holdout = n - HORIZON - 1
    for w in range(WINDOWS):  # the validation windows, before the holdout
        origin = holdout - HORIZON - w * HORIZON
        fit_and_forecast(y, week, price, origin)
    forecast = fit_and_forecast(y, week, price, holdout)
    return key, float(np.sqrt(np.mean((forecast - y[holdout + 1 :]) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    started = time.perf_counter()
    frame = pd.read_parquet(args.data).sort_values(["series", "time"])
    week = frame["time"].dt.isocalendar().week.to_numpy(dtype=np.float64)
    groups = []
    for key, rows in frame.assign(_week=week).groupby("series", sort=False):
        groups.append((key, rows["y"].to_numpy(), rows["_week"].to_numpy(), rows["price"].to_numpy()))
    load = time.perf_counter() - started
    started = time.perf_counter()
    results = Parallel(n_jobs=args.jobs)(delayed(fit_series)(*g) for g in groups)
    fit = time.perf_counter() - started
    rmse = [r for _, r in results]
    print(json.dumps({"series": len(groups), "load_s": round(load, 3), "fit_s": round(fit, 3),
                      "rmse_median": float(np.median(rmse))}))


if __name__ == "__main__":
    main()
