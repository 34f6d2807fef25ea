#!/usr/bin/env python3
"""Peak resident memory of `manymodels train`, `score` and `evaluate` on a large fleet (driver plus workers).

    python bench/memory_bench.py --segments 100000 --rows 100                       # train only
    python bench/memory_bench.py --segments 100000 --rows 100 --steps train,score,evaluate
    python bench/memory_bench.py --segments 100000 --rows 100 --folds 5             # train with 5-fold CV
Prints one JSON line per step: peak RSS of the driver and of the whole process tree, wall time; for
training, segment counts. `score` scores fresh rows of every segment (`make_data.py --sample 1`),
`evaluate` the training run on its holdout (no champion: one pack scored).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from _common import MANYMODELS, REPO, PeakRSS, latest_run_metrics, make_data, write_bundle

GIB = 1024**3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--segments", type=int, default=100_000)
    p.add_argument("--rows", type=int, default=100)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    p.add_argument("--steps", default="train", help="comma-separated: train, score, evaluate (in that order)")
    p.add_argument("--folds", type=int, default=0, help="with N: the model cross-validates (validation kfold, N folds)")
    args = p.parse_args()
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    data = make_data(args.work / f"data-{args.segments}x{args.rows}.parquet", args.segments, args.rows)
    bundle = args.work / (f"bundle-mem-{args.segments}x{args.rows}" + (f"-cv{args.folds}" if args.folds else ""))
    if "train" in steps:
        shutil.rmtree(bundle, ignore_errors=True)
        write_bundle(bundle, data)
        if args.folds:
            doc = yaml.safe_load((bundle / "manymodels.yml").read_text())
            doc["resources"]["models"]["bench"]["validation"] = {"kind": "kfold", "folds": args.folds}
            (bundle / "manymodels.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    commands = {
        "train": ["train", "bench", "--workers", str(args.jobs)],
        "score": ["score", "bench", "--out", str(args.work / "mem-scores.parquet"), "--data",
                  str(make_data(args.work / f"fresh-{args.segments}x{args.rows}.parquet", args.segments, args.rows,
                                sample=1)) if "score" in steps else ""],
        "evaluate": ["evaluate", "bench", "--limit", "0"],
    }
    for step in steps:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [str(MANYMODELS), *commands[step]], cwd=bundle, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        with PeakRSS(proc.pid) as peak:
            out, err = proc.communicate()
        seconds = time.perf_counter() - start
        if proc.returncode not in (0, 1) or (step != "evaluate" and proc.returncode):
            raise SystemExit(f"{step} failed ({proc.returncode}):\n{out[-2000:]}\n{err[-2000:]}")
        line: dict[str, object] = {
            "step": step,
            "segments": args.segments,
            "rows": args.rows,
            "jobs": args.jobs,
            "wall_s": round(seconds, 1),
            "peak_rss_tree_gib": round(peak.peak_total / GIB, 2),
            "peak_rss_driver_gib": round(peak.peak_main / GIB, 2),
        }
        if step == "train":
            run = latest_run_metrics(bundle)
            line["segments_ok"] = run["metrics"].get("segments_ok")
            line["segments_failed"] = run["metrics"].get("segments_failed")
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
