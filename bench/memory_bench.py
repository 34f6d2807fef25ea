#!/usr/bin/env python3
"""Peak resident memory of `manymodels train` on a large fleet (driver plus its worker processes).

    python bench/memory_bench.py --segments 100000 --rows 100
Prints one JSON line: peak RSS of the driver and of the whole process tree, wall time, segment counts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

from _common import MANYMODELS, REPO, PeakRSS, latest_run_metrics, make_data, write_bundle

GIB = 1024**3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--segments", type=int, default=100_000)
    p.add_argument("--rows", type=int, default=100)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    args = p.parse_args()
    data = make_data(args.work / f"data-{args.segments}x{args.rows}.parquet", args.segments, args.rows)
    bundle = args.work / f"bundle-mem-{args.segments}x{args.rows}"
    shutil.rmtree(bundle, ignore_errors=True)
    write_bundle(bundle, data)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(MANYMODELS), "train", "bench", "--workers", str(args.jobs)],
        cwd=bundle,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with PeakRSS(proc.pid) as peak:
        out, err = proc.communicate()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"train failed ({proc.returncode}):\n{out[-2000:]}\n{err[-2000:]}")
    run = latest_run_metrics(bundle)
    print(
        json.dumps(
            {
                "segments": args.segments,
                "rows": args.rows,
                "jobs": args.jobs,
                "wall_s": round(seconds, 1),
                "peak_rss_tree_gib": round(peak.peak_total / GIB, 2),
                "peak_rss_driver_gib": round(peak.peak_main / GIB, 2),
                "segments_ok": run["metrics"].get("segments_ok"),
                "segments_failed": run["metrics"].get("segments_failed"),
            }
        )
    )


if __name__ == "__main__":
    main()
