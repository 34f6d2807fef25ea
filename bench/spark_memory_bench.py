#!/usr/bin/env python3
"""`evaluate` on Spark keeps the driver flat: its Python process's peak memory as the evaluation rows grow 10x.

For each row count (default 200 segments x 500, then x 5,000 rows per segment): `manymodels train` and
then `manymodels evaluate` (holdout) on a `spark` target (local[2]) and, for contrast, on the local
engine, whose driver reads the evaluation rows itself. Measured: the peak RSS of the command's own
Python process (the driver), and of its whole process tree (the JVM and Python workers of local mode,
or the pool's workers).

    python bench/spark_memory_bench.py
    python bench/spark_memory_bench.py --segments 200 --rows 500 --factor 10
Prints one JSON line per (engine, rows).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from _common import MANYMODELS, REPO, PeakRSS, make_data, timed, write_bundle

MIB = 1024**2


def bundle(root: Path, data: Path) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    path = write_bundle(root, data)
    doc = yaml.safe_load(path.read_text())
    doc["targets"] = {
        "local": {"default": True, "engine": {"kind": "local", "workers": 2}},
        "spark": {"engine": {"kind": "spark", "master": "local[2]", "conf": {"spark.ui.enabled": False}}},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def measured(cmd: list[str], cwd: Path) -> tuple[float, PeakRSS]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # noqa: S603
    with PeakRSS(proc.pid, every=0.1) as peak:
        out, err = proc.communicate()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-2000:]}\n{err[-2000:]}")
    return time.perf_counter() - start, peak


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--segments", type=int, default=200)
    p.add_argument("--rows", type=int, default=500)
    p.add_argument("--factor", type=int, default=10)
    p.add_argument("--work", type=Path, default=REPO / "bench" / "out" / "spark-memory")
    args = p.parse_args()
    for rows in (args.rows, args.rows * args.factor):
        data = make_data(args.work / f"data-{args.segments}x{rows}.parquet", args.segments, rows)
        root = args.work / f"bundle-{args.segments}x{rows}"
        bundle(root, data)
        for target in ("spark", "local"):
            timed([str(MANYMODELS), "train", "bench", "-t", target], cwd=root)
            seconds, peak = measured([str(MANYMODELS), "evaluate", "bench", "-t", target, "--limit", "0"], root)
            print(json.dumps({
                "engine": target,
                "segments": args.segments,
                "rows_per_segment": rows,
                "evaluation_rows": int(args.segments * rows * 0.2),
                "evaluate_s": round(seconds, 1),
                "driver_peak_mib": round(peak.peak_main / MIB),
                "tree_peak_mib": round(peak.peak_total / MIB),
            }), flush=True)


if __name__ == "__main__":
    main()
