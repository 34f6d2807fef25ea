#!/usr/bin/env python3
"""The Spark engine against the seed pattern (same Spark, same data, same cores) and against the local engine.

    python bench/spark_bench.py                    # 200 x 1000 vs seed (plain and --tuned); 2000 x 1000 vs local
    python bench/spark_bench.py --skip-seed        # only Spark vs local
Prints one JSON line. manymodels is timed twice: whole `manymodels train|score -t spark` commands
(interpreter, JVM start and tracking set-up included), and step by step like the seed times
itself (bench/spark_steps.py: session up first, then the train step, then the score step).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

from _common import MANYMODELS, REPO, SHARED_BENCH, last_json, make_data, timed, write_bundle


def spark_bundle(root: Path, data: Path, cores: int) -> Path:
    """The bench bundle with a `spark` target (local[cores]) beside the default local one."""
    shutil.rmtree(root, ignore_errors=True)
    path = write_bundle(root, data)
    doc = yaml.safe_load(path.read_text())
    doc["targets"] = {
        "local": {"default": True, "engine": {"kind": "local", "workers": cores}},
        "spark": {"engine": {"kind": "spark", "master": f"local[{cores}]", "conf": {"spark.ui.enabled": False}}},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def versus_seed(work: Path, segments: int, rows: int, cores: int, tuned: bool) -> dict[str, object]:
    data = make_data(work / f"data-{segments}x{rows}.parquet", segments, rows)
    score = make_data(work / f"score-{segments}x{rows}.parquet", segments, rows // 5, sample=1)
    bundle = spark_bundle(work / f"bundle-spark-{segments}x{rows}", data, cores)
    train_s, _ = timed([str(MANYMODELS), "train", "bench", "-t", "spark"], cwd=bundle.parent)
    score_s, _ = timed(
        [
            str(MANYMODELS),
            "score",
            "bench",
            "-t",
            "spark",
            "--data",
            str(score),
            "--out",
            str(bundle.parent / "scores"),
        ],
        cwd=bundle.parent,
    )
    _, out = timed(
        [
            sys.executable,
            str(REPO / "bench" / "spark_steps.py"),
            str(bundle.parent),
            "--score-data",
            str(score),
            "--cores",
            str(cores),
        ]
    )
    steps = last_json(out)
    seed_work = work / "seed-reference"
    shutil.rmtree(seed_work, ignore_errors=True)
    cmd = [
        sys.executable,
        str(SHARED_BENCH / "seed_reference.py"),
        "--data",
        str(data),
        "--score-data",
        str(score),
        "--workdir",
        str(seed_work),
        "--cores",
        str(cores),
    ] + (["--tuned"] if tuned else [])
    seed_s, out = timed(cmd)
    seed = last_json(out)
    return {
        "segments": segments,
        "rows": rows,
        "cores": cores,
        "seed_tuned": tuned,
        "seed_wall_s": round(seed_s, 2),
        "seed_train_s_inside": seed["train_s"],
        "seed_score_s_inside": seed["score_s"],
        "manymodels_spark_train_wall_s": round(train_s, 2),
        "manymodels_spark_score_wall_s": round(score_s, 2),
        "manymodels_steps": steps,
        "whole_script_vs_whole_commands": round(seed_s / (train_s + score_s), 2),
        "train_speedup_vs_seed_train_step": round(seed["train_s"] / train_s, 1),
        "score_speedup_vs_seed_score_step": round(seed["score_s"] / score_s, 2),
        "train_step_speedup": round(seed["train_s"] / steps["train_s"], 2),
        "score_step_speedup": round(seed["score_s"] / steps["score_s"], 2),
    }


def versus_local(work: Path, segments: int, rows: int, cores: int) -> dict[str, object]:
    data = make_data(work / f"data-{segments}x{rows}.parquet", segments, rows)
    bundle = spark_bundle(work / f"bundle-spark-{segments}x{rows}", data, cores)
    local_s, _ = timed([str(MANYMODELS), "train", "bench", "-t", "local"], cwd=bundle.parent)
    spark_s, _ = timed([str(MANYMODELS), "train", "bench", "-t", "spark"], cwd=bundle.parent)
    return {
        "segments": segments,
        "rows": rows,
        "cores": cores,
        "local_wall_s": round(local_s, 2),
        "spark_wall_s": round(spark_s, 2),
        "spark_over_local": round(spark_s / local_s, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--segments", type=int, default=200)
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--local-segments", type=int, default=2000)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--skip-seed", action="store_true")
    p.add_argument("--skip-untuned", action="store_true", help="compare with the --tuned seed only (much faster)")
    p.add_argument("--work", type=Path, default=REPO / "bench" / "out")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {}
    if not args.skip_seed:
        result["vs_seed_tuned"] = versus_seed(args.work, args.segments, args.rows, args.cores, tuned=True)
        if not args.skip_untuned:
            result["vs_seed"] = versus_seed(args.work, args.segments, args.rows, args.cores, tuned=False)
    result["vs_local"] = versus_local(args.work, args.local_segments, args.rows, args.cores)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
