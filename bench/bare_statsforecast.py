#!/usr/bin/env python3
"""The floor for statistical candidates: statsforecast's own rolling-origin fits of one model, no framework.

`StatsForecast(models=[<model>], n_jobs=jobs).cross_validation(h, n_windows, step_size=h, refit=True)` on a
make_series.py panel: each series fitted once per window, as manymodels' selection fits it on its validation
windows and its holdout (windows + 1 fits). Needs the [bench] extra (statsforecast).

    python bench/bare_statsforecast.py --data series.parquet --model AutoETS --season 52 --windows 4 --jobs 2
Prints one JSON line: fit_s (the cross-validation call), series, rmse_median of the last window.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("NIXTLA_ID_AS_COL", "1")
warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default="AutoETS")
    parser.add_argument("--season", type=int, default=52)
    parser.add_argument("--horizon", type=int, default=12)
    parser.add_argument("--windows", type=int, default=4, help="fits per series (manymodels: windows + holdout)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    from statsforecast import StatsForecast, models

    frame = pd.read_parquet(args.data)
    long = frame.rename(columns={"series": "unique_id", "time": "ds"})[["unique_id", "ds", "y"]]
    model = getattr(models, args.model)(season_length=args.season)
    started = time.perf_counter()
    found = StatsForecast(models=[model], freq="W-MON", n_jobs=args.jobs).cross_validation(
        df=long, h=args.horizon, n_windows=args.windows, step_size=args.horizon, refit=True)
    fit_s = time.perf_counter() - started
    last = found[found["cutoff"] == found["cutoff"].max()]
    error = (last[args.model] - last["y"]) ** 2
    rmse = error.groupby(last["unique_id"]).mean() ** 0.5
    print(json.dumps({"fit_s": round(fit_s, 3), "series": int(long["unique_id"].nunique()),
                      "fits": int(long["unique_id"].nunique()) * args.windows,
                      "rmse_median": float(np.median(rmse))}))


if __name__ == "__main__":
    main()
