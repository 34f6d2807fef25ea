#!/usr/bin/env python3
"""Forecasting's speed, as ratios measured in the same run (whole commands: interpreter start and imports included).

1. Training a forecast fleet (default 1,000 series x 200 weeks of ../shared/bench/make_series.py: lags 1, 2, 3
   and 52 of the differenced label, the week of year, a known price, 12 weeks ahead, 3 validation windows)
   against the same LightGBM fits and recursive forecasts made bare on the same lag matrix
   (bench/bare_forecast.py), on the same workers: the ratio of the medians of interleaved runs.
2. `manymodels forecast` of 12 steps for every segment of a fleet (default 10,000 series x 60 weeks) against
   `manymodels score` of one row per segment with the same pack (each loads every model once).

    python bench/forecast_speed.py                           # both, 2 repeats
    python bench/forecast_speed.py --train 200x200 --forecast 2000x60 --repeats 1
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from _common import MANYMODELS, REPO, SHARED_BENCH, last_json, timed


def series(out: Path, count: int, steps: int) -> Path:
    """A make_series.py panel (cached: same arguments, same file)."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(SHARED_BENCH / "make_series.py"), "--series", str(count), "--steps",
                        str(steps), "--period", "52", "--freq", "W-MON", "--out", str(out)], check=True,
                       capture_output=True)
    return out


def bundle(root: Path, data: Path, lags: list[int], windows: int, calendar: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    doc = {
        "bundle": {"name": "forecast-speed"},
        "resources": {
            "datasets": {"series": {"format": "parquet", "path": str(data.resolve())}},
            "models": {"fleet": {
                "task": "forecast", "dataset": "series", "segment_by": ["series"], "label": "y", "time": "time",
                "freq": "W-MON", "horizon": 12,
                "features": {"lags": lags, "calendar": calendar, "known": ["price"]},
                "validation": {"windows": windows},
                "candidates": [{"name": "lgbm", "type": "lightgbm", "params": {"num_boost_round": 100}}],
            }},
        },
    }
    (root / "manymodels.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


def training(work: Path, count: int, steps: int, jobs: int, repeats: int) -> dict[str, object]:
    data = series(work / f"series-{count}x{steps}.parquet", count, steps)
    root = work / f"train-{count}x{steps}"
    shutil.rmtree(root, ignore_errors=True)
    bundle(root, data, [1, 2, 3, 52], 3, ["week_of_year"])
    bare_s, ours_s, bare = [], [], {}
    for _ in range(repeats):  # interleaved: both see the same machine
        seconds, out = timed([sys.executable, str(REPO / "bench" / "bare_forecast.py"), "--data", str(data),
                              "--jobs", str(jobs)])
        bare_s.append(seconds)
        bare = last_json(out)
        seconds, _ = timed([str(MANYMODELS), "train", "fleet", "--workers", str(jobs)], cwd=root)
        ours_s.append(seconds)
    import manymodels as mm

    project = mm.load_bundle(root)
    manifest = project.manifest("fleet")
    ok = manifest["status"] == "ok"
    return {
        "series": count, "steps": steps, "jobs": jobs, "repeats": repeats,
        "bare_wall_s": [round(s, 2) for s in bare_s], "manymodels_wall_s": [round(s, 2) for s in ours_s],
        "bare_fit_s_inside": bare.get("fit_s"),
        "time_ratio_median": round(statistics.median(ours_s) / statistics.median(bare_s), 3),
        "segments_ok": int(ok.sum()),
        "rmse_median_manymodels": float(manifest.loc[ok, "rmse"].median()),
        "rmse_median_bare": bare.get("rmse_median"),
        "winners": manifest.loc[ok, "candidate"].value_counts().to_dict(),
    }


def forecasting(work: Path, count: int, steps: int, jobs: int, repeats: int) -> dict[str, object]:
    data = series(work / f"series-{count}x{steps}.parquet", count, steps)
    root = work / f"forecast-{count}x{steps}"
    shutil.rmtree(root, ignore_errors=True)
    bundle(root, data, [1, 2, 3], 1, [])
    train_s, _ = timed([str(MANYMODELS), "train", "fleet", "--workers", str(jobs)], cwd=root)
    frame = pd.read_parquet(data)
    last = frame.groupby("series")["time"].max()
    weeks = pd.DataFrame({"series": last.index.repeat(12),
                          "time": [t + pd.Timedelta(weeks=k) for t in last for k in range(1, 13)]})
    weeks["price"] = 1.0
    weeks.to_parquet(root / "known.parquet", index=False)
    first = weeks.groupby("series").head(1)  # one row per segment: its next week
    first.to_parquet(root / "rows.parquet", index=False)
    forecast_s, score_s = [], []
    for _ in range(repeats):
        seconds, _ = timed([str(MANYMODELS), "forecast", "fleet", "--known", "known.parquet", "--out", "f.parquet",
                            "--workers", str(jobs)], cwd=root)
        forecast_s.append(seconds)
        seconds, _ = timed([str(MANYMODELS), "score", "fleet", "--data", "rows.parquet", "--out", "s.parquet",
                            "--workers", str(jobs)], cwd=root)
        score_s.append(seconds)
    forecasts, scores = pd.read_parquet(root / "f.parquet"), pd.read_parquet(root / "s.parquet")
    same = forecasts[forecasts["step"] == 1].merge(scores, on=["series", "time"], suffixes=("", "_scored"))
    return {
        "series": count, "steps": steps, "jobs": jobs, "repeats": repeats, "train_s": round(train_s, 1),
        "forecast_rows": len(forecasts), "score_rows": len(scores),
        "forecast_12_steps_s": [round(s, 2) for s in forecast_s], "score_one_row_s": [round(s, 2) for s in score_s],
        "ratio_median": round(statistics.median(forecast_s) / statistics.median(score_s), 3),
        "step_1_equal": bool((same["prediction"] - same["prediction_scored"]).abs().max() < 1e-9),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default="1000x200", help="series x steps of the training comparison ('' skips)")
    parser.add_argument("--forecast", default="10000x60", help="series x steps of the forecast comparison ('' skips)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    result: dict[str, object] = {}
    if args.train:
        count, steps = (int(v) for v in args.train.split("x"))
        result["training"] = training(args.work, count, steps, args.jobs, args.repeats)
        print(json.dumps(result["training"]), flush=True)
    if args.forecast:
        count, steps = (int(v) for v in args.forecast.split("x"))
        result["forecast_vs_score"] = forecasting(args.work, count, steps, args.jobs, args.repeats)
        print(json.dumps(result["forecast_vs_score"]), flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
