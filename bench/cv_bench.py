#!/usr/bin/env python3
"""Cross-validation and tuning in `manymodels train` against the floor, ../shared/bench/bare_cv.py.

Same machine, same run, interleaved; whole commands' wall time (interpreter start and imports
included) for both. The floor cross-validates every row of a segment; manymodels keeps a 20 %
holdout out of selection, so it is given 1.25x the rows per segment: both cross-validate the same
number of rows per segment (the floor's --rows), with the same folds and trials. manymodels
additionally fits nothing more (the refit of the winner is in both) but predicts its holdout.

    python bench/cv_bench.py --segments 1000 --rows 1000 --folds 5 --trials 1      # the issue's 1.2x case
    python bench/cv_bench.py --segments 200 --rows 1000 --folds 3 --trials 20      # the issue's 1.3x case
    python bench/cv_bench.py --spark --segments 2000 --rows 200 --folds 5            # Spark local[2] vs local
Prints one JSON line; writes only its work folder (--work).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

import yaml

from _common import MANYMODELS, SHARED_BENCH, last_json, latest_run_metrics, make_data, timed, write_bundle

# bare_cv.py's random search: the same space (its trial 0 is LightGBM's defaults; ours are all drawn).
SPACE = {
    "num_leaves": {"int": [4, 64]},
    "learning_rate": {"float": [0.02, 0.3], "log": True},
    "min_data_in_leaf": {"int": [2, 40]},
}


def selecting_bundle(root: Path, data: Path, folds: int, trials: int, sampler: str) -> None:
    write_bundle(root, data)
    path = root / "manymodels.yml"
    doc = yaml.safe_load(path.read_text())
    model = doc["resources"]["models"]["bench"]
    model["validation"] = {"kind": "kfold", "folds": folds, "seed": 42}
    if trials > 1:
        model["tuning"] = {"lightgbm": {"space": SPACE, "trials": trials, "sampler": sampler}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def spark_versus_local(work: Path, args: argparse.Namespace) -> dict[str, object]:
    """The same selecting bundle trained on the local engine and on Spark local[jobs]: whole commands, same run."""
    rows = round(args.rows / 0.8)
    data = make_data(work / f"ours-{args.segments}x{rows}.parquet", args.segments, rows)
    times: dict[str, list[float]] = {"local": [], "spark": []}
    manifests = {}
    for kind in ("local", "spark"):
        bundle = work / f"engine-{kind}-{args.segments}x{rows}"
        shutil.rmtree(bundle, ignore_errors=True)
        selecting_bundle(bundle, data, args.folds, args.trials, args.sampler)
        if kind == "spark":
            doc = yaml.safe_load((bundle / "manymodels.yml").read_text())
            doc["targets"] = {"dev": {"default": True, "engine": {"kind": "spark", "master": f"local[{args.jobs}]"}}}
            (bundle / "manymodels.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    for _ in range(args.repeats):
        for kind in ("local", "spark"):
            bundle = work / f"engine-{kind}-{args.segments}x{rows}"
            seconds, _ = timed([str(MANYMODELS), "train", "bench", "--workers", str(args.jobs)], cwd=bundle)
            times[kind].append(seconds)
    import manymodels as mm

    for kind in ("local", "spark"):
        bundle = work / f"engine-{kind}-{args.segments}x{rows}"
        run = latest_run_metrics(bundle)
        manifests[kind] = mm.load_bundle(bundle).manifest("bench", str(run["run_id"])).set_index("segment")
    same = bool((manifests["local"]["candidate"] == manifests["spark"]["candidate"]).all()) and bool(
        ((manifests["local"]["cv_mean"] - manifests["spark"]["cv_mean"]).abs() < 1e-9).all()
    )
    return {
        "segments": args.segments, "cv_rows": args.rows, "folds": args.folds, "trials": args.trials, "jobs": args.jobs,
        "local_s": [round(s, 1) for s in times["local"]], "spark_s": [round(s, 1) for s in times["spark"]],
        "spark_vs_local": round(statistics.median(times["spark"]) / statistics.median(times["local"]), 3),
        "same_cv_means": same,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--segments", type=int, default=1000)
    p.add_argument("--rows", type=int, default=1000, help="rows cross-validated per segment (the floor's)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--trials", type=int, default=1)
    p.add_argument("--sampler", default="random", choices=["random", "tpe"])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--spark", action="store_true", help="time Spark local[N] against the local engine instead")
    p.add_argument("--work", type=Path, default=Path(__file__).with_name("out") / "cv")
    args = p.parse_args()
    work = args.work.resolve()
    if args.spark:
        print(json.dumps(spark_versus_local(work, args)))
        return
    bare_data = make_data(work / f"bare-{args.segments}x{args.rows}.parquet", args.segments, args.rows)
    ours_rows = round(args.rows / 0.8)
    ours_data = make_data(work / f"ours-{args.segments}x{ours_rows}.parquet", args.segments, ours_rows)
    bundle = work / f"bundle-{args.segments}x{ours_rows}-{args.folds}x{args.trials}-{args.sampler}"
    shutil.rmtree(bundle, ignore_errors=True)
    selecting_bundle(bundle, ours_data, args.folds, args.trials, args.sampler)
    bare_s, ours_s = [], []
    bare: dict[str, object] = {}
    for _ in range(args.repeats):
        seconds, out = timed([sys.executable, str(SHARED_BENCH / "bare_cv.py"), "--data", str(bare_data),
                              "--folds", str(args.folds), "--trials", str(args.trials), "--jobs", str(args.jobs)])
        bare_s.append(seconds)
        bare = last_json(out)
        seconds, _ = timed([str(MANYMODELS), "train", "bench", "--workers", str(args.jobs)], cwd=bundle)
        ours_s.append(seconds)
    ours = latest_run_metrics(bundle)
    import manymodels as mm

    manifest = mm.load_bundle(bundle).manifest("bench", str(ours["run_id"]))
    ok = manifest[manifest["status"] == "ok"]
    report = {
        "segments": args.segments, "cv_rows": args.rows, "folds": args.folds, "trials": args.trials,
        "sampler": args.sampler, "jobs": args.jobs,
        "bare_s": [round(s, 1) for s in bare_s], "manymodels_s": [round(s, 1) for s in ours_s],
        "ratio_median": round(statistics.median(ours_s) / statistics.median(bare_s), 3),
        "bare_cv_s": bare.get("cv_s"), "manymodels_wall_inside_s": ours["metrics"].get("wall_seconds"),
        "bare_cv_rmse_median": bare.get("cv_rmse_median"),
        "manymodels_cv_rmse_median": float(ok["cv_mean"].median()),
        "manymodels_holdout_rmse_median": float(ok["rmse"].median()),
        "segments_ok": int(len(ok)),
    }
    report["cv_rmse_vs_bare"] = round(report["manymodels_cv_rmse_median"] / float(bare["cv_rmse_median"]), 4)  # type: ignore[arg-type]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
