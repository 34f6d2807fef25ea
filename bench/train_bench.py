#!/usr/bin/env python3
"""`manymodels train` against the floor (bare_baseline.py) and what users run today (seed_reference.py).

Same data, same machine, same run; results as ratios. Every timing is a whole command's wall
time (interpreter start and imports included) for all three.

    python bench/train_bench.py                       # 1000 x 1000 vs bare; 200 x 1000 vs the seed pattern
    python bench/train_bench.py --skip-seed           # only the bare comparison
Prints one JSON line; writes nothing else but its work folder (--work, default bench/out/).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

from _common import MANYMODELS, REPO, SHARED_BENCH, last_json, latest_run_metrics, make_data, timed, write_bundle


def versus_bare(work: Path, segments: int, rows: int, jobs: int, repeats: int) -> dict[str, object]:
    data = make_data(work / f"data-{segments}x{rows}.parquet", segments, rows)
    bundle = work / f"bundle-{segments}x{rows}"
    shutil.rmtree(bundle, ignore_errors=True)
    write_bundle(bundle, data)
    bare_s, ours_s = [], []
    bare: dict[str, object] = {}
    for _ in range(repeats):  # interleaved, so both see the same machine noise
        seconds, out = timed(
            [sys.executable, str(SHARED_BENCH / "bare_baseline.py"), "--data", str(data), "--jobs", str(jobs)]
        )
        bare_s.append(seconds)
        bare = last_json(out)
        seconds, _ = timed([str(MANYMODELS), "train", "bench", "--workers", str(jobs)], cwd=bundle)
        ours_s.append(seconds)
    ours = latest_run_metrics(bundle)
    rmse_median = float(statistics.median(ours["rmse"]))
    return {
        "segments": segments,
        "rows": rows,
        "jobs": jobs,
        "repeats": repeats,
        "bare_wall_s": [round(s, 2) for s in bare_s],
        "manymodels_wall_s": [round(s, 2) for s in ours_s],
        "bare_fit_s_inside": bare["fit_s"],
        "bare_load_s_inside": bare["load_s"],
        "manymodels_wall_s_inside": ours["metrics"].get("wall_seconds"),
        "time_ratio_median": round(statistics.median(ours_s) / statistics.median(bare_s), 3),
        "time_ratio_best": round(min(ours_s) / min(bare_s), 3),
        "rmse_median_bare": bare["rmse_median"],
        "rmse_median_manymodels": rmse_median,
        "rmse_median_rel_diff": round(abs(rmse_median - float(bare["rmse_median"])) / float(bare["rmse_median"]), 6),
        "segments_ok": ours["metrics"].get("segments_ok"),
    }


def versus_seed(work: Path, segments: int, rows: int, jobs: int, tuned: bool) -> dict[str, object]:
    data = make_data(work / f"data-{segments}x{rows}.parquet", segments, rows)
    bundle = work / f"bundle-seed-{segments}x{rows}"
    shutil.rmtree(bundle, ignore_errors=True)
    write_bundle(bundle, data)
    ours_s, _ = timed([str(MANYMODELS), "train", "bench", "--workers", str(jobs)], cwd=bundle)
    seed_work = work / "seed-reference"
    shutil.rmtree(seed_work, ignore_errors=True)
    cmd = [
        sys.executable,
        str(SHARED_BENCH / "seed_reference.py"),
        "--data",
        str(data),
        "--workdir",
        str(seed_work),
        "--cores",
        str(jobs),
    ] + (["--tuned"] if tuned else [])
    seed_s, out = timed(cmd)
    seed = last_json(out)
    return {
        "segments": segments,
        "rows": rows,
        "jobs": jobs,
        "tuned": tuned,
        "seed_wall_s": round(seed_s, 2),
        "seed_train_s_inside": seed["train_s"],
        "manymodels_wall_s": round(ours_s, 2),
        "speedup_wall": round(seed_s / ours_s, 1),
        "speedup_vs_seed_train_only": round(seed["train_s"] / ours_s, 1),
        "rmse_median_seed": seed["rmse_median"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--segments", type=int, default=1000)
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed-segments", type=int, default=200)
    p.add_argument("--skip-seed", action="store_true")
    p.add_argument("--tuned", action="store_true", help="compare with the seed pattern's --tuned variant too")
    p.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {"vs_bare": versus_bare(args.work, args.segments, args.rows, args.jobs, args.repeats)}
    if not args.skip_seed:
        result["vs_seed"] = versus_seed(args.work, args.seed_segments, args.rows, args.jobs, tuned=False)
        if args.tuned:
            result["vs_seed_tuned"] = versus_seed(args.work, args.seed_segments, args.rows, args.jobs, tuned=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
