#!/usr/bin/env python3
"""Statistical candidates' speed: `manymodels train` of a fleet whose candidate is one statsforecast model against
statsforecast's own rolling-origin fits of it on the same series and cores (bench/bare_statsforecast.py), whole
commands, interleaved; the ratio of the medians (issue 26's target: 1.2).

The same fits on both sides: manymodels fits each series once per validation window (`windows`) and once on the
steps before its holdout; statsforecast's `cross_validation(n_windows=windows + 1, refit=True)` fits it as many
times. manymodels also measures `naive` (always a candidate), keeps each model in its pack (skops) and logs the run.

    python bench/statsforecast_speed.py                                  # 300 series x 200 weeks, AutoETS
    python bench/statsforecast_speed.py --series 300x200 --model AutoTheta --repeats 3
Needs the [bench] extra (statsforecast). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

import yaml
from forecast_speed import series

from _common import MANYMODELS, REPO, last_json, timed


def bundle(root: Path, data: Path, model: str, season: int, windows: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    doc = {
        "bundle": {"name": "statsforecast-speed"},
        "resources": {
            "datasets": {"series": {"format": "parquet", "path": str(data.resolve())}},
            "models": {"fleet": {
                "task": "forecast", "dataset": "series", "segment_by": ["series"], "label": "y", "time": "time",
                "freq": "W-MON", "horizon": 12, "validation": {"windows": windows},
                "candidates": [{"name": "stat", "type": "statsforecast", "model": model,
                                "params": {"season_length": season}}],
            }},
        },
    }
    (root / "manymodels.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", default="300x200", help="series x steps of make_series.py")
    parser.add_argument("--model", default="AutoETS")
    parser.add_argument("--season", type=int, default=52)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    count, steps = (int(v) for v in args.series.split("x"))
    data = series(args.work / f"series-{count}x{steps}.parquet", count, steps)
    root = args.work / f"statsforecast-{args.model}-{count}x{steps}"
    shutil.rmtree(root, ignore_errors=True)
    bundle(root, data, args.model, args.season, args.windows)
    bare_s, ours_s, bare = [], [], {}
    for _ in range(args.repeats):  # interleaved: both see the same machine
        seconds, out = timed([sys.executable, str(REPO / "bench" / "bare_statsforecast.py"), "--data", str(data),
                              "--model", args.model, "--season", str(args.season), "--windows",
                              str(args.windows + 1), "--jobs", str(args.jobs)])
        bare_s.append(seconds)
        bare = last_json(out)
        seconds, _ = timed([str(MANYMODELS), "train", "fleet", "--workers", str(args.jobs)], cwd=root)
        ours_s.append(seconds)
    import manymodels as mm

    manifest = mm.load_bundle(root).manifest("fleet")
    ok = manifest["status"] == "ok"
    print(json.dumps({
        "series": count, "steps": steps, "model": args.model, "season": args.season, "windows": args.windows,
        "jobs": args.jobs, "bare_wall_s": [round(s, 2) for s in bare_s],
        "manymodels_wall_s": [round(s, 2) for s in ours_s], "bare_fit_s_inside": bare.get("fit_s"),
        "time_ratio_median": round(statistics.median(ours_s) / statistics.median(bare_s), 3),
        "segments_ok": int(ok.sum()), "winners": manifest.loc[ok, "candidate"].value_counts().to_dict(),
    }))


if __name__ == "__main__":
    main()
